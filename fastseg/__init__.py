"""fastseg: fast, trustworthy losses for crack and thin-structure segmentation.

- :mod:`fastseg.reference`: every loss of the catalog as plain PyTorch (the oracle).
- :mod:`fastseg.metrics`, :mod:`fastseg.guidance`: confusion metrics, ODS/OIS, OII and its search.
- :mod:`fastseg.data`: CrackForest loader and synthetic crack batches.
"""

__version__ = "0.1.0"
