"""``fastseg validate``: the fused losses against the reference, on the user's own device.

For every loss of :mod:`fastseg.reference` (the distance losses too once
:mod:`fastseg.functional` has them) a *contender* (by default :mod:`fastseg.functional` with the
chosen ``backend``) and the reference are run on the same logits; the value and the gradient
with respect to the logits are compared. The oracle is the reference evaluated in float64 on the
contender's (possibly fp16/bf16-rounded) logits, so the comparison measures the contender's
arithmetic, not the rounding of its inputs.

Variants per loss and dtype: odd sizes (2x1x37x53, 1x1x1x1, 3x2x9x17, a 3-D 1x1x5x7x9), scope
"image" and "batch" (for losses with a ``scope``), hard uint8 labels, soft float labels, an
ignore mask (20 % of the pixels), crack-free and all-crack images (the edge cases of every
class weight and region statistic), and, for the losses with per-pixel hyperparameters, other
values of them (:data:`PARAMETER_VALUES`) run after the defaults in the same process: the CUDA
kernels take these values at run time, and a kernel that kept the first value would fail there. Variants the reference itself rejects (e.g. C > 1 for a
binary-only loss) are reported as ``n/a``.

Errors (``reduction="mean"``, upstream gradient 1.7):

- value: ``abs = |L - L_ref|``, ``rel = abs / |L_ref|``; passes when ``abs <= tol * (1 + |L_ref|)``.
- gradient: ``abs = max_i |g_i - g_ref_i|``, ``rel = abs / max(max_i |g_ref_i|, tiny)`` (normwise,
  since the gradient of a mean is O(1/N) per pixel; ``tiny`` is the dtype's smallest normal
  number, below which fp16 holds a gradient to a few bits only); passes when ``rel <= tol``.

Tolerances (:data:`TOLERANCES`): a few units of the dtype's rounding for fp16/bf16 (the
gradient is returned in the logits' dtype), fp32 accumulation error for fp32, and near machine
precision for fp64. A dtype the contender rejects with ``TypeError``/``ValueError`` is reported
``unsupported`` for float64 only; any other exception is a failure.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class Tolerance:
    """Pass thresholds: value ``abs <= value * (1 + |ref|)``; gradient ``normwise rel <= grad``."""

    value: float
    grad: float


TOLERANCES = {
    torch.float64: Tolerance(value=1e-10, grad=1e-10),
    torch.float32: Tolerance(value=2e-5, grad=2e-5),
    torch.float16: Tolerance(value=2e-3, grad=2e-3),  # unit roundoff 4.9e-4
    torch.bfloat16: Tolerance(value=1.6e-2, grad=1.6e-2),  # unit roundoff 3.9e-3
}

SIZES = ((2, 1, 37, 53), (1, 1, 1, 1), (3, 2, 9, 17), (1, 1, 5, 7, 9))

#: Hyperparameters read per pixel (margins, focal and EL exponents, DIBE alpha), each set of the
#: same form as the defaults (no exponent becomes 0, 1 or 2; margins stay nonzero), so on CUDA
#: they run the kernel compiled for the defaults with new runtime values.
PARAMETER_VALUES: dict[str, tuple[dict, ...]] = {
    "asymmetric_margin": ({"m": 1.3},),
    "asymmetric_focal_margin": ({"m": 1.3},),
    "focal_margin": ({"m": 1.3},),
    "hybrid_focal_margin": ({"m": 1.3},),
    "hybrid_focal_margin_distance": ({"m": 1.3},),
    "el_ce": ({"gamma_ce": 0.3}, {"gamma_ce": 0.6}),
    "unified_focal": ({"gamma": 0.3},),
    "dibe_dis": ({"alpha": 0.6},),
    "dibe": ({"alpha": 0.6},),
}
QUICK_SIZES = ((2, 1, 13, 19),)
LABELS = ("hard", "soft", "ignore", "crack-free", "all-crack")


@dataclass
class Row:
    """One comparison: a loss on one dtype, size, scope and label kind."""

    loss: str
    dtype: str
    shape: tuple
    scope: str | None
    labels: str
    status: str  # "pass", "FAIL", "n/a", "unsupported"
    value_abs: float = math.nan
    value_rel: float = math.nan
    grad_abs: float = math.nan
    grad_rel: float = math.nan
    message: str = ""
    params: dict = field(default_factory=dict)  # hyperparameters other than the defaults


@dataclass
class Report:
    contender: str
    device: str
    rows: list[Row] = field(default_factory=list)

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "FAIL"]

    def to_json(self) -> dict:
        return {
            "contender": self.contender,
            "device": self.device,
            "tolerances": {str(k).removeprefix("torch."): asdict(v) for k, v in TOLERANCES.items()},
            "passed": not self.failed,
            "rows": [asdict(r) | {"shape": list(r.shape)} for r in self.rows],
        }


# ------------------------------------------------------------------------------------------------
# Losses and contenders
# ------------------------------------------------------------------------------------------------


def _is_loss(fn) -> bool:
    if not callable(fn):
        return False
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return params[:2] == ["input", "target"]


def loss_names(contender_has: Callable[[str], bool] | None = None) -> list[str]:
    """Every non-distance reference loss, plus the distance losses the contender implements."""
    from . import reference
    from .reference import distance

    names = [n for n in reference.__all__ if _is_loss(getattr(reference, n))]
    dist = set(distance.__all__)
    return [n for n in names if n not in dist or (contender_has is not None and contender_has(n))]


def functional_lookup(backend: str = "auto") -> Callable[[str], Callable | None]:
    """The default contender: ``fastseg.functional.<name>(..., backend=backend)``."""
    functional = importlib.import_module("fastseg.functional")

    def lookup(name: str):
        fn = getattr(functional, name, None)
        if fn is None:
            return None
        return lambda *a, **k: fn(*a, backend=backend, **k)

    return lookup


def module_lookup(spec: str) -> Callable[[str], Callable | None]:
    """A contender given as ``"package.module"`` or ``"package.module:attribute"``.

    The module (or the attribute, any object) must hold one function per loss name with the
    reference signature; missing names count as failures. Used to validate another
    implementation, and by the tests to check that a deliberately wrong one fails.
    """
    module_name, _, attr = spec.partition(":")
    try:
        namespace = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"contender module {module_name!r} cannot be imported: {err}") from None
    for part in filter(None, attr.split(".")):
        if not hasattr(namespace, part):
            raise ValueError(f"contender {spec!r}: {module_name!r} has no attribute {attr!r}")
        namespace = getattr(namespace, part)
    return lambda name: getattr(namespace, name, None)


# ------------------------------------------------------------------------------------------------
# One comparison
# ------------------------------------------------------------------------------------------------


def _inputs(shape, dtype, labels, device, seed):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    ignore = None
    if labels == "soft":
        target = torch.rand(shape, generator=gen, dtype=torch.float32)
    elif labels in ("crack-free", "all-crack"):
        target = torch.full(shape, int(labels == "all-crack"), dtype=torch.uint8)
    else:
        target = (u < 0.3).to(torch.uint8)
    if labels == "ignore":
        ignore = torch.rand(shape, generator=gen) < 0.2
        ignore = ignore.to(device)
    return z.to(device), target.to(device), ignore


def _value_and_grad(fn, z, target, kwargs):
    z = z.detach().clone().requires_grad_(True)
    loss = fn(z, target, **kwargs)
    if loss.ndim != 0:
        raise ValueError(f"expected a scalar loss with reduction='mean'; got shape {tuple(loss.shape)}")
    (grad,) = torch.autograd.grad(loss * 1.7, z)
    return loss.detach(), grad.detach()


def compare(loss_name, ref_fn, fn, shape, dtype, scope, labels, device, seed=0, params=None) -> Row:
    """Run ``fn`` and the float64 reference on one variant; return the errors and the verdict."""
    dname = str(dtype).removeprefix("torch.")
    row = Row(loss_name, dname, tuple(shape), scope, labels, "n/a", params=dict(params or {}))
    z, target, ignore = _inputs(shape, dtype, labels, device, seed)
    kwargs = dict(params or {})
    if scope is not None:
        kwargs["scope"] = scope
    if ignore is not None:
        kwargs["ignore"] = ignore
    try:
        ref_value, ref_grad = _value_and_grad(ref_fn, z.double(), target, kwargs)
    except (ValueError, TypeError) as err:
        row.message = f"reference rejects this variant: {err}"
        return row
    if fn is None:
        row.status, row.message = "FAIL", "not implemented by the contender"
        return row
    try:
        value, grad = _value_and_grad(fn, z, target, kwargs)
    except (TypeError, ValueError) as err:
        row.status = "unsupported" if dtype == torch.float64 else "FAIL"
        row.message = f"{type(err).__name__}: {err}"
        return row
    except Exception as err:  # noqa: BLE001 - any crash of the contender is a failure to report
        row.status, row.message = "FAIL", f"{type(err).__name__}: {err}"
        return row
    if grad.shape != z.shape:
        row.status, row.message = "FAIL", f"gradient shape {tuple(grad.shape)} != input shape {tuple(z.shape)}"
        return row
    ref_v = float(ref_value)
    row.value_abs = abs(float(value.double()) - ref_v)
    row.value_rel = row.value_abs / abs(ref_v) if ref_v else (0.0 if row.value_abs == 0 else math.inf)
    gdiff = (grad.double() - ref_grad).abs()
    row.grad_abs = float(gdiff.max()) if gdiff.numel() else 0.0
    scale = max(float(ref_grad.abs().max()), torch.finfo(dtype).tiny)
    row.grad_rel = row.grad_abs / scale
    tol = TOLERANCES[dtype]
    ok_value = row.value_abs <= tol.value * (1 + abs(ref_v))  # NaN compares False
    ok_grad = row.grad_rel <= tol.grad and bool(torch.isfinite(grad).all())
    row.status = "pass" if ok_value and ok_grad else "FAIL"
    if not ok_value:
        row.message = f"value {float(value):.9g} vs reference {ref_v:.9g}"
    elif not ok_grad:
        idx = tuple(int(i) for i in torch.nonzero(gdiff == gdiff.max())[0]) if gdiff.numel() else ()
        row.message = f"gradient at {idx}: {float(grad[idx]):.6g} vs reference {float(ref_grad[idx]):.6g}"
    return row


def supported_dtypes(device: torch.device) -> list[str]:
    names = ["float32", "float16", "bfloat16", "float64"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        names.remove("bfloat16")
    return names


def run(
    *,
    lookup: Callable[[str], Callable | None],
    contender: str = "fastseg.functional",
    device="cpu",
    dtypes: Iterable[str] | None = None,
    losses: Iterable[str] | None = None,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
    compiled: bool = False,
) -> Report:
    """Compare ``lookup(name)`` with ``fastseg.reference.<name>`` over the variants above.

    ``compiled``: the contender runs under ``torch.compile(fullgraph=True)`` (default backend),
    one compiled function per loss, dtype and label kind, so its scopes and other
    hyperparameter values are later calls of the same compiled function, as in a training
    loop; implies ``quick`` (each variant compiles).
    """
    from . import reference

    device = torch.device(device)
    dtypes = list(dict.fromkeys(dtypes)) if dtypes else supported_dtypes(device)
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {d!r}")
    names = loss_names(lambda n: lookup(n) is not None)
    if losses:
        unknown = [n for n in losses if n not in names]
        if unknown:
            if unknown[0] in loss_names(lambda n: True):
                raise ValueError(f"the contender {contender} has no {unknown[0]!r}; it has {', '.join(names)}")
            raise ValueError(f"unknown loss {unknown[0]!r}; choose from {', '.join(names)}")
        names = list(losses)
    sizes = QUICK_SIZES if quick or compiled else SIZES
    report = Report(contender=contender, device=str(device))
    for name in names:
        ref_fn = getattr(reference, name)
        fn = lookup(name)
        scopes = ("image", "batch") if "scope" in inspect.signature(ref_fn).parameters else (None,)
        variants = [(s, sc, "hard", None) for s in sizes for sc in scopes]
        variants += [(sizes[0], sc, lab, None) for lab in LABELS[1:] for sc in scopes]
        variants += [(sizes[0], sc, "hard", prm) for prm in PARAMETER_VALUES.get(name, ()) for sc in scopes]
        for dname in dtypes:
            compiled_fns: dict[str, Callable] = {}
            for shape, scope, labels, params in variants:
                run_fn = fn
                if compiled and fn is not None:
                    run_fn = compiled_fns.setdefault(labels, _compile(fn))
                report.rows.append(compare(name, ref_fn, run_fn, shape, DTYPES[dname], scope, labels, device,
                                           params=params))
            if progress:
                progress(f"{name} {dname}")
    return report


def _compile(fn: Callable) -> Callable:
    """``torch.compile(fn, fullgraph=True)`` with its own code object (its own recompile limit)."""
    from .engine.inductor_path import with_own_code

    return torch.compile(with_own_code(lambda *args, **kwargs: fn(*args, **kwargs)), fullgraph=True)


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1e}"


def summary_table(report: Report, verbose: bool = False) -> str:
    """One line per (loss, dtype) with the worst errors over its variants; failures listed below."""
    header = ("loss", "dtype", "cases", "value abs", "value rel", "grad abs", "grad rel", "tol v/g", "result")
    lines = []
    groups: dict[tuple, list[Row]] = {}
    for r in report.rows:
        groups.setdefault((r.loss, r.dtype), []).append(r)
    for (loss, dtype), rows in groups.items():
        run_rows = [r for r in rows if r.status in ("pass", "FAIL")]

        def worst(attr):
            vals = [getattr(r, attr) for r in run_rows if not math.isnan(getattr(r, attr))]
            return max(vals) if vals else math.nan

        statuses = {r.status for r in rows}
        result = "FAIL" if "FAIL" in statuses else "pass" if "pass" in statuses else sorted(statuses)[0]
        tol = TOLERANCES[DTYPES[dtype]]
        lines.append((loss, dtype, str(len(run_rows)), _fmt(worst("value_abs")), _fmt(worst("value_rel")),
                      _fmt(worst("grad_abs")), _fmt(worst("grad_rel")), f"{tol.value:.2g}/{tol.grad:.2g}", result))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    shown = report.rows if verbose else [r for r in report.rows if r.status in ("FAIL", "unsupported")]
    if shown:
        out.append("")
        for r in shown:
            scope = f" scope={r.scope}" if r.scope else ""
            scope += "".join(f" {k}={v}" for k, v in r.params.items())
            out.append(f"{r.status:11s} {r.loss} {r.dtype} {list(r.shape)}{scope} {r.labels}: "
                       f"value {_fmt(r.value_abs)} grad {_fmt(r.grad_rel)} {r.message}".rstrip())
    n_fail = len(report.failed)
    n_run = sum(r.status in ("pass", "FAIL") for r in report.rows)
    out.append("")
    out.append(f"{report.contender} on {report.device}: {n_run - n_fail}/{n_run} comparisons passed"
               + (f", {n_fail} FAILED" if n_fail else ""))
    return "\n".join(out)


def write_json(report: Report, path) -> None:
    with open(path, "w") as fh:
        json.dump(report.to_json(), fh, indent=2, allow_nan=True)
