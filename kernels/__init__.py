"""Triton kernels of fastseg and their launchers (installed as ``fastseg.kernels``).

Each module holds, in this order: the ``@triton.jit`` kernels, then the plain-Python launchers
that check shapes, allocate outputs and launch. Nothing else lives here.
"""
