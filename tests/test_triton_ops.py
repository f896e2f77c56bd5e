"""The ``torch.library.triton_op`` pair that CUDA machines use, run on CPU tensors.

On a machine with CUDA, ``backend="triton"`` goes through ``fastseg::fused_sums_triton`` /
``fused_grad_triton`` (their launchers call the kernels through ``wrap_triton``, so
torch.compile traces into them); without CUDA they are not registered and the opaque
``custom_op`` pair runs the same kernels. This test re-runs the Triton tests of the fused losses
in a subprocess that registers the ``triton_op`` pair first (``FASTSEG_TEST_TRITON_OPS=1``, see
conftest.py): the interpreter then launches the kernels eagerly on CPU tensors, so the ops'
schemas, autograd registration and argument plumbing are checked against the reference before
any GPU runs them. Tracing them with torch.compile needs real kernels: test_triton_trace.py
traces them on CPU tensors up to the launch (graphs captured, not run), and
``test_cuda_torch_compile_fullgraph_traces_the_triton_ops`` runs them on a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

# The Triton tests of the fused losses: every catalog loss, soft labels, ignore, weights,
# reduction="none", fp16/bf16, determinism, double backward, and the distance and combined losses.
SELECTION = ["test_functional_triton.py", "test_functional_distance.py", "test_combined.py"]


def _wrap_triton_takes_interpreted_kernels() -> bool:
    """torch 2.13's ``wrap_triton`` launches interpreter kernels eagerly; torch 2.11's (the GPU
    image's) accepts only ``JITFunction``s, so there the pair can run on real kernels only."""
    if not hasattr(torch.library, "wrap_triton") or os.environ.get("TRITON_INTERPRET") != "1":
        return False
    from fastseg.kernels import fused_loss

    try:
        torch.library.wrap_triton(fused_loss._reduce_partials_kernel)
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the main run already goes through the triton_op pair")
@pytest.mark.skipif(not _wrap_triton_takes_interpreted_kernels(),
                    reason="this torch's wrap_triton takes no interpreter kernels (torch 2.11): the pair runs on a GPU only")
def test_fused_losses_through_the_triton_op_pair_match_the_reference():
    env = dict(os.environ, FASTSEG_TEST_TRITON_OPS="1", TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton", *SELECTION]
    done = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"re-run through the triton_op pair failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 80, f"too few tests ran through the triton_op pair: {summary!r}"
