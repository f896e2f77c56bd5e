"""Test configuration: Triton kernels run on CPU tensors through the interpreter.

``TRITON_INTERPRET`` must be set before triton decorates any kernel, so it is set here, before
anything imports fastseg. On a machine with CUDA the real kernels run instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
