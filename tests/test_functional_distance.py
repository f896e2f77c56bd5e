"""The fused distance losses (fastseg.functional, fastseg.losses) against the reference.

The reference (fastseg.reference.distance) is the oracle: plain autograd on the formulas, its
distance maps computed separately (tests/test_reference_distance.py checks it against SciPy and
MONAI). Here the fused losses (backend "torch", and "triton" under the interpreter on tiny
sizes) must match it in value and gradient; precomputed maps (from SciPy, independently of
fastseg.edt) must give the same loss as computed ones; edge cases must stay finite. The native
CPU EDT is checked against SciPy on adversarial masks.

Tolerances: float64 value and gradient rtol 1e-10 of the largest entry; float32 fused vs float64
reference value rtol 2e-5, gradient 2e-4 of its largest entry (the CUDA tests too).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from conftest import requires_cuda, requires_interpreter

import fastseg.functional as FS
import fastseg.losses as L
import fastseg.reference as R
from fastseg import _native_edt
from fastseg.edt import boundary_field, edt

NAMES = list(FS.DISTANCE)
SCOPED = ("distance_loss", "hybrid_focal_margin_distance")
WEIGHTED = ("hausdorff_dt", "distance_map_ce", "shape_aware", "hybrid_focal_margin_distance")

#: Non-default parameters per loss.
PARAMS = {
    "distance_loss": dict(alpha=2.5, eps=0.5),
    "hausdorff_dt": dict(alpha=1.5),
    "distance_map_ce": {},
    "shape_aware": {},
    "hybrid_focal_margin_distance": dict(alpha=3.0, m=1.0, gamma=0.5),
}


def _inputs(shape=(3, 1, 12, 10), dtype=torch.float64, density=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = (2.5 * torch.randn(shape, generator=gen)).to(dtype)
    t = (torch.rand(shape, generator=gen) < density).to(dtype)
    t[0] = 0  # a crack-free image
    return z, t


def _both(name, z, t, *, backend="torch", **kw):
    """``(fused value, fused grad, reference value, reference grad)`` for the same call."""
    zf = z.detach().clone().requires_grad_()
    zr = z.detach().clone().to(torch.float64).requires_grad_()
    fused = getattr(FS, name)(zf, t, backend=backend, **kw)
    ref = getattr(R, name)(zr, t.to(torch.float64) if t.is_floating_point() else t, **_ref_kw(kw))
    fused.sum().backward()
    ref.sum().backward()
    return fused.detach(), zf.grad, ref.detach(), zr.grad


def _ref_kw(kw):
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}


def _close(fused, ref, rtol):
    fused, ref = fused.double(), ref.double()
    scale = max(ref.abs().max().item(), 1e-12)
    assert torch.isfinite(fused).all()
    assert (fused - ref).abs().max().item() <= rtol * scale, ((fused - ref).abs().max().item(), scale)


def _check(name, z, t, rtol_value=1e-10, rtol_grad=1e-10, backend="torch", **kw):
    value, grad, ref_value, ref_grad = _both(name, z, t, backend=backend, **kw)
    _close(value, ref_value, rtol_value)
    _close(grad, ref_grad, rtol_grad)


# ------------------------------------------------------------------------------ value and grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3, 1, 12, 10), (2, 2, 9, 13), (2, 1, 5, 6, 4)])
def test_matches_reference(name, shape):
    z, t = _inputs(shape)
    _check(name, z, t)
    _check(name, z, t, **PARAMS[name])


@pytest.mark.parametrize("name", SCOPED)
def test_batch_scope(name):
    z, t = _inputs()
    _check(name, z, t, scope="batch")


@pytest.mark.parametrize(
    "name, reduction",
    [(n, r) for n in NAMES for r in ("sum", "none") if not (n == "hybrid_focal_margin_distance" and r == "none")],
)
def test_reductions(name, reduction):
    z, t = _inputs()
    _check(name, z, t, reduction=reduction)


@pytest.mark.parametrize("name", NAMES)
def test_ignore_and_weight(name):
    z, t = _inputs()
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[:, :, :3] = True
    ignore[2] = True  # a fully ignored image
    kw = dict(ignore=ignore)
    if name in WEIGHTED:
        kw["weight"] = torch.rand(t.shape, dtype=torch.float64) * 2
    _check(name, z, t, **kw)
    # ignore_index in an integer target
    t255 = torch.where(ignore, torch.tensor(255.0, dtype=t.dtype), t).to(torch.int64)
    value, _, ref_value, _ = _both(name, z, t255, ignore=255)
    _close(value, ref_value, 1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_probabilities_soft_and_uint8_targets(name):
    z, t = _inputs()
    _check(name, torch.sigmoid(z), t, from_logits=False)
    soft = t * 0.8 + 0.1
    _check(name, z, soft)
    value, _, ref_value, _ = _both(name, z, t.to(torch.uint8))
    _close(value, ref_value, 1e-10)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_interpreter)])
@pytest.mark.parametrize("name", NAMES)
def test_soft_labels_where_every_pixel_is_a_crack(name, backend):
    """Soft labels above 1/2 everywhere: every pixel is a crack (ND = 0), yet each holds a false
    positive ``p (1 - t)``. Found by tests/test_parameter_sweep.py: the fused seed 003 loss gave
    those images ND = 1, 4x the reference's value at alpha = 4."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 1, 4, 5, generator=gen, dtype=torch.float64)
    t = 0.6 + 0.4 * torch.rand(2, 1, 4, 5, generator=gen, dtype=torch.float64)
    t[1, 0, 0, 0] = 0.2  # the second image has a background pixel
    _check(name, z, t, backend=backend)
    _check(name, torch.sigmoid(z), t, from_logits=False, backend=backend)


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_float64_reference(name):
    z, t = _inputs(dtype=torch.float32)
    _check(name, z, t, rtol_value=2e-5, rtol_grad=2e-4)


@pytest.mark.slow
@requires_interpreter
@pytest.mark.parametrize("name", NAMES)
def test_triton_backend_under_interpreter(name):
    z, t = _inputs((2, 1, 6, 7))
    _check(name, z, t, backend="triton")
    _check(name, z.float(), t.float(), rtol_value=2e-5, rtol_grad=2e-4, backend="triton")


# ----------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("name", NAMES)
def test_crack_free_all_crack_perfect_and_extreme(name):
    shape = (4, 1, 8, 9)
    t = torch.zeros(shape, dtype=torch.float64)
    t[1] = 1  # all crack
    t[2, 0, 3, 2:7] = 1  # a thin crack
    t[3, 0, :, 4] = 1
    perfect = torch.where(t > 0.5, 80.0, -80.0).double()  # |z| = 80
    _check(name, perfect, t)
    value, grad, _, _ = _both(name, perfect, t)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    wrong = -perfect  # every pixel wrong, extreme logits
    _check(name, wrong, t)
    _check(name, torch.zeros(shape, dtype=torch.float64), t)  # p = 0.5 exactly everywhere


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_interpreter)])
@pytest.mark.parametrize("name", ["distance_loss", "hybrid_focal_margin_distance"])
def test_few_false_positives_among_confident_cracks_float32(name, backend):
    """L_Dist divides by FP alone. With half of each crack found confidently, half missed, and a
    few weak false alarms, FP is a thousandth of sum(p): as ``sum(p) - TP`` in float32 it keeps
    three digits (5e-4 of the loss); summed directly as ``p (1-t)`` it keeps float32's (the
    float32 reference is within 1.2e-7 of the float64 one here)."""
    t = torch.zeros(2, 1, 9, 12, dtype=torch.float64)
    t[:, :, 4, 1:11] = 1  # a crack of 10 pixels per image
    z = torch.where(t > 0.5, 9.0, -30.0).double()
    z[:, :, 4, 1:6] = -1.0  # half of it missed
    z[0, 0, 0, 0], z[0, 0, 8, 11], z[1, 0, 1, 5] = -7.7, -6.5, -8.2  # weak alarms far from the crack
    zr = z.clone().requires_grad_()
    ref = getattr(R, name)(zr, t)
    ref.backward()
    x = z.float().requires_grad_()
    fused = getattr(FS, name)(x, t, backend=backend)
    fused.backward()
    assert abs(fused.item() - ref.item()) <= 2e-6 * abs(ref.item()), (fused.item(), ref.item())
    _close(x.grad, zr.grad, 2e-5)


def test_perfect_prediction_values():
    """By hand: a perfect hard prediction has no false positive and no boundary mismatch."""
    t = torch.zeros(2, 1, 7, 8, dtype=torch.float64)
    t[:, :, 2:4, 1:6] = 1
    p = t.clone()
    # distance loss: Dice loss 1 - (2 TP + 1)/(2 TP + 1) = 0
    assert FS.distance_loss(p, t, from_logits=False).item() == pytest.approx(0.0, abs=1e-12)
    # Hausdorff DT: (p - t)^2 = 0 everywhere
    assert FS.hausdorff_dt(p, t, from_logits=False).item() == pytest.approx(0.0, abs=1e-12)
    # shape-aware: E = 0, so the loss equals the BCE of the (clamped) probabilities
    bce = torch.nn.functional.binary_cross_entropy(p, t)
    assert FS.shape_aware(p, t, from_logits=False).item() == pytest.approx(bce.item(), abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_fp16_inputs(name):
    z, t = _inputs(dtype=torch.float16)
    zf = z.clone().requires_grad_()
    value = getattr(FS, name)(zf, t, backend="torch")
    value.backward()
    ref = getattr(R, name)(z.float(), t.float())
    assert torch.isfinite(value) and torch.isfinite(zf.grad).all() and zf.grad.dtype == torch.float16
    assert value.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------- precomputed maps


def _scipy_maps(t: np.ndarray) -> dict[str, np.ndarray]:
    """Each loss's target map from SciPy, image by image (independent of fastseg.edt)."""
    crack = t > 0.5
    raw = np.empty(t.shape)
    field = np.zeros(t.shape)
    bnd = np.empty(t.shape)
    structure = ndi.generate_binary_structure(t.ndim - 2, 1)
    for i in np.ndindex(*t.shape[:2]):
        m = crack[i]
        diag = float(np.sqrt(sum(n * n for n in m.shape)))
        raw[i] = ndi.distance_transform_edt(~m) if m.any() else diag
        if m.any() and not m.all():
            field[i] = ndi.distance_transform_edt(m) + ndi.distance_transform_edt(~m)
        b = m & ~ndi.binary_erosion(m, structure, border_value=1)
        bnd[i] = ndi.distance_transform_edt(~b) if b.any() else diag
    return {
        "distance_loss": raw,
        "hybrid_focal_margin_distance": raw,
        "hausdorff_dt": field,
        "distance_map_ce": field,
        "shape_aware": bnd,
    }


@pytest.mark.parametrize("name", NAMES)
def test_precomputed_distance_equals_computed(name):
    z, t = _inputs((3, 1, 11, 12))
    t[1, 0] = 1  # an all-crack image (no boundary)
    d = torch.from_numpy(_scipy_maps(t.numpy())[name])
    value, grad, _, _ = _both(name, z, t)
    zf = z.clone().requires_grad_()
    given = getattr(FS, name)(zf, t, distance=d, backend="torch")
    given.backward()
    _close(given, value, 1e-12)
    _close(zf.grad, grad, 1e-12)
    # [B, *spatial] for C = 1, and the module form
    module = getattr(L, _CLASS[name])(backend="torch")
    _close(module(z, t, distance=d[:, 0]), value, 1e-12)


_CLASS = {
    "distance_loss": "DistanceLoss",
    "hausdorff_dt": "HausdorffDTLoss",
    "distance_map_ce": "DistanceMapCELoss",
    "shape_aware": "ShapeAwareLoss",
    "hybrid_focal_margin_distance": "HybridFocalMarginDistanceLoss",
}


def test_bad_distance_arguments():
    z, t = _inputs()
    with pytest.raises(ValueError, match="eps must be"):
        FS.distance_loss(z, t, eps=0.0)  # a crack-free image predicted empty would be 0/0
    with pytest.raises(TypeError, match="distance"):
        FS.distance_loss(z, t, distance=t.to(torch.int64))
    with pytest.raises(ValueError, match="distance"):
        FS.hausdorff_dt(z, t, distance=-torch.ones_like(z))
    with pytest.raises(ValueError, match="distance"):
        FS.shape_aware(z, t, distance=torch.ones(3, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="distance"):
        L.DiceLoss()(z, t, distance=torch.ones_like(z))


# ------------------------------------------------------------------------------------- modules


@pytest.mark.parametrize("name", NAMES)
def test_modules_match_reference(name):
    z, t = _inputs()
    module = getattr(L, _CLASS[name])(backend="torch", **PARAMS[name])
    _close(module(z, t), getattr(R, name)(z, t, **PARAMS[name]), 1e-10)
    assert module.loss_name == name


def test_hybrid_focal_margin_distance_composes():
    """alpha = 1 removes the distance factor: seed 000's hybrid focal margin (reference)."""
    z, t = _inputs()
    for kw in ({}, dict(symmetric=True, lam=0.3), dict(scope="batch", m=1.5)):
        fused = FS.hybrid_focal_margin_distance(z, t, alpha=1.0, backend="torch", **kw)
        _close(fused, R.hybrid_focal_margin(z, t, **kw), 1e-12)
    # alpha > 1 only raises the region term, by at most the factor alpha
    base = R.hybrid_focal_margin(z, t)
    assert base < FS.hybrid_focal_margin_distance(z, t, alpha=4.0, backend="torch") < 4 * base


def test_reference_distance_loss_skips_fully_ignored_images():
    """Like the region losses: a fully ignored image counts nowhere in the mean."""
    z, t = _inputs()
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[1] = True
    keep = [0, 2]
    want = R.distance_loss(z[keep], t[keep])
    _close(R.distance_loss(z, t, ignore=ignore), want, 1e-12)
    _close(FS.distance_loss(z, t, ignore=ignore, backend="torch"), want, 1e-12)


# ------------------------------------------------------------------------------- native EDT


needs_native = pytest.mark.skipif(_native_edt.load() is None, reason="no C compiler for the native EDT")


def _scipy_sq(mask: np.ndarray, to: str) -> np.ndarray:
    out = np.empty(mask.shape)
    for i in np.ndindex(*mask.shape[:2]):
        m = mask[i] if to == "foreground" else ~mask[i]
        if not m.any():
            out[i] = sum(n * n for n in m.shape)
        else:
            out[i] = ndi.distance_transform_edt(~m) ** 2
    return np.rint(out)


@needs_native
@pytest.mark.parametrize(
    "shape", [(2, 1, 17, 23), (1, 1, 1, 31), (1, 1, 31, 1), (2, 1, 5, 6, 7), (1, 2, 1, 1), (3, 1, 40, 33)]
)
@pytest.mark.parametrize("density", [0.0, 0.003, 0.2, 0.9, 1.0])
def test_native_edt_equals_scipy(shape, density):
    rng = np.random.default_rng(len(shape) * 1000 + int(density * 100))
    mask = rng.random(shape) < density
    if density == 0.003:
        mask.flat[rng.integers(mask.size)] = True  # a single pixel
    m = torch.from_numpy(mask)
    for to in ("foreground", "background"):
        sq = edt(m, to=to, squared=True, dtype=torch.float64, backend="native")
        assert torch.equal(sq, torch.from_numpy(_scipy_sq(mask, to)))
        d = edt(m, to=to, dtype=torch.float64, backend="native")
        assert torch.equal(d, edt(m, to=to, dtype=torch.float64, backend="scipy"))  # bit-identical sqrt
        d32 = edt(m, to=to, backend="native")
        assert torch.equal(d32, edt(m, to=to, backend="scipy"))


@needs_native
def test_native_boundary_field_and_lines():
    mask = np.zeros((3, 1, 30, 30), bool)
    mask[0, 0, 10, :] = True  # a horizontal line
    mask[1, 0, :, 7] = True  # a vertical line
    mask[2, 0, 3:20, 3:20] = True  # a square
    m = torch.from_numpy(mask)
    want = np.stack([[ndi.distance_transform_edt(x) + ndi.distance_transform_edt(~x)] for x in mask[:, 0]])
    assert torch.equal(boundary_field(m, dtype=torch.float64), torch.from_numpy(want))
    assert torch.equal(boundary_field(m, squared=True, dtype=torch.float64), torch.from_numpy(np.rint(want**2)))
    assert torch.equal(boundary_field(torch.ones(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4))


def test_native_edt_without_compiler_warns_once_and_falls_back_to_scipy(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("FASTSEG_CACHE_DIR", str(tmp_path))  # no library built by an earlier run
    monkeypatch.setattr(_native_edt, "_TRIED", False)
    monkeypatch.setattr(_native_edt, "_LIB", None)
    mask = torch.zeros(1, 1, 9, 12, dtype=torch.bool)
    mask[0, 0, 4, 2:9] = True
    with pytest.warns(RuntimeWarning, match="no-such-compiler.*SciPy"):
        got = edt(mask)
    want = ndi.distance_transform_edt(~mask[0, 0].numpy())
    assert np.array_equal(got[0, 0].numpy(), want.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: a second call stays quiet
        assert torch.equal(edt(mask), got)


@pytest.mark.parametrize("off", ["0", "off", "False"])
def test_native_edt_disabled_by_environment_is_quiet(off, monkeypatch):
    monkeypatch.setenv("FASTSEG_NATIVE", off)
    monkeypatch.setattr(_native_edt, "_TRIED", False)
    monkeypatch.setattr(_native_edt, "_LIB", None)
    mask = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(0)) < 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = edt(mask, squared=True, dtype=torch.float64)
    assert torch.equal(got, torch.from_numpy(_scipy_sq(mask.numpy(), "foreground")))
    assert _native_edt._LIB is None  # SciPy gave it, not the native library


# ---------------------------------------------------------------------------------------- CUDA


@requires_cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_reference(name):
    z, t = _inputs((4, 1, 64, 80), dtype=torch.float32, density=0.05)
    zc, tc = z.cuda().requires_grad_(), t.cuda()
    value = getattr(FS, name)(zc, tc)
    value.backward()
    zr = z.double().requires_grad_()
    ref = getattr(R, name)(zr, t.double())
    ref.backward()
    _close(value.detach().cpu(), ref.detach(), 2e-5)
    _close(zc.grad.cpu(), zr.grad, 2e-4)


@requires_cuda
def test_cuda_edt_equals_scipy():
    mask = np.random.default_rng(1).random((3, 1, 70, 90)) < 0.01
    got = edt(torch.from_numpy(mask).cuda(), squared=True, dtype=torch.float64).cpu()
    assert torch.equal(got, torch.from_numpy(_scipy_sq(mask, "foreground")))
