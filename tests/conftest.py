"""Test configuration: Triton kernels run on CPU tensors through the interpreter.

``TRITON_INTERPRET`` must be set before triton decorates any kernel, so it is set here, before
anything imports fastseg. On a machine with CUDA the real kernels run instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


def _index_one_element_arrays() -> None:
    """Triton 3.6's interpreter (the GPU image's release) turns a scalar kernel argument used as a
    loop bound into an int with ``int(array)`` on a one-element array, which NumPy 2.4 refuses;
    Triton 3.9 squeezes the array first. Do the same on older releases, so the suite also runs
    under the GPU image's torch and Triton on a CPU (how their incompatibilities are found)."""
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "squeezes_index", False):
        return

    def patch_and_squeeze(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_and_squeeze.squeezes_index = True
    interpreter._patch_lang_tensor = patch_and_squeeze


if os.environ.get("TRITON_INTERPRET") == "1":
    _index_one_element_arrays()

# tests/test_triton_ops.py re-runs the Triton tests in a subprocess with this set: backend="triton"
# then goes through the torch.library.triton_op pair that CUDA machines use, launched eagerly on
# CPU tensors by the interpreter.
if os.environ.get("FASTSEG_TEST_TRITON_OPS") == "1":
    from fastseg.engine.function import register_triton_ops

    register_triton_ops()

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
requires_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
requires_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels on CPU tensors need TRITON_INTERPRET=1 (set above when there is no CUDA)",
)
#: Where a Triton test runs its kernels: the GPU when there is one, else CPU tensors under the interpreter.
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class OpNames(TorchDispatchMode):
    """The names of the ops dispatched while active (``seen.names``), each run as it is."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
