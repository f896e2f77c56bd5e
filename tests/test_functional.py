"""The fused losses (fastseg.functional, backend="torch") against the reference (fastseg.reference).

The reference is an independent implementation (plain autograd on the formulas, sharing nothing
with the engine but argument checking), so agreement in float64 to ~1e-12 for the value and the
gradient of every loss, over shapes, scopes, soft labels, ignore masks, weight maps and edge
cases, is the proof that the plans, the per-pixel quantities and their closed-form derivatives
are right. The per-quantity sums of the torch backend are also checked against a direct autograd
transcription of the table in fastseg/engine/spec.py, with chunks small enough to split rows.

Documented tolerances:
- float64: value and gradient within rtol 1e-10 (relative to the largest entry).
- float32 fused vs float64 reference: value rtol 2e-5, gradient within 2e-4 of its largest entry.
- float16 / bfloat16 logits vs the float32 reference on the same (rounded) logits: value rtol
  1e-5 (both compute in float32); the gradient is returned in the logits' dtype, so it is
  compared within 2 ulp of that dtype (rtol 2e-3 for fp16, 1.6e-2 for bf16) of its largest entry.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as TF
from conftest import OpNames, requires_interpreter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastseg.functional as FS
import fastseg.losses as L
import fastseg.reference as R
from fastseg.engine import torch_path
from fastseg.engine.spec import Quantity, TermParams

# The distance losses (FS.DISTANCE) have their own tests: tests/test_functional_distance.py.
ALL = [n for n in FS.__all__ if n not in FS.DISTANCE]
POINTWISE = [n for n in FS.POINTWISE if n not in FS.DISTANCE]
REGION = [n for n in FS.REGION if n not in FS.DISTANCE]
COMPOUND = [n for n in FS.COMPOUND if n not in FS.DISTANCE]

#: Non-default parameters per loss, to exercise non-integer exponents, margins and weights.
PARAMS = {
    "weighted_bce": dict(lam=0.3),
    "adaptive_wce": dict(q="power", beta=0.5, gamma=0.7),
    "focal": dict(gamma=1.5, lam=0.25),
    "asymmetric_focal": dict(gamma=0.7, delta=0.6),
    "asymmetric_margin": dict(m=1.0),
    "asymmetric_focal_margin": dict(gamma=1.3, m=1.5),
    "focal_margin": dict(gamma=0.5, m=1.0),
    "el_ce": dict(lam=0.6, gamma_ce=0.4),
    "dibe_dis": dict(lam=0.6, gamma=1.5, alpha=0.2, beta=0.5),
    "dice": dict(eps=0.5),
    "squared_dice": dict(eps=0.1),
    "jaccard": dict(eps=2.0),
    "tversky": dict(alpha=0.4, beta=0.9),
    "focal_tversky": dict(gamma=0.5, delta=0.8),
    "dibe_reg": dict(gamma=2.5, alpha=0.2),
    "log_cosh_dice": dict(eps=0.3),
    "sensitivity_specificity": dict(w=0.3, eps=1e-3),
    "bce_dice": dict(eps=0.5),
    "combo": dict(theta=0.3, lam=0.7),
    "exp_log": dict(theta=0.4, lam=0.6, gamma_ce=0.5, gamma_dc=0.3),
    "hybrid_focal": dict(asymmetric=True, class_weight=0.6, gamma_f=1.5, gamma=1.2),
    "unified_focal": dict(asymmetric=False, lam=0.3, delta=0.7, gamma=0.4),
    "hybrid_focal_margin": dict(symmetric=True, m=1.0, gamma_f=1.5, lam=0.4),
    "dibe": dict(theta=0.7, lam=0.6, gamma=1.5, alpha=0.4),
    "holistic": dict(a=2.0, b=0.5, q="log", beta=0.5),
}


def takes_scope(name: str) -> bool:
    return "scope" in inspect.signature(getattr(R, name)).parameters


def targets(shape, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "soft":
        return torch.rand(shape, generator=gen, dtype=torch.float64)
    if kind == "crack_free":
        return torch.zeros(shape, dtype=torch.uint8)
    if kind == "all_crack":
        return torch.ones(shape, dtype=torch.bool)
    return torch.rand(shape, generator=gen) < 0.2


def compare(
    name, z, t, *, dtype=torch.float64, ref_dtype=torch.float64, rtol=1e-10, grad_rtol=1e-10, grad_atol=0.0,
    grad_out=None, backend="torch", **kw,
):  # fmt: skip
    """Run reference (in ref_dtype) and fused (``backend``, in dtype) on the same logits."""
    zr = z.to(ref_dtype).detach().requires_grad_()
    zf = z.to(dtype).detach().requires_grad_()
    fkw = dict(kw)
    ref = getattr(R, name)(zr, t, **kw)
    out = getattr(FS, name)(zf, t, backend=backend, **fkw)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all(), out
    scale = ref.detach().abs().max().clamp_min(1e-30)
    err = (out.detach().double() - ref.detach().double()).abs().max()
    assert err <= rtol * scale + 1e-300, f"{name}: value {out} vs reference {ref} (max err {err:.3e})"
    if grad_out is None:
        grad_out = (torch.rand(ref.shape, dtype=ref_dtype, generator=torch.Generator().manual_seed(1)) + 0.5).to(ref.device)
    (ref * grad_out).sum().backward()
    (out * grad_out.to(out.dtype)).sum().backward()
    assert zf.grad.dtype == zf.dtype
    assert torch.isfinite(zf.grad).all(), f"{name}: non-finite gradient"
    gscale = zr.grad.abs().max().double().clamp_min(1e-30)
    gerr = (zf.grad.double() - zr.grad.double()).abs()
    where = int(gerr.argmax())
    assert gerr.max() <= grad_rtol * gscale + grad_atol, (
        f"{name}: gradient max err {gerr.max():.3e} (scale {gscale:.3e}) at flat index {where}: "
        f"fused {zf.grad.flatten()[where].item()} vs reference {zr.grad.flatten()[where].item()}"
    )


# ----------------------------------------------------------------------------------------------
# the API matches the reference
# ----------------------------------------------------------------------------------------------


def test_every_reference_loss_is_fused():
    assert set(FS.__all__) == set(R.__all__)
    assert set(FS.DISTANCE) == set(R.distance.__all__)


@pytest.mark.parametrize("name", ALL)
def test_signature_matches_reference(name):
    """The reference's parameters in its order, then backend and deterministic; pointwise losses add
    ``scope`` (default "batch", the reference's semantics) after ``from_logits``, as region losses have it."""
    ref = inspect.signature(getattr(R, name)).parameters
    fused = dict(inspect.signature(getattr(FS, name)).parameters)
    if name in POINTWISE:
        assert "scope" not in ref
        names = list(fused)
        assert names[names.index("from_logits") + 1] == "scope"
        assert fused.pop("scope").default == "batch"
    assert list(fused)[: len(ref)] == list(ref), "same parameters, same order"
    for p in ref.values():
        assert fused[p.name].default == p.default and fused[p.name].kind == p.kind, p.name
    assert list(fused)[len(ref) :] == ["backend", "deterministic"]


# ----------------------------------------------------------------------------------------------
# value and gradient vs the reference, float64
# ----------------------------------------------------------------------------------------------

CASES = {
    # id: (shape, target kind, extra kwargs)
    "plain": ((2, 1, 9, 13), "hard", {}),
    "pixel_1x1": ((2, 1, 1, 1), "hard", {}),
    "row_3x517": ((1, 1, 3, 517), "hard", {}),
    "spatial_1d": ((3, 1, 517), "hard", {}),
    "volume_3d_C2": ((2, 2, 3, 5, 4), "hard", {}),
    "channels_C3": ((2, 3, 7, 5), "hard", {}),
    "soft": ((2, 1, 6, 7), "soft", {}),
    "crack_free": ((2, 1, 5, 6), "crack_free", {}),
    "all_crack": ((2, 1, 5, 6), "all_crack", {}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ALL)
def test_matches_reference_float64(name, case):
    shape, kind, kw = CASES[case]
    gen = torch.Generator().manual_seed(hash(case) % 1000)
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    t = targets(shape, kind, gen)
    compare(name, z, t, **kw)


@pytest.mark.parametrize("name", ALL)
def test_matches_reference_nondefault_params(name):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 2, 6, 5, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(2, 2, 6, 5, generator=gen, dtype=torch.float64)
    compare(name, z, t, **PARAMS.get(name, {}))


@pytest.mark.parametrize("name", REGION + COMPOUND)
def test_batch_scope(name):
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, 2, 5, 7, generator=gen, dtype=torch.float64) * 2
    t = torch.rand(3, 2, 5, 7, generator=gen) < 0.3
    compare(name, z, t, scope="batch")


def _weight_if_read(name, weight):
    """The weight map for a loss with a pointwise term; None for a region loss (which refuses one)."""
    return None if FS.kind(name) == "region" else weight


@pytest.mark.parametrize("name", ALL)
def test_ignore_mask_weight_and_sum(name):
    """Ignored pixels count nowhere; the second image is fully ignored; weights scale pointwise terms."""
    gen = torch.Generator().manual_seed(5)
    shape = (3, 1, 6, 7)
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    ignore = torch.rand(shape, generator=gen) < 0.3
    ignore[1] = True
    weight = _weight_if_read(name, torch.rand(shape, generator=gen, dtype=torch.float64) * 2)
    compare(name, z, t, ignore=ignore, weight=weight, reduction="sum")
    compare(name, z, t, ignore=ignore, weight=weight, **({"scope": "batch"} if takes_scope(name) else {}))


@pytest.mark.parametrize("name", ALL)
def test_ignore_index_and_bhw_target(name):
    """An integer [B, H, W] target holding 255 where ignored (ignore=255), C = 1."""
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(2, 1, 5, 9, generator=gen, dtype=torch.float64) * 3
    t = (torch.rand(2, 5, 9, generator=gen) < 0.3).to(torch.uint8)
    t[torch.rand(2, 5, 9, generator=gen) < 0.2] = 255
    compare(name, z, t, ignore=255)


@pytest.mark.parametrize(
    "name, backend",
    [(name, "torch") for name in FS.__all__] + [pytest.param(name, "triton", marks=requires_interpreter) for name in ALL],
)
def test_non_finite_logits_at_ignored_pixels_count_nowhere(name, backend):
    """An inf or NaN logit at an ignored pixel (an fp16 overflow in padding): the reference's loss
    and gradient of the same logits with those pixels set to 0, and a zero gradient there."""
    gen = torch.Generator().manual_seed(62)
    shape = (2, 1, 5, 6) if backend == "torch" else (2, 1, 3, 4)
    clean = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(shape, generator=gen) < 0.3
    ignore = torch.zeros(shape, dtype=torch.bool)
    ignore[0, 0, 0, :3] = True
    clean = clean.masked_fill(ignore, 0.0)
    bad = clean.clone()
    bad[0, 0, 0, 0], bad[0, 0, 0, 1], bad[0, 0, 0, 2] = float("inf"), float("-inf"), float("nan")
    x, xr = bad.clone().requires_grad_(), clean.clone().requires_grad_()
    value = getattr(FS, name)(x, t, ignore=ignore, backend=backend)
    want = getattr(R, name)(xr, t, ignore=ignore)
    value.backward()
    want.backward()
    assert torch.isfinite(value) and abs(value.item() - want.item()) <= 1e-10 * (1 + abs(want.item())), (value, want)
    assert torch.isfinite(x.grad).all() and not x.grad[ignore].any()
    assert torch.allclose(x.grad, xr.grad, rtol=1e-9, atol=1e-12 * xr.grad.abs().max().item())


@pytest.mark.parametrize("name", FS.__all__)
def test_the_reference_ignores_non_finite_logits_at_ignored_pixels_too(name):
    """The oracle, used directly (it differentiates targets and weights): inf or NaN padding at
    ignored pixels gave the right value but a NaN gradient (NaN * 0 in autograd) in every loss.
    Independent value: the same logits with those pixels set to 0."""
    gen = torch.Generator().manual_seed(64)
    clean = torch.randn(2, 1, 5, 6, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(2, 1, 5, 6, generator=gen) < 0.3
    ignore = torch.zeros(2, 1, 5, 6, dtype=torch.bool)
    ignore[0, 0, 0, :3] = True
    clean = clean.masked_fill(ignore, 0.0)
    bad = clean.clone()
    bad[0, 0, 0, 0], bad[0, 0, 0, 1], bad[0, 0, 0, 2] = float("inf"), float("-inf"), float("nan")
    x, xr = bad.clone().requires_grad_(), clean.clone().requires_grad_()
    value, want = getattr(R, name)(x, t, ignore=ignore), getattr(R, name)(xr, t, ignore=ignore)
    value.backward()
    want.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.isfinite(x.grad).all() and not x.grad[ignore].any()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", FS.__all__)
def test_probabilities_outside_the_unit_interval_at_ignored_pixels_count_nowhere(name):
    """from_logits=False: an ignored pixel may hold anything (2, -1, inf: padding), as it may with
    logits and in the metrics; the loss and gradient are those with 1/2 there. At a valid pixel
    the same value is an error."""
    gen = torch.Generator().manual_seed(63)
    p = torch.rand(2, 1, 5, 6, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    t = torch.rand(2, 1, 5, 6, generator=gen) < 0.3
    ignore = torch.zeros(2, 1, 5, 6, dtype=torch.bool)
    ignore[0, 0, 0, :3] = True
    ignore[1, 0, 2, 2] = True
    clean = p.masked_fill(ignore, 0.5)
    bad = clean.clone()
    bad[0, 0, 0, 0], bad[0, 0, 0, 1], bad[1, 0, 2, 2] = 2.0, -1.0, float("inf")
    x, xr = bad.clone().requires_grad_(), clean.clone().requires_grad_()
    value = getattr(FS, name)(x, t, ignore=ignore, from_logits=False, backend="torch")
    want = getattr(R, name)(xr, t, ignore=ignore, from_logits=False)
    value.backward()
    want.backward()
    assert torch.isfinite(value) and abs(value.item() - want.item()) <= 1e-10 * (1 + abs(want.item())), (value, want)
    assert torch.allclose(x.grad, xr.grad, rtol=1e-9, atol=1e-12 * xr.grad.abs().max().item())
    with pytest.raises(ValueError, match=r"values outside \[0, 1\]"):
        getattr(FS, name)(bad, t, ignore=ignore & False, from_logits=False, backend="torch")


@pytest.mark.parametrize("name", ["bce", "focal", "dice", "hybrid_focal_margin"])
def test_a_nan_probability_gives_a_nan_loss_as_a_nan_logit_does(name):
    """from_logits=False: NaN propagates (README "Conventions"), in the fused path and the
    reference alike, instead of reading as p = 1/2 or log p = -100 (a finite, wrong loss)."""
    p = torch.tensor([[[[float("nan"), 0.9, 0.2]]]], dtype=torch.float64)
    t = torch.tensor([[[[1, 1, 0]]]], dtype=torch.bool)
    assert torch.isnan(getattr(FS, name)(p, t, from_logits=False, backend="torch"))
    assert torch.isnan(getattr(R, name)(p, t, from_logits=False))


@pytest.mark.parametrize("transform", ["grad", "vmap"])
def test_torch_func_transforms_are_refused_with_the_alternatives(transform):
    """Neither the registered ops nor the eager Function have functorch rules: a clear error
    naming torch.autograd and fastseg.reference, not torch's internal one."""
    z = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    t = torch.rand(2, 1, 5, 5) < 0.3
    fn = torch.func.grad(lambda x: FS.dice(x, t, backend="torch")) if transform == "grad" else torch.func.vmap(
        lambda x: FS.dice(x[None], t[:1], backend="torch"))
    with pytest.raises(RuntimeError, match="torch.func transforms.*fastseg.reference"):
        fn(z)
    assert torch.func.grad(lambda x: R.dice(x, t))(z).shape == z.shape  # the reference's way


def test_a_0d_ignore_tensor_is_refused_not_broadcast():
    """``ignore=torch.tensor(255)`` would broadcast as a mask ignoring every pixel."""
    z, t = torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 3, dtype=torch.uint8)
    for fn in (FS.bce, R.bce):
        with pytest.raises(ValueError, match="0-d tensor.*ignore=255"):
            fn(z, t, ignore=torch.tensor(255))


@pytest.mark.parametrize("name", ["bce", "balanced_bce", "dice", "unified_focal", "sensitivity_specificity"])
def test_int64_target_with_negative_ignore_index(name):
    gen = torch.Generator().manual_seed(61)
    z = torch.randn(2, 2, 5, 4, generator=gen, dtype=torch.float64) * 3
    t = (torch.rand(2, 2, 5, 4, generator=gen) < 0.3).long()
    t[torch.rand(2, 2, 5, 4, generator=gen) < 0.25] = -1
    compare(name, z, t, ignore=-1)
    t[0, 0, 0, 0] = 2  # a valid pixel outside [0, 1]
    with pytest.raises(ValueError, match="target values"):
        getattr(FS, name)(z, t, ignore=-1, backend="torch")


@pytest.mark.parametrize("name", POINTWISE + REGION)
def test_reduction_none(name):
    """Pointwise: the per-pixel map (ignored pixels 0); region: the per-group values."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    ignore = torch.rand(2, 3, 4, 5, generator=gen) < 0.2
    weight = _weight_if_read(name, torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64))
    compare(name, z, t, reduction="none", ignore=ignore, weight=weight)


@pytest.mark.parametrize("name", COMPOUND)
def test_compound_rejects_reduction_none(name):
    z, t = torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="reduction"):
        getattr(FS, name)(z, t, reduction="none", backend="torch")


@pytest.mark.parametrize("name", ALL)
def test_probabilities_input(name):
    """from_logits=False: the probabilities are mapped to logits outside the fused op."""
    gen = torch.Generator().manual_seed(8)
    p = torch.rand(2, 1, 5, 6, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    t = torch.rand(2, 1, 5, 6, generator=gen) < 0.3
    compare(name, p, t, from_logits=False, rtol=1e-9, grad_rtol=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_strided_inputs(name):
    """Channels-last and sliced (non-contiguous) logits give the reference's values and gradients."""
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(2, 3, 8, 12, generator=gen, dtype=torch.float64) * 3
    z = base.to(memory_format=torch.channels_last)[:, :, :, ::2]
    t = torch.rand(2, 3, 8, 12, generator=gen)[:, :, :, 1::2] < 0.3
    compare(name, z, t)


# ----------------------------------------------------------------------------------------------
# float32, extreme logits, half precision, autocast
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_float32_vs_float64_reference(name):
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(2, 1, 16, 20, generator=gen, dtype=torch.float64) * 4
    z = z.float().double()  # representable in float32: the comparison measures arithmetic only
    t = torch.rand(2, 1, 16, 20, generator=gen) < 0.1
    compare(name, z, t, dtype=torch.float32, rtol=2e-5, grad_rtol=2e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", ALL)
def test_extreme_logits_are_finite(name, dtype):
    """|z| = 80 (fp16: its largest finite logits) in every combination with the target."""
    big = 80.0 if dtype == torch.float32 else 65504.0
    z = torch.tensor([big, -big, big, -big, 0.0, 3.0], dtype=dtype).reshape(2, 1, 3, 1).requires_grad_()
    t = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).reshape(2, 1, 3, 1)
    loss = getattr(FS, name)(z, t, backend="torch")
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all(), (loss, z.grad)
    ref = getattr(R, name)(z.detach().float().double(), t)  # the reference in float64 is finite too
    assert torch.allclose(loss.double(), ref, rtol=1e-4, atol=1e-6), (loss, ref)


@pytest.mark.parametrize(("dtype", "grad_rtol"), [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("name", ["hybrid_focal_margin", "unified_focal", "focal", "dice", "dibe", "el_ce"])
def test_half_precision_logits(name, dtype, grad_rtol):
    gen = torch.Generator().manual_seed(11)
    z = (torch.randn(2, 1, 12, 10, generator=gen) * 3).to(dtype)
    t = torch.rand(2, 1, 12, 10, generator=gen) < 0.2
    compare(name, z.float(), t, dtype=dtype, ref_dtype=torch.float32, rtol=1e-5, grad_rtol=grad_rtol)


def test_autocast_bf16_model_matches_fp32_reference():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 1, 3, padding=1)
    x = torch.randn(2, 2, 10, 12)
    t = torch.rand(2, 1, 10, 12) < 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = FS.hybrid_focal_margin(logits, t, backend="torch")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    ref = R.hybrid_focal_margin(logits.detach().float(), t)
    assert torch.allclose(loss, ref, rtol=1e-5)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all()


# ----------------------------------------------------------------------------------------------
# determinism, gradcheck, double backward, errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hybrid_focal_margin", "unified_focal", "dibe", "bce"])
def test_deterministic_bitwise(name):
    """Large enough to run over several chunks: two runs are bitwise equal."""
    gen = torch.Generator().manual_seed(12)
    z = torch.randn(2, 1, 256, 300, generator=gen) * 3
    t = torch.rand(2, 1, 256, 300, generator=gen) < 0.05
    results = []
    for _ in range(2):
        zz = z.clone().requires_grad_()
        loss = getattr(FS, name)(zz, t, backend="torch", deterministic=True)
        loss.backward()
        results.append((loss.detach(), zz.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_the_torch_paths_select_equals_where_bit_for_bit(dtype):
    """The torch path's bitwise select against ``torch.where``: NaN, both infinities, -0.0,
    subnormals, and a strided (non-contiguous) condition, with and without a second operand."""
    gen = torch.Generator().manual_seed(7)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-40, -3.5, 65504.0])
    a = torch.cat([special, torch.randn(200, generator=gen)]).to(dtype).reshape(13, 16)
    b = torch.cat([torch.randn(200, generator=gen), special.flip(0)]).to(dtype).reshape(13, 16)
    condition = (torch.rand(13, 32, generator=gen) < 0.5)[:, ::2]
    bits = torch_path._BITS[dtype]
    for got, expected in ((torch_path._select(condition, a, b), torch.where(condition, a, b)),
                          (torch_path._select(condition, a), torch.where(condition, a, 0.0))):
        assert got.dtype == dtype and torch.equal(got.view(bits), expected.view(bits))


@pytest.mark.parametrize("threads", [1, 4])
def test_multi_chunk_rows_match_reference_float64(threads):
    """Images spanning several chunks, whose size follows torch's thread count (64K elements at
    one thread, 128K at four)."""
    gen = torch.Generator().manual_seed(13)
    z = torch.randn(2, 1, 400, 700, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(2, 1, 400, 700, generator=gen) < 0.05
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert z[0].numel() > 2 * torch_path._chunk_elements(z.device)  # each image spans several chunks
        compare("unified_focal", z, t)
        compare("hybrid_focal_margin", z, t)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["hybrid_focal_margin", "unified_focal", "dibe", "exp_log", "sensitivity_specificity", "balanced_bce"])
def test_gradcheck(name):
    gen = torch.Generator().manual_seed(14)
    z = (torch.randn(2, 1, 3, 4, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    t = torch.rand(2, 1, 3, 4, generator=gen, dtype=torch.float64)
    fn = getattr(FS, name)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, backend="torch"), (z,), eps=1e-6, atol=1e-7)


def test_double_backward_raises():
    z = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    t = torch.rand(1, 1, 4, 4) < 0.5
    loss = FS.hybrid_focal_margin(z, t, backend="torch")
    (g,) = torch.autograd.grad(loss, z, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_eager_calls_skip_the_registered_ops_and_intercepted_calls_keep_them(monkeypatch):
    """A plain eager call runs the backend through a plain ``autograd.Function`` (the registered
    ops' dispatch costs ~150 us of host time a step); a call under a ``TorchDispatchMode`` (and
    under torch.compile, tests/test_compile.py) goes through ``fastseg::fused_sums`` and
    ``fastseg::fused_grad``, and so does a backward with ``create_graph=True``. Each way gives the
    reference's value and gradient."""
    from fastseg.engine import function

    calls = []
    for name in ("fused_sums", "fused_grad"):
        op = getattr(function, name)
        monkeypatch.setattr(function, name, lambda *a, _op=op, _n=name: calls.append(_n) or _op(*a))
    gen = torch.Generator().manual_seed(21)
    z = torch.randn(2, 1, 5, 7, generator=gen, dtype=torch.float64) * 3
    t = torch.rand(2, 1, 5, 7, generator=gen) < 0.3
    x_ref = z.clone().requires_grad_()
    R.hybrid_focal_margin(x_ref, t).backward()
    expected = R.hybrid_focal_margin(z, t)

    def value_and_grad(create_graph=False):
        x = z.clone().requires_grad_()
        loss = FS.hybrid_focal_margin(x, t, backend="torch")
        (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
        return loss.detach(), grad.detach()

    results = {"eager": value_and_grad()}
    assert calls == []
    with OpNames() as seen:
        results["under a dispatch mode"] = value_and_grad()
    assert {"fastseg.fused_sums.default", "fastseg.fused_grad.default"} <= seen.names
    calls.clear()
    results["create_graph"] = value_and_grad(create_graph=True)
    assert calls == ["fused_grad"]
    for how, (value, grad) in results.items():
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=0, msg=how)
        torch.testing.assert_close(grad, x_ref.grad, rtol=1e-10, atol=1e-14, msg=how)


def test_gradient_only_to_input():
    """A target or weight asking for a gradient is refused (tests/test_losses.py has the cases);
    detached, the input alone gets one."""
    z = torch.randn(1, 1, 4, 4, requires_grad=True)
    t = torch.rand(1, 1, 4, 4, requires_grad=True)
    w = torch.rand(1, 1, 4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="target requires grad"):
        FS.focal(z, t, weight=w, backend="torch")
    FS.focal(z, t.detach(), weight=w.detach(), backend="torch").backward()
    assert z.grad is not None and t.grad is None and w.grad is None


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_interpreter)])
def test_a_loss_constant_at_its_parameters_still_backpropagates(backend):
    """Focal Tversky with gamma = 0 is ``(1 - TI)^0 = 1``: ``backward()`` must run and give 0 (as
    ``torch.pow(x, 0)`` does), not raise because the value left the graph: a gamma schedule can pass
    through 0. Found by tests/test_parameter_sweep.py."""
    t = torch.rand(2, 1, 5, 4) < 0.3
    for loss in (
        lambda z: FS.focal_tversky(z, t, gamma=0.0, backend=backend),
        lambda z: L.FocalTverskyLoss(gamma=0.0, backend=backend)(z, t),
        lambda z: R.focal_tversky(z, t, gamma=0.0),
    ):
        z = torch.randn(2, 1, 5, 4, dtype=torch.float64, requires_grad=True)
        value = loss(z)
        value.backward()
        assert value.item() == 1.0
        assert torch.equal(z.grad, torch.zeros_like(z))


def test_argument_errors():
    z, t = torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match="backend"):
        FS.dice(z, t, backend="cuda")
    with pytest.raises(TypeError, match="deterministic"):
        FS.dice(z, t, deterministic="yes")
    with pytest.raises(ValueError, match="gamma"):
        FS.focal(z, t, gamma=-1)
    with pytest.raises(ValueError, match="target"):
        FS.bce(z, t + 2)
    with pytest.raises(ValueError, match="either delta"):
        FS.tversky(z, t, alpha=0.3, delta=0.7)
    with pytest.raises(ValueError, match="scope"):
        FS.dice(z, t, scope="pixel")


def test_catalog_reductions():
    """Margin 0 and gamma 0 reduce the focal margin family to aF / aM / BCE (LOSSES.md)."""
    gen = torch.Generator().manual_seed(15)
    z = torch.randn(2, 1, 5, 5, generator=gen, dtype=torch.float64) * 2
    t = torch.rand(2, 1, 5, 5, generator=gen) < 0.3
    torch.testing.assert_close(FS.asymmetric_focal_margin(z, t, m=0.0), FS.asymmetric_focal(z, t))
    torch.testing.assert_close(FS.asymmetric_focal_margin(z, t, gamma=0.0), FS.asymmetric_margin(z, t))
    bce = TF.binary_cross_entropy_with_logits(z, t.double())
    torch.testing.assert_close(FS.asymmetric_focal_margin(z, t, gamma=0.0, m=0.0), bce)
    torch.testing.assert_close(FS.focal_margin(z, t, gamma=0.0, m=0.0), bce)


# ----------------------------------------------------------------------------------------------
# the torch backend's per-quantity sums against a direct transcription of the spec table
# ----------------------------------------------------------------------------------------------


def spec_quantities(z, t, valid, w, d, prm: TermParams):
    """Every s_k of fastseg/engine/spec.py, per pixel, by plain autograd-able torch ops."""
    p, lp, lq = torch.sigmoid(z), TF.logsigmoid(z), TF.logsigmoid(-z)
    lpm = TF.logsigmoid(z - prm.m)
    v = valid.to(z.dtype)
    t = torch.where(valid, t, torch.zeros_like(t))
    nt = (1 - t) * v
    yhat = (p.detach() >= 0.5)

    def dibe(fg):
        a1 = 1 + (prm.dibe_alpha if fg else prm.dibe_beta)
        nl, focus = (-lp, 1 - p) if fg else (-lq, p)
        u = -torch.expm1(-a1 * nl)
        return torch.where(yhat if fg else ~yhat, focus**prm.dibe_g * nl, u**prm.dibe_g * a1 * nl)

    s = {
        Quantity.TP: p * t, Quantity.SUM_P: p * v, Quantity.SUM_T: t, Quantity.SUM_PP: p * p * v,
        Quantity.SUM_TT: t * t, Quantity.COUNT: v,
        Quantity.FG_CE: w * t * (1 - p) ** prm.g_fg * -lpm, Quantity.BG_CE: w * nt * p**prm.g_bg * -lq,
        Quantity.EL_FG: w * t * (-lp) ** prm.gce, Quantity.EL_BG: w * nt * (-lq) ** prm.gce,
        Quantity.DIBE_FG: w * t * dibe(True), Quantity.DIBE_BG: w * nt * dibe(False),
        Quantity.SS_FG: (t - p) ** 2 * t, Quantity.SS_BG: (t - p) ** 2 * nt,
        Quantity.D_FP: d * p * nt, Quantity.D_SQERR: d * (p - t) ** 2 * v, Quantity.FP: p * nt,
        Quantity.FN: torch.sigmoid(-z) * t, Quantity.TN: torch.sigmoid(-z) * nt,
    }  # fmt: skip
    return torch.stack([s[k].sum(-1) for k in Quantity], -1).reshape(-1, len(Quantity))


@pytest.mark.parametrize("chunk", [7, 64, 1 << 15])
@pytest.mark.parametrize(
    "prm",
    [
        TermParams(),
        TermParams(g_fg=2, m=0.5, g_bg=2, gce=2.0, dibe_g=2, dibe_alpha=0.3, dibe_beta=0.7),
        TermParams(g_fg=0.7, m=1.5, g_bg=1.3, gce=0.3, dibe_g=1, dibe_alpha=0.1, dibe_beta=0.2),
    ],
    ids=["defaults", "integer", "fractional"],
)
def test_torch_backend_quantities_and_derivatives(prm, chunk):
    gen = torch.Generator().manual_seed(16)
    shape = (2, 3, 50)
    z = (torch.randn(shape, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    valid = torch.rand(shape, generator=gen) > 0.2
    w, d = torch.rand(shape, generator=gen, dtype=torch.float64), torch.rand(shape, generator=gen, dtype=torch.float64)
    S = spec_quantities(z, t, valid, w, d, prm)
    coeffs = torch.randn(S.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((S * coeffs).sum(), z)
    kw = dict(quantities=tuple(Quantity), params=prm, valid=valid, weight=w, distance=d, chunk=chunk)
    S2 = torch_path.fused_loss_forward(z.detach(), t, **kw)
    grad2 = torch_path.fused_loss_backward(z.detach(), t, coeffs, **kw)
    torch.testing.assert_close(S2, S.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad2, grad, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# property-based sweep
# ----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(ALL),
    B=st.integers(1, 3),
    C=st.integers(1, 2),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    frac=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    soft=st.booleans(),
    masked=st.booleans(),
    batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_sweep(name, B, C, H, W, scale, frac, soft, masked, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64) * scale
    t = torch.rand(B, C, H, W, generator=gen, dtype=torch.float64) if soft else (torch.rand(B, C, H, W, generator=gen) < frac)
    kw = {}
    if masked:
        kw["ignore"] = torch.rand(B, C, H, W, generator=gen) < 0.3
    if batch and takes_scope(name):
        kw["scope"] = "batch"
    # The reference differentiates sigmoid(z) as p (1 - p) of its output, 0 once p rounds to 1
    # (|z| > 37 in float64) where the exact derivative is e^-|z| < 1e-16: logits of scale 30 reach
    # that, and when every pixel does, those terms are all the gradient there is (a 1500-case sweep
    # found errors up to 4e-17 on gradients of scale 1e-13..1e-30, the fused side the exact one).
    compare(name, z, t, rtol=1e-9, grad_rtol=1e-8, grad_atol=1e-16, **kw)


def test_value_checks_can_be_turned_off_and_on_again():
    """Off (set_value_checks(False)), a target of 255 gives a number, as documented (no sync on CUDA);
    the previous setting comes back; the reference keeps checking."""
    import fastseg
    import fastseg.reference as R

    z, t = torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    t[0, 0, 0, 0] = 255.0
    weight, distance = torch.ones_like(z), torch.ones_like(z)
    weight[0, 0, 0, 1], distance[0, 0, 0, 2] = -1.0, float("inf")
    with pytest.raises(ValueError, match="target values"):
        FS.dice(z, t, backend="torch")
    with pytest.raises(ValueError, match="distance must be finite"):
        FS.distance_loss(z, t.clamp(0, 1), distance=distance, backend="torch")
    assert fastseg.set_value_checks(False) is True
    try:
        assert torch.isfinite(FS.dice(z, t, backend="torch"))
        FS.focal(z, t.clamp(0, 1), weight=weight, backend="torch")
        FS.distance_loss(z, t.clamp(0, 1), distance=-distance.clamp_max(1), backend="torch")  # negative: unchecked
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            R.dice(z, t)
    finally:
        assert fastseg.set_value_checks(True) is False
    with pytest.raises(ValueError, match="weight must be non-negative and finite"):
        FS.focal(z, t.clamp(0, 1), weight=weight, backend="torch")
    with pytest.raises(ValueError, match="distance must be finite and non-negative"):
        FS.distance_loss(z, t.clamp(0, 1), distance=-distance.clamp_max(1), backend="torch")
    with pytest.raises(TypeError, match="enabled must be a bool"):
        fastseg.set_value_checks(0)
