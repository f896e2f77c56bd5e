"""Triton's launcher specialisation of real launches, next to the compile gate's model of it.

Run by tests/test_kernel_compile.py in its own process: the kernels must be real ``JITFunction``s
(no ``TRITON_INTERPRET``). The launchers of ``fastseg.kernels`` run on CPU tensors of a contiguous
binary batch with the kernels replaced by recorders; each recorded launch goes through the binder
Triton's runtime builds for an sm_90 target (the code that decides, at every launch, which
arguments are compiled in as constants and which are marked divisible by 16). The compile gate's
variant of the same kernel (``fastseg.kernel_report``, ``aligned=True``) must specialise alike.

Prints one JSON object: for every case, ``triton`` and ``gate``, each ``{"signature",
"constexprs", "divisible"}``; or ``{"unavailable": why}`` when this Triton's runtime lacks the
internal API used here.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402

from fastseg import kernel_report as kr  # noqa: E402
from fastseg.engine.spec import TermParams  # noqa: E402
from fastseg.kernels import edt as edt_kernels  # noqa: E402
from fastseg.kernels import fused_loss as fl  # noqa: E402
from fastseg.kernels.fused_loss import ZERO_DERIVATIVE  # noqa: E402

try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
except ImportError as err:
    print(json.dumps({"unavailable": f"{type(err).__name__}: {err}"}))
    sys.exit(0)


class Recorder:
    """Stands in for ``kernel[grid](...)``: keeps the launch, runs nothing."""

    launches: list = []

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            Recorder.launches.append((self.kernel, args, kwargs))

        return launch


def triton_specialisation(kernel, args, kwargs) -> dict:
    backend = make_backend(GPUTarget("cuda", 90, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    _, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    names = kernel.arg_names
    return {
        "signature": signature,
        "constexprs": {names[path[0]]: value for path, value in constexprs.items()},
        "divisible": sorted(names[path[0]] for path, value in attrs.items() if ["tt.divisibility", 16] in value),
    }


def gate_specialisation(variant: kr.Variant) -> dict:
    fn, signature, constexprs, attrs, _ = kr._signature_and_constexprs(variant)
    return {
        "signature": signature,
        "constexprs": dict(constexprs),
        "divisible": sorted(fn.arg_names[path[0]] for path, value in attrs.items() if ["tt.divisibility", 16] in value),
    }


def loss_cases():
    """(name, launcher call, {kernel name: variant}) for losses of the catalog on [16, 1, N] batches."""
    catalog = {name: (tuple(int(k) for k in qs), params) for name, qs, params in kr.CATALOG}
    for loss, n, logits in (("dice", 1 << 14, "fp16"), ("hybrid_focal_margin", 256, "bf16"), ("bce", 1, "fp32")):
        quantities, params = catalog[loss]
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[logits]
        z = torch.randn(16, 1, n).to(dtype)
        t = (torch.rand(16, 1, n) < 0.1).to(torch.uint8)
        prm = tuple(sorted(vars(params).items()))
        block = fl.block_and_warps(16 if n == 1 else n)[0]
        per_element = n == 1
        diff = tuple(k for k in quantities if k not in ZERO_DERIVATIVE)
        variants = {
            "_fused_loss_forward_kernel": kr.Variant("forward", quantities, prm, logits, "u8", block=block,
                                                     per_element=per_element),
            "_reduce_partials_kernel": kr.Variant("reduce", (), (), k=len(quantities)),
            "_fused_loss_backward_kernel": kr.Variant("backward", diff, prm, logits, "u8", block=block,
                                                      per_element=per_element),
        }

        def run(z=z, t=t, quantities=quantities, params=params, diff=diff):
            fl.fused_loss_forward(z, t, quantities=quantities, params=params, launch_wrapper=Recorder)
            coeffs = torch.ones(z.shape[0] * z.shape[1], len(diff))
            fl.fused_loss_backward(z, t, coeffs, quantities=diff, params=params, launch_wrapper=Recorder)

        yield f"{loss} 16x1x{n} {logits}", run, variants


def edt_cases():
    for shape in ((16, 64, 64), (2, 16, 32, 48)):
        mask = torch.rand(shape) < 0.05
        block_n = edt_kernels.sweep_blocks(shape[-1])[1]
        variants = {
            "_edt_sweep_kernel": kr.Variant("edt_sweep", (), (), logits="fp32", target="-", k=block_n),
            "_edt_envelope_kernel": kr.Variant("edt", (), (), logits="fp32", target="-", k=edt_kernels.ENVELOPE_LINES),
        }

        def run(mask=mask):
            saved = edt_kernels._edt_sweep_kernel, edt_kernels._edt_envelope_kernel
            edt_kernels._edt_sweep_kernel, edt_kernels._edt_envelope_kernel = map(Recorder, saved)
            try:
                edt_kernels.edt_squared(mask, (1.0,) * (mask.ndim - 1))
            finally:
                edt_kernels._edt_sweep_kernel, edt_kernels._edt_envelope_kernel = saved

        yield "edt " + "x".join(map(str, shape)), run, variants


def main() -> None:
    out = {}
    for name, run, variants in [*loss_cases(), *edt_cases()]:
        Recorder.launches = []
        run()
        for i, (kernel, args, kwargs) in enumerate(Recorder.launches):
            kernel_name = kernel.fn.__name__
            try:
                triton_side = triton_specialisation(kernel, args, kwargs)
            except (AttributeError, TypeError) as err:
                print(json.dumps({"unavailable": f"{type(err).__name__}: {err}"}))
                return
            out[f"{name} #{i} {kernel_name}"] = {"triton": triton_side, "gate": gate_specialisation(variants[kernel_name])}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
