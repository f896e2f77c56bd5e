"""Trace torch.compile into the ``triton_op`` pair on CPU tensors, as a CUDA machine would.

Run by tests/test_triton_trace.py in its own process: the kernels must be real ``JITFunction``s
(no ``TRITON_INTERPRET``), and Triton's driver is replaced by one that names an sm_90 target, so
that torch's analysis of each kernel (which arguments it writes: those become outputs of the
functional graph, and everything else must be left alone) runs on the same TTIR as on an H100.
The compiled graphs are captured, never run (there is no GPU to launch the kernels on).

Prints one JSON object: ``cases``, for every case the pointers the analysis found written, per
kernel, and the error, if tracing failed; ``schedules``, for every hyperparameter schedule (a new
value each call), the number of forward graphs compiled.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch._functorch.partitioners import min_cut_rematerialization_partition  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

import torch._higher_order_ops.triton_kernel_wrap as kernel_wrap  # noqa: E402

import fastseg.functional as FS  # noqa: E402
import fastseg.losses as L  # noqa: E402
from fastseg.engine import function  # noqa: E402


class SM90Driver:
    """What torch's kernel analysis asks Triton's driver: the target to lower the kernel for."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cuda")

    def get_current_device(self):
        return 0


triton.runtime.driver.set_active(SM90Driver())
function._triton_module = lambda on_cpu: importlib.import_module("fastseg.kernels.fused_loss")
function.register_triton_ops()

writes: list = []
# The analysis: identify_accessed_tensors (torch 2.13), identify_mutated_tensors in older releases
# (torch 2.11, the GPU image's), which returns the written names only.
ANALYSIS = "identify_accessed_tensors" if hasattr(kernel_wrap, "identify_accessed_tensors") else "identify_mutated_tensors"
_identify = getattr(kernel_wrap, ANALYSIS)


def recording_identify(kernel, kwargs, tma_descriptor_metadata):
    result = _identify(kernel, kwargs, tma_descriptor_metadata)
    written = result if isinstance(result, list) else [dep.name for dep in result.read_writes.writes]
    writes.append([kernel.fn.__name__, sorted(written)])
    return result


setattr(kernel_wrap, ANALYSIS, recording_identify)


class Traced(Exception):
    """Raised by the captured graph instead of launching kernels."""


def capture(gm, example_inputs):
    def run(*args):
        raise Traced()

    return run


BACKEND = aot_autograd(fw_compiler=capture, bw_compiler=capture, partition_fn=min_cut_rematerialization_partition)

# every quantity but D_SQERR (hausdorff_dt's, traced on its own): EL, sensitivity-specificity, p^2,
# DIBE, margin focal, FP and the distance-weighted FP, in one pass
EVERY = (L.ELCrossEntropyLoss(backend="triton") + L.SensitivitySpecificityLoss(backend="triton")
         + L.SquaredDiceLoss(backend="triton") + L.DIBELoss(backend="triton")
         + L.HybridFocalMarginDistanceLoss(backend="triton"))
g = torch.Generator().manual_seed(0)
Z = torch.randn(2, 1, 64, 72, generator=g)  # several tiles per image: the partial sums are reduced
T = torch.rand(2, 1, 64, 72, generator=g) < 0.2
D = torch.rand(2, 1, 64, 72, generator=g)
CASES = {
    "hybrid_focal_margin, bool target": lambda z: FS.hybrid_focal_margin(z, T, backend="triton"),
    "dice, uint8 target, ignore mask": lambda z: FS.dice(z, T.to(torch.uint8), ignore=T & (z > 2), backend="triton"),
    "weighted focal, soft target": lambda z: FS.focal(z, T.float() * 0.9, weight=z.detach().abs(), backend="triton"),
    "dibe, deterministic=False": lambda z: FS.dibe(z, T, backend="triton", deterministic=False),
    "focal, reduction='none'": lambda z: FS.focal(z, T, reduction="none", backend="triton").sum(),
    "distance_loss, map given": lambda z: FS.distance_loss(z, T, distance=D, backend="triton"),
    "hausdorff_dt, maps computed": lambda z: FS.hausdorff_dt(z, T, backend="triton"),
    "a sum reading 16 of the 19 quantities, fp16 logits": lambda z: EVERY(z.half(), T),
    "unified_focal, fp64 logits": lambda z: FS.unified_focal(z.double(), T, backend="triton"),
}

# hyperparameter schedules: a new value each call, as a margin schedule or the OII alpha search
SCHEDULES = {  # name: (loss, values, whether the kernels read the value)
    "hybrid_focal_margin m": (lambda z, v: FS.hybrid_focal_margin(z, T, m=v, backend="triton"), (0.5, 0.9, 1.3, 0.7, 1.1),
                              True),
    "dibe alpha": (lambda z, v: FS.dibe(z, T, alpha=v, backend="triton"), (0.3, 0.45, 0.6, 0.2, 0.5), True),
    "focal gamma": (lambda z, v: FS.focal(z, T, gamma=v, backend="triton"), (2.5, 1.5, 0.5, 3.5), True),
    "hausdorff_dt alpha, an exponent of the distance maps": (
        lambda z, v: FS.hausdorff_dt(z, T, alpha=v, backend="triton"), (2.0, 2.5, 3.0, 1.5), False),
}


def trace(compiled, *args) -> str | None:
    """Run ``compiled`` up to the captured graph; the error, if tracing failed."""
    try:
        compiled(Z.clone().requires_grad_(), *args)
    except Traced:
        return None
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {' '.join(str(err).strip().splitlines()[:2])}"
    return "the captured graph was not called"


report = {}
for name, loss in CASES.items():
    writes.clear()
    torch._dynamo.reset()
    error = trace(torch.compile(loss, backend=BACKEND, fullgraph=True))
    report[name] = {"writes": [list(w) for w in writes], "error": error}


def params_from_scalar_input(gm: torch.fx.GraphModule, example_inputs) -> bool:
    """Whether every kernel's ``params_ptr`` in ``gm`` is computed from a 0-d graph input (the
    hyperparameter, which Dynamo passes as a 0-d tensor once it is symbolic)."""
    scalar_inputs = {node for node, x in zip(gm.graph.find_nodes(op="placeholder"), example_inputs)
                     if isinstance(x, torch.Tensor) and x.ndim == 0}
    launches = [n for n in gm.graph.nodes if n.op == "call_function" and "params_ptr" in n.kwargs.get("kwargs", {})]

    def ancestors(node):
        seen, stack = set(), [node]
        while stack:
            for parent in stack.pop().all_input_nodes:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    return bool(launches) and all(ancestors(n.kwargs["kwargs"]["params_ptr"]) & scalar_inputs for n in launches)


schedules = {}
for name, (loss, values, read_by_kernels) in SCHEDULES.items():
    torch._dynamo.reset()
    frames = []
    counting = aot_autograd(fw_compiler=lambda gm, ex: frames.append((gm, ex)) or capture(gm, ex), bw_compiler=capture,
                            partition_fn=min_cut_rematerialization_partition)
    compiled = torch.compile(loss, backend=counting, fullgraph=True)
    errors = [trace(compiled, v) for v in values]
    schedules[name] = {"values": len(values), "graphs": len(frames), "errors": [e for e in errors if e],
                       "read_by_kernels": read_by_kernels,
                       "params_from_input": [params_from_scalar_input(gm, ex) for gm, ex in frames]}

json.dump({"cases": report, "schedules": schedules}, sys.stdout)
