"""Compound reference losses (fastseg.reference.compound) against NumPy and hand computations.

Pointwise terms are transcribed here from the catalog in NumPy; region terms use the NumPy oracle
of tests/test_reference_region.py. Unified Focal is also checked against a literal NumPy
transcription of the authors' Keras code and a two-pixel case worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_reference_region import (
    make_case,
    np_dice,
    np_focal_tversky,
    np_gsum,
    np_jaccard,
    np_reduce,
    np_sigmoid,
    np_tversky_index,
)

from fastseg.reference import compound as C

# ----------------------------------------------------------------------------------------------
# NumPy pointwise terms (per pixel) and their reduction
# ----------------------------------------------------------------------------------------------


def np_point_reduce(term, valid, weight, reduction):
    term = np.where(valid, term * weight, 0.0)
    return term.sum() if reduction == "sum" else term.sum() / max(valid.sum(), 1)


def logs(z):
    p = np_sigmoid(z)
    return p, np.log(p), np.log(1 - p)


def np_bce(z, t):
    _, lp, lq = logs(z)
    return -(t * lp + (1 - t) * lq)


def np_wbce(z, t, lam):
    _, lp, lq = logs(z)
    return -(lam * t * lp + (1 - lam) * (1 - t) * lq)


def np_el_ce(z, t, lam, gce):
    _, lp, lq = logs(z)
    a, b = (1.0, 1.0) if lam is None else (lam, 1 - lam)
    return a * t * (-lp) ** gce + b * (1 - t) * (-lq) ** gce


def np_focal(z, t, g, lam):
    p, lp, lq = logs(z)
    a, b = (1.0, 1.0) if lam is None else (lam, 1 - lam)
    return -(a * (1 - p) ** g * t * lp + b * p**g * (1 - t) * lq)


def np_asym_focal(z, t, g, delta):
    p, lp, lq = logs(z)
    a, b = (1.0, 1.0) if delta is None else (delta, 1 - delta)
    return -(a * t * lp + b * p**g * (1 - t) * lq)


def np_afm(z, t, g, m):
    p, _, lq = logs(z)
    return -(t * np.log(np_sigmoid(z - m)) + p**g * (1 - t) * lq)


def np_fm(z, t, g, m):
    p, _, lq = logs(z)
    return -((1 - p) ** g * t * np.log(np_sigmoid(z - m)) + p**g * (1 - t) * lq)


def np_dibe_dis(z, t, lam, g, alpha, beta):
    p, lp, lq = logs(z)
    yhat = p >= 0.5
    fg = np.where(yhat, -lam * (1 - p) ** g * lp, -lam * (1 - p ** (1 + alpha)) ** g * (1 + alpha) * lp)
    bg = np.where(~yhat, -(1 - lam) * p**g * lq, -(1 - lam) * (1 - (1 - p) ** (1 + beta)) ** g * (1 + beta) * lq)
    return t * fg + (1 - t) * bg


def np_adaptive_wce_exp(z, t, valid, beta, gamma, base, smooth):
    """q = beta base^(gamma (2 alpha - 1)), alpha = smoothed non-crack fraction per channel over the batch."""
    _, lp, lq = logs(z)
    n_valid = valid.sum(axis=(0, 2, 3))
    n_pos = np.where(valid, t, 0.0).sum(axis=(0, 2, 3))
    alpha = (n_valid - n_pos + smooth) / (n_valid + 2 * smooth)
    q = (beta * base ** (gamma * (2 * alpha - 1)))[None, :, None, None]
    return -(q * t * lp + (1 - t) * lq)


def np_dibe_reg(p, t, valid, scope, gamma, alpha, eps=1.0):
    return (-np.log(np_tversky_index(p, t, valid, scope, alpha, 1 - alpha, eps))) ** (1 / gamma)


def np_unified(z, t, valid, scope, lam, delta, g, asymmetric, eps=1e-7):
    """Unified Focal as LOSSES.md states the authors' code (independent of the fastseg code path)."""
    p = np_sigmoid(z)
    ce1 = -t * np.log(p)
    ce0 = -(1 - t) * np.log(1 - p)
    focal = (1 - delta) * p**g * ce0 + delta * (1 if asymmetric else (1 - p) ** g) * ce1
    tp1 = np_gsum(p * t, valid, scope)
    fn1 = np_gsum((1 - p) * t, valid, scope)
    fp1 = np_gsum(p * (1 - t), valid, scope)
    tp0 = np_gsum((1 - p) * (1 - t), valid, scope)
    fn0, fp0 = fp1, fn1
    ti1 = (tp1 + eps) / (tp1 + delta * fn1 + (1 - delta) * fp1 + eps)
    ti0 = (tp0 + eps) / (tp0 + delta * fn0 + (1 - delta) * fp0 + eps)
    back = (1 - ti0) if asymmetric else (1 - ti0) ** (1 - g)
    fore = (1 - ti1) ** (1 - g)
    return focal, (back + fore) / 2


# name -> (torch kwargs, function(z, t, valid, scope) -> (pointwise map, per-group region, w_point, w_region))
def _spec(name, kw, parts):
    return pytest.param(name, kw, parts, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}")


SPECS = [
    _spec("bce_dice", {}, lambda z, t, v, s: (np_bce(z, t), np_dice(np_sigmoid(z), t, v, s), 1, 1)),
    _spec("bce_dice", {"eps": 0.3}, lambda z, t, v, s: (np_bce(z, t), np_dice(np_sigmoid(z), t, v, s, 0.3), 1, 1)),
    _spec("combo", {}, lambda z, t, v, s: (np_wbce(z, t, 0.5), np_dice(np_sigmoid(z), t, v, s), 0.5, 0.5)),
    _spec("combo", {"theta": 0.2, "lam": 0.9}, lambda z, t, v, s: (np_wbce(z, t, 0.9), np_dice(np_sigmoid(z), t, v, s), 0.2, 0.8)),
    _spec(
        "exp_log",
        {},
        lambda z, t, v, s: (np_el_ce(z, t, None, 1.0), -np.log(1 - np_dice(np_sigmoid(z), t, v, s)), 0.5, 0.5),
    ),
    _spec(
        "exp_log",
        {"theta": 0.7, "lam": 0.8, "gamma_ce": 0.3, "gamma_dc": 0.4, "eps": 2.0},
        lambda z, t, v, s: (
            np_el_ce(z, t, 0.8, 0.3),
            (-np.log(1 - np_dice(np_sigmoid(z), t, v, s, 2.0))) ** 0.4,
            0.7,
            0.3,
        ),
    ),
    _spec(
        "hybrid_focal",
        {},
        lambda z, t, v, s: (np_focal(z, t, 2.0, None), np_focal_tversky(np_sigmoid(z), t, v, s), 0.5, 0.5),
    ),
    _spec(
        "hybrid_focal",
        {"lam": 0.3, "gamma_f": 1.5, "class_weight": 0.25, "gamma": 4 / 3, "alpha": 0.6, "beta": 0.2},
        lambda z, t, v, s: (
            np_focal(z, t, 1.5, 0.25),
            np_focal_tversky(np_sigmoid(z), t, v, s, 4 / 3, 0.6, 0.2),
            0.3,
            0.7,
        ),
    ),
    _spec(
        "hybrid_focal",
        {"asymmetric": True},
        lambda z, t, v, s: (np_asym_focal(z, t, 2.0, None), np_focal_tversky(np_sigmoid(z), t, v, s), 1, 1),
    ),
    _spec(
        "hybrid_focal",
        {"asymmetric": True, "lam": 0.4, "class_weight": 0.7, "delta": 0.8},
        lambda z, t, v, s: (
            np_asym_focal(z, t, 2.0, 0.7),
            np_focal_tversky(np_sigmoid(z), t, v, s, 0.75, 0.2, 0.8),
            0.4,
            0.6,
        ),
    ),
    _spec(
        "hybrid_focal_margin",
        {},
        lambda z, t, v, s: (np_afm(z, t, 2.0, 0.5), np_focal_tversky(np_sigmoid(z), t, v, s, 0.75, 0.3, 0.7), 1, 1),
    ),
    _spec(
        "hybrid_focal_margin",
        {"m": 1.5, "gamma_f": 1.0, "gamma": 1.2, "delta": 0.4},
        lambda z, t, v, s: (np_afm(z, t, 1.0, 1.5), np_focal_tversky(np_sigmoid(z), t, v, s, 1.2, 0.6, 0.4), 1, 1),
    ),
    _spec(
        "hybrid_focal_margin",
        {"symmetric": True},
        lambda z, t, v, s: (np_fm(z, t, 2.0, 0.5), np_focal_tversky(np_sigmoid(z), t, v, s, 0.75, 0.3, 0.7), 0.5, 0.5),
    ),
    _spec(
        "hybrid_focal_margin",
        {"symmetric": True, "lam": 0.8, "m": 1.0},
        lambda z, t, v, s: (np_fm(z, t, 2.0, 1.0), np_focal_tversky(np_sigmoid(z), t, v, s, 0.75, 0.3, 0.7), 0.8, 0.2),
    ),
    _spec(
        "unified_focal",
        {},
        lambda z, t, v, s: (*np_unified(z, t, v, s, 0.5, 0.6, 0.5, True), 0.5, 0.5),
    ),
    _spec(
        "unified_focal",
        {"asymmetric": False, "lam": 0.3, "delta": 0.7, "gamma": 0.2},
        lambda z, t, v, s: (*np_unified(z, t, v, s, 0.3, 0.7, 0.2, False), 0.7, 0.3),
    ),
    _spec(
        "dibe",
        {},
        lambda z, t, v, s: (np_dibe_dis(z, t, 0.75, 2.0, 0.3, 0.7), np_dibe_reg(np_sigmoid(z), t, v, s, 2.0, 0.3), 0.5, 0.5),
    ),
    _spec(
        "dibe",
        {"theta": 0.3, "lam": 0.4, "gamma": 1.5, "alpha": 0.8, "eps": 0.5},
        lambda z, t, v, s: (
            np_dibe_dis(z, t, 0.4, 1.5, 0.8, 0.2),
            np_dibe_reg(np_sigmoid(z), t, v, s, 1.5, 0.8, 0.5),
            0.3,
            0.7,
        ),
    ),
    _spec(
        "holistic",
        {},
        lambda z, t, v, s: (np_adaptive_wce_exp(z, t, v, 1.0, 1.0, 10.0, 1.0), np_jaccard(np_sigmoid(z), t, v, s), 1, 1),
    ),
    _spec(
        "holistic",
        {"a": 20.0, "b": 0.5, "beta": 0.75, "gamma": 0.5, "base": 4.0, "eps": 0.2},
        lambda z, t, v, s: (
            np_adaptive_wce_exp(z, t, v, 0.75, 0.5, 4.0, 1.0),
            np_jaccard(np_sigmoid(z), t, v, s, 0.2),
            20.0,
            0.5,
        ),
    ),
]


@pytest.mark.parametrize("name,kw,parts", SPECS)
@pytest.mark.parametrize("kind", ["soft+mask", "image-ignored"])
def test_matches_numpy(name, kw, parts, kind):
    z, target, ignore, valid, t_np = make_case(kind, seed=21)
    weight = torch.rand(z.shape, dtype=torch.float64) * 2
    fn = getattr(C, name)
    for scope in ("image", "batch"):
        point, region, w_point, w_region = parts(z.numpy(), t_np, valid, scope)
        for reduction, w in (("mean", None), ("mean", weight), ("sum", weight)):
            w_np = 1.0 if w is None else w.numpy()
            want = w_point * np_point_reduce(point, valid, w_np, reduction) + w_region * np_reduce(region, valid, scope, reduction)
            got = fn(z, target, scope=scope, reduction=reduction, ignore=ignore, weight=w, **kw)
            np.testing.assert_allclose(got.item(), want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {scope} {reduction}")


# ----------------------------------------------------------------------------------------------
# Unified Focal: the authors' code, and a case worked by hand
# ----------------------------------------------------------------------------------------------


def authors_unified_focal(p, t, weight=0.5, delta=0.6, gamma=0.5, asymmetric=True):
    """NumPy transcription of mlyg/unified-focal-loss loss_functions.py (binary, channels last)."""
    y_pred = np.stack([1 - p, p], axis=-1)
    y_true = np.stack([1 - t, t], axis=-1)
    epsilon = 1e-7  # K.epsilon()
    y_pred = np.clip(y_pred, epsilon, 1.0 - epsilon)
    # (a)symmetric_focal_loss
    cross_entropy = -y_true * np.log(y_pred)
    back_ce = (1 - delta) * np.power(1 - y_pred[..., 0], gamma) * cross_entropy[..., 0]
    fore_ce = cross_entropy[..., 1] if asymmetric else np.power(1 - y_pred[..., 1], gamma) * cross_entropy[..., 1]
    fore_ce = delta * fore_ce
    focal = np.mean(np.sum(np.stack([back_ce, fore_ce], axis=-1), axis=-1))
    # (a)symmetric_focal_tversky_loss
    axis = (1, 2)
    tp = np.sum(y_true * y_pred, axis=axis)
    fn = np.sum(y_true * (1 - y_pred), axis=axis)
    fp = np.sum((1 - y_true) * y_pred, axis=axis)
    dice_class = (tp + epsilon) / (tp + delta * fn + (1 - delta) * fp + epsilon)
    back_dice = 1 - dice_class[:, 0]
    if not asymmetric:
        back_dice = back_dice * np.power(1 - dice_class[:, 0], -gamma)
    fore_dice = (1 - dice_class[:, 1]) * np.power(1 - dice_class[:, 1], -gamma)
    ftl = np.mean(np.stack([back_dice, fore_dice], axis=-1))
    return weight * ftl + (1 - weight) * focal


@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize("params", [{}, {"lam": 0.2, "delta": 0.7, "gamma": 0.3}])
def test_unified_focal_matches_authors_code(asymmetric, params):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 1, 5, 6, generator=g, dtype=torch.float64) * 2
    t = (torch.rand(3, 1, 5, 6, generator=g) < 0.3).to(torch.float64)
    p = np_sigmoid(z.numpy())[:, 0]
    full = {"lam": 0.5, "delta": 0.6, "gamma": 0.5, **params}
    want = authors_unified_focal(p, t.numpy()[:, 0], full["lam"], full["delta"], full["gamma"], asymmetric)
    got = C.unified_focal(z, t, asymmetric=asymmetric, **params)
    np.testing.assert_allclose(got.item(), want, rtol=1e-9)


def test_unified_focal_two_pixels_by_hand():
    """One image, p = (0.8, 0.3), t = (1, 0); lam = 0.5, delta = 0.6, g = 0.5, e = 1e-7."""
    p = torch.tensor([0.8, 0.3], dtype=torch.float64).reshape(1, 1, 1, 2)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64).reshape(1, 1, 1, 2)
    e, delta, g = 1e-7, 0.6, 0.5
    # foreground: TP=0.8, FN=0.2, FP=0.3; background (p0=(0.2,0.7), t0=(0,1)): TP=0.7, FN=0.3, FP=0.2
    ti1 = (0.8 + e) / (0.8 + delta * 0.2 + (1 - delta) * 0.3 + e)
    ti0 = (0.7 + e) / (0.7 + delta * 0.3 + (1 - delta) * 0.2 + e)
    # pixel 1 (t=1) has only the foreground CE, pixel 2 (t=0) only the background CE
    back_ce = (1 - delta) * 0.3**g * -math.log(0.7)
    asym_focal = (delta * -math.log(0.8) + back_ce) / 2
    sym_focal = (delta * 0.2**g * -math.log(0.8) + back_ce) / 2
    asym_ft = ((1 - ti0) + (1 - ti1) ** (1 - g)) / 2
    sym_ft = ((1 - ti0) ** (1 - g) + (1 - ti1) ** (1 - g)) / 2
    got_a = C.unified_focal(p, t, from_logits=False)
    got_s = C.unified_focal(p, t, from_logits=False, asymmetric=False)
    assert got_a.item() == pytest.approx(0.5 * asym_ft + 0.5 * asym_focal, rel=1e-12)
    assert got_s.item() == pytest.approx(0.5 * sym_ft + 0.5 * sym_focal, rel=1e-12)
    z = torch.log(p / (1 - p))
    assert C.unified_focal(z, t).item() == pytest.approx(got_a.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# Reductions between forms
# ----------------------------------------------------------------------------------------------


def test_hybrid_focal_margin_without_margin_is_seed000_hybrid_focal():
    """Seed 000: aFM with m = 0 is aF, so eq 14 with m = 0 is eq 15."""
    z, target, ignore, _, _ = make_case("soft+mask", seed=4)
    a = C.hybrid_focal_margin(z, target, m=0.0, ignore=ignore)
    b = C.hybrid_focal(z, target, asymmetric=True, delta=0.7, ignore=ignore)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_dibe_theta_one_is_dibe_dis():
    """theta = 1 leaves DIBE_Dis alone (here with alpha = 0, beta = 1 - alpha = 1)."""
    z, target, _, valid, t_np = make_case("hard", seed=9)
    got = C.dibe(z, target, theta=1.0, alpha=0.0, lam=0.5, gamma=1.0)
    want = np_point_reduce(np_dibe_dis(z.numpy(), t_np, 0.5, 1.0, 0.0, 1.0), valid, 1.0, "mean")
    np.testing.assert_allclose(got.item(), want, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Edge cases and gradients
# ----------------------------------------------------------------------------------------------

NAMES = list(C.__all__)


def _edge_inputs(dtype):
    t = torch.zeros(4, 1, 4, 4)
    t[1] = 1
    t[2, :, 1:3, :] = 1
    t[3, :, :, 2] = 1
    z = torch.where(t > 0, 80.0, -80.0)
    z[0] = -80.0
    z[3] = -z[3]
    return z.to(dtype), t


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype,scope", [(torch.float32, "image"), (torch.float16, "batch")])
def test_edge_cases_are_finite(name, dtype, scope):
    """Crack-free, all-crack, perfect (|z| = 80) and confidently wrong images, with ignore masks."""
    z, t = _edge_inputs(dtype)
    ignore = torch.zeros(4, 1, 4, 4, dtype=torch.bool)
    fn = getattr(C, name)
    for ign in (None, ignore.index_fill(0, torch.tensor([1]), True), torch.ones_like(ignore)):
        zz = z.clone().requires_grad_()
        loss = fn(zz, t, scope=scope, ignore=ign)
        loss.backward()
        assert torch.isfinite(loss), (name, loss)
        assert torch.isfinite(zz.grad.float()).all(), name


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_finite_gradient(name):
    t = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    t[:, :, 2:4, :] = 1
    for magnitude in (80.0, 20.0):
        z = torch.where(t > 0, magnitude, -magnitude).requires_grad_()
        loss = getattr(C, name)(z, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all(), (name, magnitude)


def test_crack_free_batch_penalises_false_positives():
    z = torch.full((2, 1, 4, 4), 1.0, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    for name in NAMES:
        z.grad = None
        getattr(C, name)(z, t).backward()
        assert (z.grad > 0).all(), name


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    z, target, ignore, _, _ = make_case("soft+mask", shape=(2, 1, 2, 2), seed=17)
    z = z.clone().requires_grad_()
    weight = torch.rand(z.shape, dtype=torch.float64) + 0.5
    fn = getattr(C, name)
    assert torch.autograd.gradcheck(lambda x: fn(x, target, ignore=ignore, weight=weight), (z,))
    x1, t1 = z[:1, :, :, :].detach().clone().requires_grad_(), target[:1]
    assert torch.autograd.gradcheck(lambda x: fn(x, t1, scope="batch", reduction="sum"), (x1,), fast_mode=True)


# ----------------------------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------------------------


BAD = [(name, {"reduction": "none"}, "reduction") for name in NAMES] + [
    ("bce_dice", {"scope": "pixel"}, "scope"),
    ("bce_dice", {"eps": 0.0}, "eps"),
    ("combo", {"theta": 1.5}, "theta"),
    ("combo", {"lam": -0.1}, "lam"),
    ("exp_log", {"gamma_dc": 0.0}, "gamma_dc"),
    ("exp_log", {"gamma_ce": -1.0}, "gamma_ce"),
    ("exp_log", {"eps": -1.0}, "eps"),
    ("hybrid_focal", {"lam": 2.0}, "lam"),
    ("hybrid_focal", {"gamma_f": -1.0}, "gamma_f"),
    ("hybrid_focal", {"gamma": -0.1}, "gamma"),
    ("hybrid_focal", {"class_weight": 1.1}, "class_weight"),
    ("hybrid_focal", {"alpha": -0.3}, "alpha"),
    ("unified_focal", {"delta": 1.5}, "delta"),
    ("unified_focal", {"gamma": -0.5}, "gamma"),
    ("unified_focal", {"gamma": 1.5}, "gamma"),
    ("unified_focal", {"lam": -0.5}, "lam"),
    ("unified_focal", {"eps": 0.0}, "eps"),
    ("hybrid_focal_margin", {"m": -0.5}, "m"),
    ("hybrid_focal_margin", {"delta": 1.5}, "delta"),
    ("hybrid_focal_margin", {"gamma_f": -2.0}, "gamma_f"),
    ("dibe", {"alpha": 1.2}, "alpha"),
    ("dibe", {"gamma": 0.0}, "gamma"),
    ("dibe", {"theta": -0.1}, "theta"),
    ("holistic", {"a": -1.0}, "a"),
    ("holistic", {"base": 1.0}, "base"),
    ("holistic", {"q": "cubic"}, "q"),
]


@pytest.mark.parametrize("name,kwargs,arg", BAD)
def test_bad_arguments_raise(name, kwargs, arg):
    z = torch.zeros(1, 1, 2, 2)
    t = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        getattr(C, name)(z, t, **kwargs)


def test_all_exported():
    assert sorted(C.__all__) == sorted(
        ["bce_dice", "combo", "exp_log", "hybrid_focal", "unified_focal", "hybrid_focal_margin", "dibe", "holistic"]
    )
