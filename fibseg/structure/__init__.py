"""Pore-structure analysis of a segmentation in nm: the analysis grid (grid), sizes and
surface (sizes), connectivity and tortuosity (transport), and the whole analysis and its
table (analysis)."""
