"""fibseg: CNN segmentation of FIB-SEM volumes into pore (0) and solid (1)."""

__version__ = "0.1.0"
