"""Test configuration: Triton kernels run on CPU tensors through the interpreter.

``TRITON_INTERPRET`` must be set before triton decorates any kernel, so it is set here, before
anything imports fastseg. On a machine with CUDA the real kernels run instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# tests/test_triton_ops.py re-runs the Triton tests in a subprocess with this set: backend="triton"
# then goes through the torch.library.triton_op pair that CUDA machines use, launched eagerly on
# CPU tensors by the interpreter.
if os.environ.get("FASTSEG_TEST_TRITON_OPS") == "1":
    from fastseg.engine.function import register_triton_ops

    register_triton_ops()

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels on CPU tensors need TRITON_INTERPRET=1 (set above when there is no CUDA)",
)
#: Where a Triton test runs its kernels: the GPU when there is one, else CPU tensors under the interpreter.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
