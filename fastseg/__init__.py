"""fastseg: fast, trustworthy losses for crack and thin-structure segmentation.

- :mod:`fastseg.functional`, :mod:`fastseg.losses`: every loss of the catalog, fused (Triton
  kernels on CUDA, a chunked torch path on CPU), as functions and ``nn.Module`` classes; weighted
  sums of the modules (``0.5 * FocalLoss() + DiceLoss()``) share fused passes.
- :mod:`fastseg.reference`: the same losses as plain PyTorch (the oracle they are tested against).
- :mod:`fastseg.metrics`, :mod:`fastseg.guidance`: confusion metrics, ODS/OIS, OII and its search.
- :mod:`fastseg.edt`: exact batched Euclidean distance transforms on the tensor's device.
- :mod:`fastseg.distributed`: ``scope="global"`` statistics across DDP ranks.
- :mod:`fastseg.data`: CrackForest loader and synthetic crack batches.

``python -m fastseg bench | validate | kernels`` are the command-line entry points.
:func:`set_value_checks` turns off the fused losses' data-reading input checks (a host
synchronisation per call on CUDA) once the data pipeline is known to be right.
:class:`ShapeWarning` flags a 3-D ``[B, C, L]`` input with C > 1, which is how a ``[B, H, W]``
batch of images without its channel axis reads.
"""

from ._checks import ShapeWarning, set_value_checks

__all__ = ["ShapeWarning", "set_value_checks"]
__version__ = "0.1.0"
