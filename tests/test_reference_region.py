"""Region reference losses (fastseg.reference.region) against NumPy, MONAI and their identities.

The NumPy helpers below are an independent transcription of the catalog formulas (they are also
used by tests/test_reference_compound.py): group sums over valid pixels, per image-channel
("image") or per channel over the batch ("batch"), groups without valid pixels dropped from the mean.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastseg.reference import region as R

# ----------------------------------------------------------------------------------------------
# NumPy oracle
# ----------------------------------------------------------------------------------------------


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_gsum(x, valid, scope):
    """Sum over valid pixels: [B, C] for "image", [C] for "batch"."""
    x = np.where(valid, x, 0.0)
    s = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
    return s if scope == "image" else s.sum(axis=0)


def np_present(valid, scope):
    v = valid.reshape(valid.shape[0], valid.shape[1], -1).any(axis=2)
    return v if scope == "image" else v.any(axis=0)


def np_reduce(per_group, valid, scope, reduction):
    present = np_present(valid, scope)
    per_group = np.where(present, per_group, 0.0)
    if reduction == "none":
        return per_group
    if reduction == "sum":
        return per_group.sum()
    return per_group.sum() / max(present.sum(), 1)


def np_stats(p, t, valid, scope):
    tp = np_gsum(p * t, valid, scope)
    sp = np_gsum(p, valid, scope)
    st = np_gsum(t, valid, scope)
    return tp, sp, st


def np_dice(p, t, valid, scope, eps=1.0):
    tp, sp, st = np_stats(p, t, valid, scope)
    return 1 - (2 * tp + eps) / (sp + st + eps)


def np_squared_dice(p, t, valid, scope, eps=1.0):
    tp = np_gsum(p * t, valid, scope)
    return 1 - (2 * tp + eps) / (np_gsum(t * t, valid, scope) + np_gsum(p * p, valid, scope) + eps)


def np_jaccard(p, t, valid, scope, eps=1.0):
    tp, sp, st = np_stats(p, t, valid, scope)
    return 1 - (tp + eps) / (st + sp - tp + eps)


def np_tversky_index(p, t, valid, scope, alpha, beta, eps):
    tp, sp, st = np_stats(p, t, valid, scope)
    fp, fn = sp - tp, st - tp
    return (tp + eps) / (tp + alpha * fp + beta * fn + eps)


def np_tversky(p, t, valid, scope, alpha=0.3, beta=0.7, eps=1.0):
    return 1 - np_tversky_index(p, t, valid, scope, alpha, beta, eps)


def np_focal_tversky(p, t, valid, scope, gamma=0.75, alpha=0.3, beta=0.7, eps=1.0):
    return (1 - np_tversky_index(p, t, valid, scope, alpha, beta, eps)) ** gamma


def np_dibe_reg(p, t, valid, scope, gamma=1.5, alpha=0.3, beta=0.7, eps=1.0):
    return (-np.log(np_tversky_index(p, t, valid, scope, alpha, beta, eps))) ** (1 / gamma)


def np_log_cosh_dice(p, t, valid, scope, eps=1.0):
    return np.log(np.cosh(np_dice(p, t, valid, scope, eps)))


def np_sens_spec(p, t, valid, scope, w=0.05, eps=1e-6):
    sq = (t - p) ** 2
    sens = np_gsum(sq * t, valid, scope) / (np_gsum(t, valid, scope) + eps)
    spec = np_gsum(sq * (1 - t), valid, scope) / (np_gsum(1 - t, valid, scope) + eps)
    return w * sens + (1 - w) * spec


# name -> list of (torch kwargs, numpy kwargs): defaults first, then non-default parameters.
CASES = {
    "dice": (np_dice, [({}, {}), ({"eps": 0.25}, {"eps": 0.25})]),
    "squared_dice": (np_squared_dice, [({}, {}), ({"eps": 2.0}, {"eps": 2.0})]),
    "jaccard": (np_jaccard, [({}, {}), ({"eps": 0.1}, {"eps": 0.1})]),
    "tversky": (
        np_tversky,
        [({}, {}), ({"alpha": 0.8, "beta": 0.15, "eps": 0.5}, {"alpha": 0.8, "beta": 0.15, "eps": 0.5}),
         ({"delta": 0.4}, {"alpha": 0.6, "beta": 0.4})],
    ),
    "focal_tversky": (
        np_focal_tversky,
        [({}, {}), ({"gamma": 4 / 3, "alpha": 0.6, "beta": 0.2}, {"gamma": 4 / 3, "alpha": 0.6, "beta": 0.2}),
         ({"gamma": 2.0, "delta": 0.9, "eps": 0.3}, {"gamma": 2.0, "alpha": 0.1, "beta": 0.9, "eps": 0.3})],
    ),
    "dibe_reg": (
        np_dibe_reg,
        [({}, {}), ({"gamma": 0.6, "alpha": 0.2, "beta": 0.5, "eps": 0.5}, {"gamma": 0.6, "alpha": 0.2, "beta": 0.5, "eps": 0.5}),
         ({"alpha": 0.9}, {"alpha": 0.9, "beta": 0.1})],
    ),
    "log_cosh_dice": (np_log_cosh_dice, [({}, {}), ({"eps": 0.5}, {"eps": 0.5})]),
    "sensitivity_specificity": (np_sens_spec, [({}, {}), ({"w": 0.7, "eps": 0.5}, {"w": 0.7, "eps": 0.5})]),
}

KINDS = ["hard", "soft+mask", "index", "image-ignored"]
# defaults on every kind of case; the other parameter sets on soft labels with ignored pixels
PARAM_CASES = [
    (name, i, kind)
    for name, (_, variants) in CASES.items()
    for i in range(len(variants))
    for kind in (KINDS if i == 0 else KINDS[1::2])
]


def make_case(kind: str, shape=(3, 2, 4, 5), seed: int = 0):
    """(logits, target tensor, ignore argument, valid numpy mask, target numpy) for a case kind."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    hard = (torch.rand(shape, generator=g) < 0.3).to(torch.float64)
    soft = torch.rand(shape, generator=g, dtype=torch.float64)
    mask = torch.rand(shape, generator=g) < 0.25
    valid = np.ones(shape, dtype=bool)
    if kind == "hard":
        return z, hard, None, valid, hard.numpy()
    if kind == "soft":
        return z, soft, None, valid, soft.numpy()
    if kind == "soft+mask":
        return z, soft, mask, ~mask.numpy(), np.where(mask.numpy(), 0.0, soft.numpy())
    if kind == "index":  # integer labels with ignore_index 255
        target = torch.where(mask, torch.full(shape, 255), hard.long())
        return z, target, 255, ~mask.numpy(), np.where(mask.numpy(), 0.0, hard.numpy())
    if kind == "image-ignored":  # image 0 entirely ignored
        mask = mask.clone()
        mask[0] = True
        return z, soft, mask, ~mask.numpy(), np.where(mask.numpy(), 0.0, soft.numpy())
    raise AssertionError(kind)


@pytest.mark.parametrize("name,variant,kind", PARAM_CASES)
@pytest.mark.parametrize("scope", ["image", "batch"])
def test_matches_numpy(name, variant, kind, scope):
    np_fn, variants = CASES[name]
    kw, np_kw = variants[variant]
    z, target, ignore, valid, t_np = make_case(kind)
    p = np_sigmoid(z.numpy())
    per_group = np_fn(p, t_np, valid, scope, **np_kw)
    fn = getattr(R, name)
    for reduction in ("mean", "sum", "none"):
        got = fn(z, target, scope=scope, reduction=reduction, ignore=ignore, **kw)
        want = np_reduce(per_group, valid, scope, reduction)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {reduction}")


@pytest.mark.parametrize("name", list(CASES))
def test_probabilities_input_and_weight_refused(name):
    """from_logits=False takes p directly; a weight map, which a region term cannot use, raises."""
    z, target, ignore, valid, t_np = make_case("soft+mask", seed=3)
    p = torch.sigmoid(z)
    np_fn, _ = CASES[name]
    want = np_reduce(np_fn(p.numpy(), t_np, valid, "image"), valid, "image", "mean")
    fn = getattr(R, name)
    got = fn(p, target, from_logits=False, ignore=ignore)
    np.testing.assert_allclose(got.item(), want, rtol=1e-10)
    w = torch.rand(z.shape, dtype=torch.float64) * 3
    with pytest.raises(ValueError, match="weight must be None"):
        fn(z, target, ignore=ignore, weight=w)


def test_target_without_channel_dim():
    z, target, _, valid, t_np = make_case("hard", shape=(2, 1, 5, 4))
    want = np_reduce(np_dice(np_sigmoid(z.numpy()), t_np, valid, "image"), valid, "image", "mean")
    np.testing.assert_allclose(R.dice(z, target[:, 0]).item(), want, rtol=1e-12)


def test_3d_input():
    z, target, _, valid, t_np = make_case("soft", shape=(2, 1, 3, 4, 5))
    want = np_reduce(np_jaccard(np_sigmoid(z.numpy()), t_np, valid, "batch"), valid, "batch", "mean")
    np.testing.assert_allclose(R.jaccard(z, target, scope="batch").item(), want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Identities and peers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["image", "batch"])
@pytest.mark.parametrize("kind", ["soft", "soft+mask"])
def test_tversky_half_half_is_dice(scope, kind):
    """(TP + e)/(TP + (FP + FN)/2 + e) = (2TP + 2e)/(2TP + FP + FN + 2e): Dice with eps = 2e."""
    z, target, ignore, _, _ = make_case(kind, seed=5)
    for reduction in ("mean", "none"):
        for eps in (1.0, 1e-9):
            a = R.tversky(z, target, alpha=0.5, beta=0.5, eps=eps, scope=scope, reduction=reduction, ignore=ignore)
            b = R.dice(z, target, eps=2 * eps, scope=scope, reduction=reduction, ignore=ignore)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scope", ["image", "batch"])
def test_focal_tversky_exponent_one_is_tversky(scope):
    z, target, ignore, _, _ = make_case("soft+mask", seed=6)
    for kw in ({}, {"alpha": 0.7, "beta": 0.1}, {"delta": 0.35}):
        a = R.focal_tversky(z, target, gamma=1.0, scope=scope, reduction="none", ignore=ignore, **kw)
        b = R.tversky(z, target, scope=scope, reduction="none", ignore=ignore, **kw)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_delta_form_is_alpha_beta_pair():
    z, target, _, _, _ = make_case("soft", seed=7)
    a = R.focal_tversky(z, target, delta=0.7)
    b = R.focal_tversky(z, target, alpha=0.3, beta=0.7)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    torch.testing.assert_close(R.focal_tversky(z, target), b, rtol=1e-12, atol=0)  # default pair


@pytest.mark.parametrize("scope", ["image", "batch"])
@pytest.mark.parametrize("kind,eps", [("hard", 1.0), ("soft", 1e-3)])
def test_dice_and_tversky_match_monai(scope, kind, eps):
    monai_losses = pytest.importorskip("monai.losses")
    z, target, _, _, _ = make_case(kind, seed=8)
    batch = scope == "batch"
    m_dice = monai_losses.DiceLoss(sigmoid=True, smooth_nr=eps, smooth_dr=eps, batch=batch, include_background=True, reduction="none")
    m_tv = monai_losses.TverskyLoss(
        sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=eps, smooth_dr=eps, batch=batch, include_background=True, reduction="none"
    )
    want_dice = m_dice(z, target).reshape(-1)
    want_tv = m_tv(z, target).reshape(-1)
    got_dice = R.dice(z, target, eps=eps, scope=scope, reduction="none").reshape(-1)
    got_tv = R.tversky(z, target, alpha=0.3, beta=0.7, eps=eps, scope=scope, reduction="none").reshape(-1)
    torch.testing.assert_close(got_dice, want_dice.to(got_dice.dtype), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_tv, want_tv.to(got_tv.dtype), rtol=1e-6, atol=1e-7)
    m_dice_mean = monai_losses.DiceLoss(sigmoid=True, smooth_nr=eps, smooth_dr=eps, batch=batch)
    torch.testing.assert_close(R.dice(z, target, eps=eps, scope=scope), m_dice_mean(z, target).to(torch.float64), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scope", ["image", "batch"])
@pytest.mark.parametrize("kind,eps", [("hard", 1.0), ("soft", 1e-3)])
def test_squared_dice_matches_monai_squared_pred(scope, kind, eps):
    monai_losses = pytest.importorskip("monai.losses")
    z, target, _, _, _ = make_case(kind, seed=9)
    m_sq = monai_losses.DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=eps, smooth_dr=eps,
                                 batch=scope == "batch", reduction="none")
    got = R.squared_dice(z, target, eps=eps, scope=scope, reduction="none").reshape(-1)
    torch.testing.assert_close(got, m_sq(z, target).reshape(-1).to(got.dtype), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Edge cases: crack-free, all-crack, fully ignored, perfect and extreme predictions
# ----------------------------------------------------------------------------------------------


def test_crack_free_image_penalises_false_positives():
    z = torch.full((1, 1, 4, 4), 2.0, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    loss = R.dice(z, t)
    sum_p = 16 / (1 + math.exp(-2.0))
    assert loss.item() == pytest.approx(1 - 1 / (sum_p + 1), rel=1e-12)
    loss.backward()
    assert torch.isfinite(z.grad).all() and (z.grad > 0).all()  # descent lowers every logit
    for name in ("jaccard", "tversky", "focal_tversky", "dibe_reg", "squared_dice", "log_cosh_dice"):
        z.grad = None
        loss = getattr(R, name)(z, t)
        loss.backward()
        assert loss.item() > 0.01, name
        assert (z.grad > 0).all(), name


def _edge_inputs(dtype):
    """Batch of 4 images: crack-free, all-crack, perfect mixed (|z| = 80), confidently wrong."""
    t = torch.zeros(4, 1, 4, 4)
    t[1] = 1
    t[2, :, 1:3, :] = 1
    t[3, :, :, 2] = 1
    z = torch.where(t > 0, 80.0, -80.0)
    z[0] = -80.0
    z[3] = -z[3]  # every pixel wrong
    return z.to(dtype), t


ALL = list(CASES)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype,scope", [(torch.float32, "image"), (torch.float16, "batch")])
def test_edge_cases_are_finite(name, dtype, scope):
    z, t = _edge_inputs(dtype)
    ignore = torch.zeros(4, 1, 4, 4, dtype=torch.bool)
    fn = getattr(R, name)
    for ign in (None, ignore, ignore.index_fill(0, torch.tensor([2]), True), torch.ones_like(ignore)):
        zz = z.clone().requires_grad_()
        loss = fn(zz, t, scope=scope, ignore=ign)
        loss.backward()
        assert torch.isfinite(loss), (name, loss)
        assert torch.isfinite(zz.grad.float()).all(), name


@pytest.mark.parametrize("name", ALL)
def test_perfect_prediction_is_near_zero_with_finite_gradient(name):
    t = torch.zeros(2, 1, 6, 6, dtype=torch.float64)
    t[:, :, 2:4, :] = 1
    for magnitude in (80.0, 30.0, 12.0):
        z = torch.where(t > 0, magnitude, -magnitude).requires_grad_()
        per_group = getattr(R, name)(z, t, reduction="none")
        per_group.sum().backward()
        assert torch.isfinite(per_group).all() and torch.isfinite(z.grad).all(), (name, magnitude)
        assert per_group.max().item() < 1e-3, (name, magnitude, per_group)


def test_dibe_reg_perfect_prediction_exact_zero_and_bounded_gradient():
    t = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    t[..., 3, :] = 1
    for dtype in (torch.float64, torch.float32):
        z = torch.where(t > 0, 80.0, -80.0).to(dtype).requires_grad_()
        loss = R.dibe_reg(z, t)
        loss.backward()
        # -log Tv = log1p((0.3 FP + 0.7 FN)/(TP + 1)) with FP = 56 sigmoid(-80), FN = 8 sigmoid(-80),
        # TP = 8: 4.5e-35, 100x that below the power's linear floor. 0 up to the round-off of p.
        misses = (0.3 * 56 + 0.7 * 8) / (1 + math.exp(80))
        assert 0.0 <= loss.item() <= 1.0001 * 100 * math.log1p(misses / 9)
        assert torch.isfinite(z.grad).all()
    # near-perfect: Tv -> 1 where the exact gradient (seed 001 eq 23) diverges for gamma > 1
    z = torch.where(t > 0, 25.0, -25.0).requires_grad_()
    R.dibe_reg(z, t).backward()
    assert torch.isfinite(z.grad).all()


def test_fully_ignored_image_counts_nowhere():
    z, target, ignore, _, _ = make_case("soft+mask", seed=11)
    ignore = ignore.clone()
    ignore[0] = True
    for name in ALL:
        fn = getattr(R, name)
        per_group = fn(z, target, ignore=ignore, reduction="none")
        assert (per_group[0] == 0).all(), name
        alone = fn(z[1:], target[1:], ignore=ignore[1:])
        torch.testing.assert_close(fn(z, target, ignore=ignore), alone, rtol=1e-12, atol=1e-14)
    everything = torch.ones_like(ignore)
    assert R.dice(z, target, ignore=everything).item() == 0.0


# ----------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scope", ["image", "batch"])
def test_gradcheck(name, scope):
    z, target, ignore, _, _ = make_case("soft+mask", shape=(2, 1, 2, 3), seed=13)
    z = z.clone().requires_grad_()
    fn = getattr(R, name)
    assert torch.autograd.gradcheck(lambda x: fn(x, target, scope=scope, ignore=ignore, reduction="none"), (z,))


def test_gradcheck_from_probabilities():
    z, target, _, _, _ = make_case("soft", shape=(1, 2, 3, 3), seed=14)
    p = torch.sigmoid(z).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: R.focal_tversky(x, target, from_logits=False, gamma=1.5), (p,))


# ----------------------------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------------------------


BAD = [
    ("dice", {"scope": "pixel"}, "scope"),
    ("dice", {"reduction": "max"}, "reduction"),
    ("dice", {"eps": 0.0}, "eps"),
    ("jaccard", {"eps": -1.0}, "eps"),
    ("squared_dice", {"eps": 0.0}, "eps"),
    ("log_cosh_dice", {"eps": 0.0}, "eps"),
    ("tversky", {"alpha": -0.1}, "alpha"),
    ("tversky", {"beta": -0.1}, "beta"),
    ("tversky", {"delta": 1.2}, "delta"),
    ("tversky", {"delta": 0.5, "alpha": 0.5}, "delta"),
    ("focal_tversky", {"gamma": -0.5}, "gamma"),
    ("focal_tversky", {"eps": 0.0}, "eps"),
    ("dibe_reg", {"gamma": 0.0}, "gamma"),
    ("dibe_reg", {"gamma": -1.0}, "gamma"),
    ("dibe_reg", {"alpha": 1.5}, "alpha"),
    ("dibe_reg", {"alpha": 0.3, "beta": -0.2}, "beta"),
    ("sensitivity_specificity", {"w": 1.5}, "w"),
    ("sensitivity_specificity", {"eps": 0.0}, "eps"),
]


@pytest.mark.parametrize("name,kwargs,arg", BAD)
def test_bad_arguments_raise(name, kwargs, arg):
    z = torch.zeros(1, 1, 2, 2)
    t = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=arg):
        getattr(R, name)(z, t, **kwargs)


def test_all_exported():
    assert sorted(R.__all__) == sorted(CASES)
