"""torch.compile traces into the Triton kernels: each writes only its output; a hyperparameter schedule is two graphs.

On CUDA, ``torch.compile`` decomposes the ``triton_op`` pair into its kernel launches and
analyses each kernel's TTIR for the arguments it writes. Whatever it takes for written becomes
an output of the functional graph: the input is copied before every launch (the logits, the
targets, every map: more traffic than the loss itself) and, for a bool target viewed as bytes or
a broadcast map, tracing fails. ``trace_triton_ops.py`` runs that tracing on CPU tensors in a
subprocess (real kernels, no interpreter, Triton's driver replaced by one naming sm_90, graphs
captured and never run) over the kernel variants: bool/uint8/soft targets, ignore masks,
weights, atomics, ``reduction="none"``, distance maps given and computed, several tiles per image,
fp16 and fp64 logits, and one fused pass of a sum that reads 16 of the 19 quantities (not
``d (p-t)^2``, hausdorff_dt's, ``(1-p)(1-t)``, Unified Focal's, nor ``p``, which no loss sums since
Dice reads FP and FN).
The expectation is the kernels' design, written in their docstrings: the forward kernel writes
only its partial sums, the reduction only the sums, the backward kernel only the gradient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent / "trace_triton_ops.py"

DESIGNED_WRITES = {
    "_fused_loss_forward_kernel": ["out_ptr"],
    "_reduce_partials_kernel": ["out_ptr"],
    "_fused_loss_backward_kernel": ["grad_ptr"],
}


def _analysis_available() -> bool:
    try:
        from torch._higher_order_ops import triton_kernel_wrap
    except ImportError:
        return False
    analysis = ("identify_accessed_tensors", "identify_mutated_tensors")
    return any(hasattr(triton_kernel_wrap, name) for name in analysis) and hasattr(torch.library, "triton_op")


@pytest.fixture(scope="module")
def trace_report() -> dict:
    if not _analysis_available():
        pytest.skip("this torch has no triton_op / kernel analysis to trace into")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_torch_compile_traces_the_kernels_and_finds_only_their_outputs_written(trace_report):
    report = trace_report["cases"]
    assert len(report) == 9
    for case, result in report.items():
        assert result["error"] is None, f"{case}: tracing failed: {result['error']}"
        kernels = {name for name, _ in result["writes"]}
        assert {"_fused_loss_forward_kernel", "_fused_loss_backward_kernel"} <= kernels, f"{case}: traced {kernels}"
        for name, written in result["writes"]:
            assert written == DESIGNED_WRITES[name], f"{case}: {name} taken to write {written}"
    several_tiles = [case for case, r in report.items() if any(n == "_reduce_partials_kernel" for n, _ in r["writes"])]
    assert len(several_tiles) >= 6, several_tiles


def test_a_hyperparameter_schedule_through_the_kernels_compiles_two_graphs_not_one_per_value(trace_report):
    """A margin schedule, an alpha search, a focal exponent sweep: a new float each call. Dynamo
    specializes the first value and makes the float symbolic from the second; the kernels read the
    values from a float64 array that the graph computes from it, so every later value reuses the
    second graph (with the values as scalar kernel arguments, each value was a graph constant: one
    graph per value, and eager code past Dynamo's recompile limit of 8). In the second graph each
    launch's ``params_ptr`` must come from the hyperparameter input, not a constant. (hausdorff_dt's
    alpha, an exponent of the distance maps, is applied in the graph, outside the kernels.)"""
    schedules = trace_report["schedules"]
    assert len(schedules) == 4
    for name, result in schedules.items():
        assert result["errors"] == [], f"{name}: {result['errors']}"
        assert result["graphs"] == 2, f"{name}: {result['graphs']} graphs for {result['values']} values"
        if result["read_by_kernels"]:
            assert result["params_from_input"] == [False, True], f"{name}: {result['params_from_input']}"
    assert sum(r["read_by_kernels"] for r in schedules.values()) == 3
