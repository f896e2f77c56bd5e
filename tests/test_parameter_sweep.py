"""Every hyperparameter of every loss, drawn at random: the fused losses against the reference.

The other tests run each loss at its defaults and at one hand-picked set of parameters
(tests/test_functional.py ``PARAMS``); ``fastseg validate`` runs a few values per parameter.
Here hypothesis draws the hyperparameters from each loss's whole domain (:data:`SPACE`: the
special forms the kernels branch on, exponents crossing 1, margins, class weights of 0 and 1,
eps from 1e-7 up) together with the data (shapes, logit scales, crack-free / all-crack / soft
targets, ignore masks, weight maps, scopes, reductions, probabilities instead of logits), and
compares value and gradient with :mod:`fastseg.reference` in float64: through the functional
API and the ``nn.Module``s of :func:`fastseg.losses.build`, summed into a
:class:`~fastseg.losses.CombinedLoss` (whose terms then share fused passes), with float32, fp16
and bf16 logits, and through the Triton kernels. A failure prints the drawn case; hypothesis
replays it first on the next run.

Tolerances (:func:`assert_accurate`), float64 against float64: value within 1e-9 of its largest
entry plus 1e-15 (the reference's own rounding: seed 003's factor ``1 - L_Dist`` at alpha = 0
cancels to 1e-9 on a crack-free image); gradient within 1e-8 of its largest entry plus 1e-16, at
the pixels whose logit is at most :data:`SATURATION` (16) in magnitude, and finite elsewhere.
Beyond that the reference is no oracle for the gradient: it differentiates ``sigmoid`` as
``p (1 - p)`` of its output, whose ``1 - p`` is off by up to 1e-16 in absolute terms (0 once
``p`` rounds to 1 at ``|z| > 37``), so a saturated pixel's gradient is off by up to
``1e-16 |dL/dp|``; with DIBE_Reg's ``(-log Tv)^8`` at eps = 1e-7 that was 5e-8 of the largest
gradient, against mpmath's exact value, which the fused side matched to 16 digits.
tests/test_numerics.py checks confident pixels' gradients against closed forms. Lower precisions
have the bars of ``fastseg validate``, or float32's own limits (:func:`assert_accurate`).

``FASTSEG_SWEEP_EXAMPLES`` sets the examples per test (default 150; the Triton test under the
interpreter takes a tenth): e.g. 5000 for a long hunt before a release.
"""

from __future__ import annotations

import inspect
import os

import pytest
import torch
from conftest import TRITON_DEVICE
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastseg.functional as FS
import fastseg.losses as L
import fastseg.reference as R
from fastseg import ShapeWarning

# Inputs [B, C, L] with C > 1 are drawn on purpose here (C channels of 1-D signals).
pytestmark = pytest.mark.filterwarnings("ignore", category=ShapeWarning)
EXAMPLES = int(os.environ.get("FASTSEG_SWEEP_EXAMPLES", "150"))

#: Arguments that carry data or choose a reduction: drawn by :func:`cases`, not by :data:`SPACE`.
DATA_ARGUMENTS = {"input", "target", "from_logits", "scope", "reduction", "ignore", "weight", "distance"}


def _values(special, low, high):
    """The special values first (hypothesis shrinks towards them), else a float in [low, high]."""
    return st.sampled_from(special) | st.floats(low, high)


UNIT = _values([0.0, 1.0, 0.5, 0.25, 0.75], 0.0, 1.0)
OPTIONAL_UNIT = st.none() | UNIT
EXPONENT = _values([0.0, 0.5, 1.0, 2.0, 1.5, 3.0, 0.999, 1.001, 4 / 3], 0.0, 4.0)
POSITIVE_EXPONENT = _values([0.5, 1.0, 2.0, 1.5, 3.0, 0.25, 0.999, 1.001, 4 / 3, 0.1], 0.05, 4.0)
MARGIN = _values([0.0, 1e-4, 0.5, 1.0, 1.5, 5.0], 0.0, 3.0)
EPS = _values([1.0, 1e-7, 1e-6, 1e-3, 0.5, 2.0], 0.01, 3.0)
WIDE_WEIGHT = _values([0.0, 0.3, 0.5, 1.0, 1.5, 2.0], 0.0, 2.0)
DISTANCE_ALPHA = _values([4.0, 0.0, 0.5, 1.0], 0.0, 8.0)


def _tversky_forms(**common):
    """Tversky weights: the defaults, ``delta`` alone, or ``alpha`` and ``beta``."""
    return [dict(common), dict(common, delta=UNIT), dict(common, alpha=WIDE_WEIGHT, beta=WIDE_WEIGHT)]


def _class_weighting_forms(scale_name: str, **common):
    """Seed 002's class weights: ``q`` with its ``gamma`` (only "power" and "exp" read one)."""
    base = dict(common, beta=_values([1.0, 0.5, 0.75, 1e-3], 0.01, 1.0), smooth=st.sampled_from([1.0, 0.0, 0.5, 10.0]))
    base[scale_name] = _values([10.0, 1.0001, 2.0, 100.0], 1.01, 20.0)
    return [
        dict(base, q=st.sampled_from(["xie", "log"])),
        dict(base, q=st.just("power"), gamma=st.none() | _values([1.0, 0.5, 1e-3], 0.01, 1.0)),
        dict(base, q=st.just("exp"), gamma=st.none() | UNIT),
    ]


_HFM = dict(m=MARGIN, gamma_f=EXPONENT, gamma=EXPONENT, delta=UNIT, symmetric=st.booleans(), lam=OPTIONAL_UNIT, eps=EPS)

#: Per loss, its alternative parameter forms: each form maps every parameter it sets to a strategy
#: (a parameter left out of a form keeps its default there). Together the forms name every
#: hyperparameter of the loss's signature (checked by the first test).
SPACE: dict[str, list[dict]] = {
    "bce": [{}],
    "weighted_bce": [dict(lam=OPTIONAL_UNIT)],
    "balanced_bce": [{}],
    "adaptive_wce": _class_weighting_forms("a"),
    "focal": [dict(gamma=EXPONENT, lam=OPTIONAL_UNIT)],
    "asymmetric_focal": [dict(gamma=EXPONENT, delta=OPTIONAL_UNIT)],
    "asymmetric_margin": [dict(m=MARGIN)],
    "asymmetric_focal_margin": [dict(gamma=EXPONENT, m=MARGIN)],
    "focal_margin": [dict(gamma=EXPONENT, m=MARGIN)],
    "el_ce": [dict(lam=OPTIONAL_UNIT, gamma_ce=POSITIVE_EXPONENT)],
    "dibe_dis": [dict(lam=OPTIONAL_UNIT, gamma=EXPONENT, alpha=UNIT), dict(lam=OPTIONAL_UNIT, gamma=EXPONENT, alpha=UNIT, beta=UNIT)],
    "dice": [dict(eps=EPS)],
    "squared_dice": [dict(eps=EPS)],
    "jaccard": [dict(eps=EPS)],
    "tversky": _tversky_forms(eps=EPS),
    "focal_tversky": _tversky_forms(gamma=EXPONENT, eps=EPS),
    "dibe_reg": [
        dict(gamma=POSITIVE_EXPONENT, eps=EPS, alpha=UNIT),
        dict(gamma=POSITIVE_EXPONENT, eps=EPS, alpha=WIDE_WEIGHT, beta=WIDE_WEIGHT),
    ],
    "log_cosh_dice": [dict(eps=EPS)],
    "sensitivity_specificity": [dict(w=UNIT, eps=_values([1e-6, 1.0, 1e-3], 1e-6, 2.0))],
    "bce_dice": [dict(eps=EPS)],
    "combo": [dict(theta=UNIT, lam=OPTIONAL_UNIT, eps=EPS)],
    "exp_log": [dict(theta=UNIT, lam=OPTIONAL_UNIT, gamma_ce=POSITIVE_EXPONENT, gamma_dc=POSITIVE_EXPONENT, eps=EPS)],
    "hybrid_focal": _tversky_forms(
        lam=OPTIONAL_UNIT, asymmetric=st.booleans(), gamma_f=EXPONENT, class_weight=OPTIONAL_UNIT, gamma=EXPONENT, eps=EPS
    ),
    "unified_focal": [dict(lam=UNIT, delta=UNIT, gamma=UNIT, asymmetric=st.booleans(), eps=st.sampled_from([1e-7, 1.0, 1e-3]))],
    "hybrid_focal_margin": [_HFM],
    "dibe": [dict(theta=UNIT, lam=OPTIONAL_UNIT, gamma=POSITIVE_EXPONENT, alpha=UNIT, eps=EPS)],
    "holistic": _class_weighting_forms("base", a=st.sampled_from([1.0, 0.0, 0.5, 20.0]), b=st.sampled_from([1.0, 0.0, 2.0]), eps=EPS),
    "distance_loss": [dict(alpha=DISTANCE_ALPHA, eps=_values([1.0, 0.5, 1e-3, 2.0], 1e-3, 2.0), eps_dist=st.sampled_from([1e-6, 1.0, 1e-9]))],
    "hausdorff_dt": [dict(alpha=_values([2.0, 0.0, 0.5, 1.0, 3.0], 0.0, 4.0))],
    "distance_map_ce": [{}],
    "shape_aware": [{}],
    "hybrid_focal_margin_distance": [dict(_HFM, alpha=DISTANCE_ALPHA, eps_dist=st.sampled_from([1e-6, 1.0]))],
}


def parameters(name: str):
    """A strategy for the keyword hyperparameters of loss ``name``."""
    return st.one_of([st.fixed_dictionaries(form) for form in SPACE[name]])


def _takes(name: str, argument: str) -> bool:
    return argument in inspect.signature(getattr(R, name)).parameters


def _reads_weight(name: str) -> bool:
    """Pointwise and compound losses weight their pointwise terms; region losses refuse a weight."""
    return FS.kind(name) != "region"


def test_the_space_names_every_hyperparameter_of_every_loss():
    """A loss or parameter added without a place here would never be drawn."""
    assert set(SPACE) == set(FS.__all__)
    for name, forms in SPACE.items():
        signature = set(inspect.signature(getattr(R, name)).parameters) - DATA_ARGUMENTS
        assert set().union(*forms) == signature, name


@st.composite
def cases(draw, names=tuple(FS.__all__), max_side=7):
    """``(name, params, call)`` with ``call`` the data and reduction keywords of one loss call."""
    name = draw(st.sampled_from(names))
    params = draw(parameters(name))
    distance = name in FS.DISTANCE
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    spatial = tuple(draw(st.lists(st.integers(1, max_side), min_size=1 if not distance else 2, max_size=2 if distance else 3)))
    shape = (B, C, *spatial)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    logits = draw(st.sampled_from(["normal", "wide", "saturated", "zeros", "confident"]))
    labels = draw(st.sampled_from(["hard", "sparse", "soft", "crack_free", "all_crack", "mixed_images"]))

    hard = {"hard": 0.3, "sparse": 0.05, "crack_free": 0.0, "all_crack": 1.01, "mixed_images": 0.3}
    if labels == "soft":
        t = torch.rand(shape, generator=gen, dtype=torch.float64)
    else:
        t = torch.rand(shape, generator=gen) < hard[labels]
        if labels == "mixed_images":
            t[0] = False
            if B > 1:
                t[-1] = True
    scale = {"normal": 3.0, "wide": 20.0, "saturated": 60.0, "zeros": 0.0, "confident": 1.0}[logits]
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    if logits == "confident":
        z = (t.double() * 2 - 1) * (5 + 10 * torch.rand(shape, generator=gen, dtype=torch.float64))

    call = {"reduction": draw(st.sampled_from(["mean", "sum"] if FS.kind(name) == "compound" else ["mean", "sum", "none"]))}
    if _takes(name, "scope"):
        call["scope"] = draw(st.sampled_from(["image", "batch"]))
    if draw(st.booleans()):
        ignore = torch.rand(shape, generator=gen) < 0.3
        if draw(st.booleans()):
            ignore[0] = True  # a fully ignored image
        if labels != "soft" and draw(st.booleans()):  # as an ignore_index in an integer target
            t = t.to(draw(st.sampled_from([torch.uint8, torch.int64]))).masked_fill(ignore, 255)
            ignore = 255
        call["ignore"] = ignore
    if labels != "soft" and not t.is_floating_point():
        t = t.to(draw(st.sampled_from([t.dtype, torch.uint8, torch.float32])))
    if C == 1 and draw(st.booleans()):
        t = t[:, 0]  # [B, *spatial] targets of single-channel logits
    if _reads_weight(name) and draw(st.booleans()):
        weight_shape = draw(st.sampled_from([shape, (1, 1, *spatial)]))  # per pixel, or broadcast over the batch
        call["weight"] = torch.rand(weight_shape, generator=gen, dtype=torch.float64) * 2
    if draw(st.integers(0, 4)) == 0 and logits in ("normal", "zeros"):  # probabilities in (0, 1), not saturated
        z, call["from_logits"] = torch.sigmoid(z), False
    return name, params, z, t, call


def _value_and_grad(loss, z):
    z = z.detach().clone().requires_grad_()
    value = loss(z)
    upstream = torch.linspace(0.5, 1.5, value.numel(), dtype=torch.float64).reshape(value.shape)
    (value.double() * upstream).sum().backward()
    return value.detach().double(), z.grad.double()


#: Logits beyond this magnitude: the gradient there is only checked to be finite (see the module docstring).
SATURATION = 16.0

#: Gradient tolerance of half-precision logits (the gradient is returned in their dtype): a few
#: units of its rounding, as ``fastseg validate`` allows.
HALF_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _on(device, x):
    return x.to(device) if isinstance(x, torch.Tensor) else x


def assert_accurate(fused, reference, z, t, call, *, params=None, dtype=torch.float64, device="cpu", where=()):
    """``fused(x, t, call)`` (``x`` the logits in ``dtype`` on ``device``, ``t`` and the tensors of
    ``call`` there too) against ``reference(x, t, call)`` in float64 on the same rounded logits, on
    the CPU; ``params``: the hyperparameters (for the exclusions below).

    float64: value within 1e-9 of its largest entry plus 1e-15, gradient within 1e-8 of its largest
    entry plus 1e-16. Lower precisions: the value, computed in float32, within 2e-5 (1 + |L|); the
    gradient within 2e-4 (float32) or :data:`HALF_TOLERANCE` (returned in the logits' dtype) of its
    largest entry plus 1e-6 of a pixel's mean share of the loss (a gradient that cancels to exactly
    0 in float64, balanced BCE's ``2 (beta - t)`` on a channel of one soft label, is that far from
    0 in any float32 order); in float32, where that bar is missed (a gradient that is a small
    difference of large terms: Tversky's with soft labels at delta = 0 is eps-driven, 5e-7 against
    terms of 0.1), no further off than 10x the error of the reference itself run in float32 on
    float32 soft labels and weights. Gradients are compared where ``|z| <= SATURATION``. Left out
    below float64: hyperparameters in (0, 1e-6) (their gradients fall below float32's normal
    range), probabilities that round to exactly 0 or 1 (their gradient is a documented convention,
    README "Conventions") and gradients too large for the dtype (DIBE_Reg's ``(-log Tv)^10`` at
    eps = 1e-6 has 1e11).
    """
    low = dtype != torch.float64
    z = z.to(dtype).double()
    assume(bool(torch.isfinite(z).all()))  # fp16 overflows beyond 65504
    if low:
        assume(all(not isinstance(v, float) or v == 0 or v >= 1e-6 for v in (params or {}).values()))
        if call.get("from_logits") is False:
            assume(bool(((z > 0) & (z < 1)).all()))
    t_dev, call_dev = _on(device, t), {k: _on(device, v) for k, v in call.items()}
    value, grad = _value_and_grad(lambda x: fused(x.to(device, dtype), t_dev, call_dev).cpu(), z)
    ref_value, ref_grad = _value_and_grad(lambda x: reference(x, t, call), z)
    where = (*where, tuple(z.shape), sorted(call), dtype)
    if low:
        assume(ref_grad.abs().max().item() <= torch.finfo(dtype).max / 4)
    assert value.shape == ref_value.shape, where
    assert torch.isfinite(value).all() and torch.isfinite(grad).all(), where
    value_err = (value - ref_value).abs().max().item()
    value_tol = 2e-5 * (1 + ref_value.abs().max().item()) if low else 1e-9 * ref_value.abs().max().item() + 1e-15
    assert value_err <= value_tol, (value_err, value, ref_value, where)
    exact = z.abs() <= SATURATION  # where the reference's gradient keeps its digits
    if not exact.any():
        return
    grad_err = (grad - ref_grad)[exact].abs().max().item()
    if not low:
        assert grad_err <= 1e-8 * ref_grad.abs().max().item() + 1e-16, (grad_err, ref_grad.abs().max().item(), where)
        return
    scale = max(ref_grad.abs().max().item(), torch.finfo(dtype).tiny)
    floor = 1e-6 * ref_value.abs().sum().item() / z.numel()
    if dtype != torch.float32 or grad_err <= 2e-4 * scale + floor:
        assert grad_err <= HALF_TOLERANCE.get(dtype, 2e-4) * scale + floor, (grad_err / scale, where)
        return
    as_float32 = lambda x: x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x  # noqa: E731
    t32, call32 = as_float32(t), {k: as_float32(v) for k, v in call.items()}
    _, ref32_grad = _value_and_grad(lambda x: reference(x.float(), t32, call32), z)
    ref32_err = (ref32_grad - ref_grad)[exact].abs().max().item()
    assert grad_err <= 10 * ref32_err, (grad_err / scale, ref32_err / scale, where)


def functional(name, params, backend="torch"):
    """``(x, t, call) -> loss`` of the fused ``name`` (``backend``) or, for backend None, the reference."""
    if backend is None:
        return lambda x, t, call: getattr(R, name)(x, t, **params, **call)
    return lambda x, t, call: getattr(FS, name)(x, t, **params, **call, backend=backend)


def assert_loss_accurate(fused, case, **kw):
    """:func:`assert_accurate` for one loss of :func:`cases` against its reference."""
    name, params, z, t, call = case
    assert_accurate(fused, functional(name, params, None), z, t, call, params=params, where=(name, params), **kw)


SWEEP = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SWEEP
@given(case=cases(), through_module=st.booleans())
def test_fused_losses_match_the_reference_over_their_parameters(case, through_module):
    """float64, through the functional API or a module of :func:`fastseg.losses.build`."""
    name, params, z, t, call = case
    if not through_module:
        assert_loss_accurate(functional(name, params), case)
        return

    def module(x, t, call):
        settings_ = {k: v for k, v in call.items() if k in ("reduction", "scope", "from_logits")}
        data = {k: v for k, v in call.items() if k in ("ignore", "weight")}
        return L.build({"name": name, **params, **settings_, "backend": "torch"})(x, t, **data)

    assert_loss_accurate(module, case)


@SWEEP
@given(case=cases(), dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_lower_precision_logits_over_their_parameters(case, dtype):
    """float32, fp16 and bf16 logits (:func:`assert_accurate`'s bars). The float32 sweep found the
    float32 rounding of focal Tversky's small exponents and the EL powers of pixels beyond float32's
    underflow (tests/test_numerics.py)."""
    assert_loss_accurate(functional(case[0], case[1]), case, dtype=dtype)


@st.composite
def sums(draw):
    """2 or 3 losses with drawn parameters and term weights, on one batch (as CombinedLoss takes it)."""
    name, params, z, t, call = draw(cases())
    terms = [(name, params, call.get("scope"), call["reduction"])]
    for _ in range(draw(st.integers(1, 2))):
        other = draw(st.sampled_from([n for n in FS.__all__ if z.ndim == 4 or n not in FS.DISTANCE]))  # 2-D maps
        scope = draw(st.sampled_from(["image", "batch"])) if _takes(other, "scope") else None
        terms.append((other, draw(parameters(other)), scope, draw(st.sampled_from(["mean", "sum"]))))
    weights = [draw(st.sampled_from([1.0, 0.5, 0.1, 2.0, 0.0])) for _ in terms]
    if call.get("reduction") == "none":
        terms[0] = terms[0][:3] + ("mean",)
    if not any(_reads_weight(term[0]) for term in terms):
        call.pop("weight", None)
    return terms, weights, z, t, call


@SWEEP
@given(case=sums())
def test_combined_losses_match_the_sum_of_references(case):
    terms, weights, z, t, call = case
    from_logits = call.get("from_logits", True)

    def term_settings(scope, reduction):
        return {"reduction": reduction, "from_logits": from_logits, **({} if scope is None else {"scope": scope})}

    modules = [
        w * L.build({"name": name, **params, **term_settings(scope, reduction), "backend": "torch"})
        for w, (name, params, scope, reduction) in zip(weights, terms)
    ]
    criterion = modules[0]
    for module in modules[1:]:
        criterion = criterion + module

    def data(call, reads_weight=True):
        return {k: v for k, v in call.items() if k == "ignore" or (k == "weight" and reads_weight)}

    def reference(x, t, call):
        total = 0.0
        for w, (name, params, scope, reduction) in zip(weights, terms):
            total = total + w * getattr(R, name)(x, t, **params, **term_settings(scope, reduction), **data(call, _reads_weight(name)))
        return total

    assert_accurate(lambda x, t, call: criterion(x, t, **data(call)), reference, z, t, call, where=(terms, weights))


@settings(
    max_examples=EXAMPLES if TRITON_DEVICE == "cuda" else max(EXAMPLES // 10, 1),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases(max_side=4), dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]))
def test_triton_kernels_match_the_reference_over_their_parameters(case, dtype):
    """The Triton kernels, float64, float32 and fp16 logits: on the GPU where there is one, else
    under the interpreter (tiny sizes: it runs every program in Python). The reference runs on the CPU."""
    assert_loss_accurate(functional(case[0], case[1], "triton"), case, dtype=dtype, device=TRITON_DEVICE)
