"""Preprocessing of §3.1: registration (estimating the alignment), alignment (applying it)
and gradient (removing the x intensity gradient)."""
