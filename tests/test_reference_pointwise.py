"""The pointwise reference losses against independent values.

- NumPy transcriptions of each formula (written here, float64, ``np.log`` of ``sigmoid``; no
  logsigmoid) on small cases: hard and soft labels, C = 2 with 3-D spatial dims, ignore masks,
  ignore_index, weight maps, probabilities, reductions mean/sum/none.
- The reductions the catalog requires (aFM -> aF / aM / BCE, FM -> focal / aM / BCE,
  DIBE_Dis -> focal, focal -> weighted BCE, EL-CE -> weighted BCE).
- Peers: torch's ``binary_cross_entropy_with_logits``, torchvision's ``sigmoid_focal_loss``
  (its published formula transcribed below; torchvision is not installable here) and kornia's
  ``binary_focal_loss_with_logits``.
- ``torch.autograd.gradcheck`` in float64; |z| = 80 and fp16 inputs; crack-free, all-crack and
  fully ignored batches; argument errors.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastseg.reference import pointwise as P

# --------------------------------------------------------------------------------------------
# NumPy transcriptions (per pixel; z logits, t targets, valid mask; float64)
# --------------------------------------------------------------------------------------------


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_bce(z, t, valid):
    p = sig(z)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def np_weighted_bce(z, t, valid, lam=0.5):
    p = sig(z)
    return -(lam * t * np.log(p) + (1 - lam) * (1 - t) * np.log(1 - p))


def _np_counts(t, valid):
    """Per channel (axis 1): crack count sum(t) and valid count, over the valid pixels."""
    axes = (0,) + tuple(range(2, t.ndim))
    n_pos = np.sum(np.where(valid, t, 0.0), axis=axes, keepdims=True)
    n = np.sum(valid, axis=axes, keepdims=True).astype(np.float64)
    return n_pos, n


def np_balanced_bce(z, t, valid):
    n_pos, n = _np_counts(t, valid)
    beta = (n - n_pos) / n  # fraction of negative pixels
    p = sig(z)
    return -(beta * t * np.log(p) + (1 - beta) * (1 - t) * np.log(1 - p))


def np_adaptive_wce(z, t, valid, q="exp", beta=1.0, gamma=None, a=10.0, smooth=1.0):
    n_pos, n = _np_counts(t, valid)
    n_neg = n - n_pos
    alpha = (n_neg + smooth) / (n + 2 * smooth)  # Laplace-smoothed fraction of non-crack pixels
    ratio = alpha / (1 - alpha)
    if q == "xie":
        qa = ratio
    elif q == "power":
        qa = beta * ratio ** (0.5 if gamma is None else gamma)
    elif q == "log":
        qa = beta * np.maximum(np.log(ratio), 0.0)
    else:
        qa = beta * a ** ((1.0 if gamma is None else gamma) * (2 * alpha - 1))
    p = sig(z)
    return -(qa * t * np.log(p) + (1 - t) * np.log(1 - p))


def np_focal(z, t, valid, gamma=2.0, lam=None):
    p = sig(z)
    w1, w0 = (1.0, 1.0) if lam is None else (lam, 1 - lam)
    return -(w1 * (1 - p) ** gamma * t * np.log(p) + w0 * p**gamma * (1 - t) * np.log(1 - p))


def np_asymmetric_focal(z, t, valid, gamma=2.0, delta=None):
    p = sig(z)
    w1, w0 = (1.0, 1.0) if delta is None else (delta, 1 - delta)
    return -(w1 * t * np.log(p) + w0 * p**gamma * (1 - t) * np.log(1 - p))


def np_asymmetric_margin(z, t, valid, m=0.5):
    p, p_hat = sig(z), sig(z - m)
    return -(t * np.log(p_hat) + (1 - t) * np.log(1 - p))


def np_asymmetric_focal_margin(z, t, valid, gamma=2.0, m=0.5):
    p, p_hat = sig(z), sig(z - m)
    return -(t * np.log(p_hat) + p**gamma * (1 - t) * np.log(1 - p))


def np_focal_margin(z, t, valid, gamma=2.0, m=0.5):
    p, p_hat = sig(z), sig(z - m)
    return -((1 - p) ** gamma * t * np.log(p_hat) + p**gamma * (1 - t) * np.log(1 - p))


def np_el_ce(z, t, valid, lam=None, gamma_ce=1.0):
    p = sig(z)
    w1, w0 = (1.0, 1.0) if lam is None else (lam, 1 - lam)
    return w1 * t * (-np.log(p)) ** gamma_ce + w0 * (1 - t) * (-np.log(1 - p)) ** gamma_ce


def np_dibe_dis(z, t, valid, lam=0.75, gamma=2.0, alpha=0.3, beta=None):
    beta = 1 - alpha if beta is None else beta
    p = sig(z)
    yhat = p >= 0.5
    y1 = np.where(
        yhat,
        -lam * (1 - p) ** gamma * np.log(p),
        -lam * (1 - p ** (1 + alpha)) ** gamma * (1 + alpha) * np.log(p),
    )
    y0 = np.where(
        ~yhat,
        -(1 - lam) * p**gamma * np.log(1 - p),
        -(1 - lam) * (1 - (1 - p) ** (1 + beta)) ** gamma * (1 + beta) * np.log(1 - p),
    )
    return t * y1 + (1 - t) * y0


def np_reduce(per, valid, weight, reduction):
    per = per if weight is None else per * weight
    per = np.where(valid, per, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / valid.sum()


# (loss name, keyword parameters, NumPy transcription)
CASES = [
    ("bce", {}, np_bce),
    ("weighted_bce", {}, np_weighted_bce),
    ("weighted_bce", {"lam": 0.8}, np_weighted_bce),
    ("balanced_bce", {}, np_balanced_bce),
    ("adaptive_wce", {}, np_adaptive_wce),
    ("adaptive_wce", {"q": "xie"}, np_adaptive_wce),
    ("adaptive_wce", {"q": "xie", "smooth": 0.0}, np_adaptive_wce),
    ("adaptive_wce", {"q": "power", "beta": 0.5}, np_adaptive_wce),
    ("adaptive_wce", {"q": "power", "beta": 0.85, "gamma": 1 / 3}, np_adaptive_wce),
    ("adaptive_wce", {"q": "log", "beta": 0.9}, np_adaptive_wce),
    ("adaptive_wce", {"q": "exp", "beta": 0.75, "gamma": 0.6, "a": 4.0, "smooth": 0.5}, np_adaptive_wce),
    ("focal", {}, np_focal),
    ("focal", {"gamma": 1.5, "lam": 0.25}, np_focal),
    ("asymmetric_focal", {}, np_asymmetric_focal),
    ("asymmetric_focal", {"gamma": 0.7, "delta": 0.6}, np_asymmetric_focal),
    ("asymmetric_margin", {}, np_asymmetric_margin),
    ("asymmetric_margin", {"m": 1.5}, np_asymmetric_margin),
    ("asymmetric_focal_margin", {}, np_asymmetric_focal_margin),
    ("asymmetric_focal_margin", {"gamma": 1.0, "m": 1.0}, np_asymmetric_focal_margin),
    ("focal_margin", {}, np_focal_margin),
    ("focal_margin", {"gamma": 0.5, "m": 1.5}, np_focal_margin),
    ("el_ce", {}, np_el_ce),
    ("el_ce", {"lam": 0.3, "gamma_ce": 0.5}, np_el_ce),
    ("el_ce", {"lam": 0.7, "gamma_ce": 2.0}, np_el_ce),
    ("dibe_dis", {}, np_dibe_dis),
    ("dibe_dis", {"lam": 0.25, "gamma": 1.0, "alpha": 0.7, "beta": 0.2}, np_dibe_dis),
]


def _case_id(name, params):
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return "-".join([name, *parts]) if parts else f"{name}-default"


CASE_IDS = [_case_id(n, kw) for n, kw, _ in CASES]

SCENARIOS = ["hard", "soft", "multi3d", "mask", "index", "weight", "probs"]


def make_scenario(kind: str, rng: np.random.Generator):
    """(input, target, call kwargs, z, t, valid, weight) with NumPy views of the same values."""
    shape = (2, 2, 2, 3, 3) if kind == "multi3d" else (2, 1, 3, 5)
    z = rng.uniform(-3.0, 3.0, size=shape)
    if kind == "multi3d":  # channel 0 sparse (~20 %), channel 1 dense (~60 %): per-channel fractions differ
        t = (rng.uniform(size=shape) < np.array([0.2, 0.6]).reshape(1, 2, 1, 1, 1)).astype(np.float64)
    elif kind == "soft":
        t = rng.uniform(size=shape)
    else:
        t = (rng.uniform(size=shape) < 0.3).astype(np.float64)
    t.flat[0], t.flat[1] = 1.0, 0.0  # both classes present
    valid = np.ones(shape, dtype=bool)
    weight = None
    kwargs = {}
    input = torch.tensor(z)
    target = torch.tensor(t)
    if kind == "hard":
        target = target.bool().squeeze(1)  # [B, *spatial] bool target for C = 1
    elif kind == "mask":
        ignored = rng.uniform(size=shape) < 0.3
        ignored.flat[0] = ignored.flat[1] = False
        valid = ~ignored
        target = torch.tensor(np.where(ignored, 0.7, t))  # ignored pixels may hold anything in [0, 1]
        kwargs["ignore"] = torch.tensor(ignored)
    elif kind == "index":
        ignored = rng.uniform(size=shape) < 0.3
        ignored.flat[0] = ignored.flat[1] = False
        valid = ~ignored
        target = torch.tensor(np.where(ignored, 255, t).astype(np.uint8))
        kwargs["ignore"] = 255
    elif kind == "weight":
        weight = rng.uniform(0.0, 2.0, size=shape)
        kwargs["weight"] = torch.tensor(weight)
    elif kind == "probs":
        input = torch.tensor(sig(z))
        kwargs["from_logits"] = False
    t = np.where(valid, t, 0.0)
    return input, target, kwargs, z, t, valid, weight


@pytest.mark.parametrize("kind", SCENARIOS)
@pytest.mark.parametrize("name,params,np_fn", CASES, ids=CASE_IDS)
def test_matches_numpy(name, params, np_fn, kind):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{kind}".encode()))
    input, target, kwargs, z, t, valid, weight = make_scenario(kind, rng)
    per = np_fn(z, t, valid, **params)
    fn = getattr(P, name)
    for reduction in ("mean", "sum", "none"):
        got = fn(input, target, **params, **kwargs, reduction=reduction)
        want = np_reduce(per, valid, weight, reduction)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12, err_msg=f"{name} {kind} {reduction}")


def test_dibe_dis_four_cases_by_hand():
    # one pixel per case; p = 0.8 or 0.2 (z = +-ln 4), lam = 0.75, g = 2, alpha = 0.3, beta = 0.7
    z = torch.tensor([np.log(4.0), -np.log(4.0), -np.log(4.0), np.log(4.0)], dtype=torch.float64).view(1, 1, 4)
    t = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 4)
    got = P.dibe_dis(z, t, reduction="none").flatten().tolist()
    want = [
        -0.75 * 0.2**2 * np.log(0.8),  # y=1, yhat=1
        -0.75 * (1 - 0.2**1.3) ** 2 * 1.3 * np.log(0.2),  # y=1, yhat=0: missed crack, alpha
        -0.25 * 0.2**2 * np.log(0.8),  # y=0, yhat=0
        -0.25 * (1 - 0.2**1.7) ** 2 * 1.7 * np.log(0.2),  # y=0, yhat=1: false alarm, beta = 1 - alpha
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_adaptive_wce_alpha_is_batch_fraction_with_laplace_smoothing():
    # 1 crack pixel out of 10 in the batch (spread over two images): alpha = (9+1)/(10+2)
    z = torch.zeros(2, 1, 5, dtype=torch.float64)
    t = torch.zeros(2, 1, 5)
    t[1, 0, 3] = 1
    alpha = 10 / 12
    q = 10 ** (2 * alpha - 1)
    # at z = 0 every pixel costs ln 2, the crack pixel q ln 2
    want = (9 + q) * np.log(2) / 10
    assert P.adaptive_wce(z, t).item() == pytest.approx(want, rel=1e-12)
    want_xie = (9 + 9) * np.log(2) / 10  # unsmoothed: alpha/(1-alpha) = 9
    assert P.adaptive_wce(z, t, q="xie", smooth=0).item() == pytest.approx(want_xie, rel=1e-12)


def test_adaptive_wce_log_weight_clamped_at_zero():
    # more crack than background: ln(alpha/(1-alpha)) < 0 would reward errors on cracks; q = 0
    z = torch.tensor([[[-1.0, 0.5, 2.0, -0.3]]], dtype=torch.float64)
    t = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    want = -np.log(1 - sig(-0.3)) / 4
    assert P.adaptive_wce(z, t, q="log").item() == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------------------------
# reductions required by the catalog
# --------------------------------------------------------------------------------------------


def _zt(soft=True, shape=(2, 1, 4, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    return z, (t if soft else (t > 0.6).double())


@pytest.mark.parametrize("soft", [False, True])
def test_focal_margin_family_reductions(soft):
    z, t = _zt(soft)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # noqa: E731
    g = 1.7
    # aFM: m=0 -> aF, g=0 -> aM, both -> BCE
    close(P.asymmetric_focal_margin(z, t, gamma=g, m=0.0), P.asymmetric_focal(z, t, gamma=g))
    close(P.asymmetric_focal_margin(z, t, gamma=0.0, m=0.8), P.asymmetric_margin(z, t, m=0.8))
    close(P.asymmetric_focal_margin(z, t, gamma=0.0, m=0.0), P.bce(z, t))
    # FM: m=0 -> focal without class weight, g=0 -> aM, both -> BCE
    close(P.focal_margin(z, t, gamma=g, m=0.0), P.focal(z, t, gamma=g))
    close(P.focal_margin(z, t, gamma=0.0, m=0.8), P.asymmetric_margin(z, t, m=0.8))
    close(P.focal_margin(z, t, gamma=0.0, m=0.0), P.bce(z, t))
    close(P.asymmetric_margin(z, t, m=0.0), P.bce(z, t))


@pytest.mark.parametrize("soft", [False, True])
def test_other_reductions(soft):
    z, t = _zt(soft)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # noqa: E731
    for lam in (0.25, 0.75):
        close(P.dibe_dis(z, t, lam=lam, gamma=2.0, alpha=0.0, beta=0.0), P.focal(z, t, gamma=2.0, lam=lam))
        close(P.focal(z, t, gamma=0.0, lam=lam), P.weighted_bce(z, t, lam=lam))
        close(P.el_ce(z, t, lam=lam, gamma_ce=1.0), P.weighted_bce(z, t, lam=lam))
    close(P.focal(z, t, gamma=0.0), P.bce(z, t))
    close(P.asymmetric_focal(z, t, gamma=0.0), P.bce(z, t))
    close(P.el_ce(z, t), P.bce(z, t))
    close(P.weighted_bce(z, t, lam=0.5), 0.5 * P.bce(z, t))
    close(P.adaptive_wce(z, t, q="exp", gamma=0.0), P.bce(z, t))  # q = beta a^0 = 1


def test_bce_equals_torch():
    z, t = _zt(True)
    w = torch.rand(z.shape, dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            P.bce(z, t, reduction=reduction), F.binary_cross_entropy_with_logits(z, t, reduction=reduction)
        )
        torch.testing.assert_close(
            P.bce(z, t, weight=w, reduction=reduction),
            F.binary_cross_entropy_with_logits(z, t, weight=w, reduction=reduction),
        )
        torch.testing.assert_close(
            P.bce(torch.sigmoid(z), t, from_logits=False, reduction=reduction),
            F.binary_cross_entropy(torch.sigmoid(z), t, reduction=reduction),
        )


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss (reduction "none"), transcribed from its published source."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 2.0), (0.6, 0.5), (0.25, 0.0)])
def test_focal_equals_torchvision_on_hard_labels(alpha, gamma):
    z, t = _zt(False)
    want = torchvision_sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma)
    lam = None if alpha < 0 else alpha
    torch.testing.assert_close(P.focal(z, t, gamma=gamma, lam=lam, reduction="none"), want)
    torch.testing.assert_close(P.focal(z, t, gamma=gamma, lam=lam), want.mean())


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.8, 1.3)])
def test_focal_equals_kornia(alpha, gamma, soft):
    kornia_losses = pytest.importorskip("kornia.losses")
    z, t = _zt(soft, shape=(2, 3, 4, 4))
    for reduction in ("none", "mean", "sum"):
        want = kornia_losses.binary_focal_loss_with_logits(z, t, alpha=alpha, gamma=gamma, reduction=reduction)
        torch.testing.assert_close(P.focal(z, t, gamma=gamma, lam=alpha, reduction=reduction), want)


# --------------------------------------------------------------------------------------------
# gradients and numerics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,params,np_fn", CASES, ids=CASE_IDS)
def test_gradcheck(name, params, np_fn):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64) * 2
    z = z + 0.3 * torch.sign(z)  # keep dibe_dis's threshold yhat = [z >= 0] away from the steps
    t = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    w = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    ignore = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    ignore[0, 0, 1] = True
    fn = getattr(P, name)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, **params, weight=w, ignore=ignore), (z,))
    p = torch.sigmoid(z.detach()).clamp(0.05, 0.95).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, t, **params, from_logits=False, reduction="sum"), (p,))


# fractional exponents are the risky ones at saturated pixels
EXTREME_CASES = CASES + [
    ("focal", {"gamma": 0.3}, None),
    ("asymmetric_focal_margin", {"gamma": 0.3, "m": 2.0}, None),
    ("el_ce", {"gamma_ce": 0.3}, None),
    ("dibe_dis", {"gamma": 0.3, "alpha": 1.0, "beta": 1.0}, None),
    ("adaptive_wce", {"q": "log", "smooth": 0.0}, None),
    ("adaptive_wce", {"q": "power", "smooth": 0.0}, None),
]
EXTREME_IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(EXTREME_CASES)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("name,params,np_fn", EXTREME_CASES, ids=EXTREME_IDS)
def test_extreme_logits_finite(name, params, np_fn, dtype):
    # |z| = 80, and |z| = 200 where float32's sigmoid saturates to exactly 0 or 1
    z = torch.tensor([-80.0, 80.0, -80.0, 80.0, 0.0, -80.0, 80.0, -200.0, 200.0, -200.0, 200.0], dtype=dtype)
    z = z.view(1, 1, 11)
    t = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0]).view(1, 1, 11)
    fn = getattr(P, name)
    for target in (t, torch.zeros_like(t), torch.ones_like(t)):  # mixed, crack-free, all-crack
        x = z.clone().requires_grad_(True)
        loss = fn(x, target, **params)
        loss.backward()
        assert torch.isfinite(loss), (name, loss)
        assert torch.isfinite(x.grad).all(), (name, x.grad)
    # probabilities exactly 0 and 1
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=dtype).view(1, 1, 11)
    p.requires_grad_(True)
    loss = fn(p, t, **params, from_logits=False)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all(), (name, loss, p.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_extreme_bce_value(dtype):
    # per pixel: ~0, 80, 80, ~0  -> mean 40 (exact up to e^-80)
    z = torch.tensor([-80.0, 80.0, -80.0, 80.0], dtype=dtype).view(1, 1, 4)
    t = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 4)
    assert P.bce(z, t).item() == pytest.approx(40.0, rel=1e-6)
    # focal at g = 2: the two wrong pixels cost (1 - e^-80)^2 * 80 ~ 80
    assert P.focal(z, t).item() == pytest.approx(40.0, rel=1e-6)


@pytest.mark.parametrize("name,params,np_fn", CASES, ids=CASE_IDS)
def test_fully_ignored_batch_is_zero(name, params, np_fn):
    z = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.full((1, 1, 2, 3), 255, dtype=torch.uint8)
    loss = getattr(P, name)(z, t, **params, ignore=255)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_targets_carry_no_gradient_and_weights_detached():
    z, t = _zt(True)
    t = t.clone().requires_grad_(True)
    z.requires_grad_(True)
    P.balanced_bce(z, t).backward()
    P.adaptive_wce(z, t).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------------------------
# argument errors
# --------------------------------------------------------------------------------------------

ALL = P.__all__


def test_all_names():
    assert sorted(ALL) == sorted(
        [
            "bce",
            "weighted_bce",
            "balanced_bce",
            "adaptive_wce",
            "focal",
            "asymmetric_focal",
            "asymmetric_margin",
            "asymmetric_focal_margin",
            "focal_margin",
            "el_ce",
            "dibe_dis",
        ]
    )


@pytest.mark.parametrize("name", ALL)
def test_bad_tensors(name):
    fn = getattr(P, name)
    z = torch.randn(2, 1, 3, 3)
    t = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="target"):
        fn(z, torch.zeros(2, 1, 3, 4))
    with pytest.raises(TypeError, match="input"):
        fn(torch.zeros(2, 1, 3, 3, dtype=torch.int64), t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(z, t + 2)
    with pytest.raises(ValueError, match="from_logits"):
        fn(z, t, from_logits=False)  # logits passed as probabilities
    with pytest.raises(ValueError, match="reduction"):
        fn(z, t, reduction="avg")
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0, 1, 3, 3), torch.zeros(0, 1, 3, 3))
    with pytest.raises(TypeError, match="ignore"):
        fn(z, t, ignore=torch.zeros(2, 1, 3, 3))  # float mask
    with pytest.raises(ValueError, match="weight"):
        fn(z, t, weight=-torch.ones(2, 1, 3, 3))


@pytest.mark.parametrize(
    "name,kwargs,exc,word",
    [
        ("focal", {"gamma": -1.0}, ValueError, "gamma"),
        ("focal", {"lam": 1.5}, ValueError, "lam"),
        ("focal", {"gamma": "2"}, TypeError, "gamma"),
        ("asymmetric_focal", {"gamma": -0.1}, ValueError, "gamma"),
        ("asymmetric_focal", {"delta": -0.1}, ValueError, "delta"),
        ("asymmetric_margin", {"m": -0.5}, ValueError, "m"),
        ("asymmetric_focal_margin", {"gamma": -2.0}, ValueError, "gamma"),
        ("asymmetric_focal_margin", {"m": float("nan")}, ValueError, "m"),
        ("focal_margin", {"gamma": -2.0}, ValueError, "gamma"),
        ("weighted_bce", {"lam": 2.0}, ValueError, "lam"),
        ("el_ce", {"gamma_ce": 0.0}, ValueError, "gamma_ce"),
        ("el_ce", {"lam": -0.2}, ValueError, "lam"),
        ("dibe_dis", {"gamma": -1.0}, ValueError, "gamma"),
        ("dibe_dis", {"alpha": 1.2}, ValueError, "alpha"),
        ("dibe_dis", {"beta": -0.1}, ValueError, "beta"),
        ("adaptive_wce", {"q": "sqrt"}, ValueError, "q"),
        ("adaptive_wce", {"beta": 0.0}, ValueError, "beta"),
        ("adaptive_wce", {"beta": 1.5}, ValueError, "beta"),
        ("adaptive_wce", {"q": "power", "gamma": 0.0}, ValueError, "gamma"),
        ("adaptive_wce", {"q": "exp", "gamma": 1.5}, ValueError, "gamma"),
        ("adaptive_wce", {"a": 1.0}, ValueError, "a"),
        ("adaptive_wce", {"smooth": -1.0}, ValueError, "smooth"),
    ],
)
def test_bad_parameters(name, kwargs, exc, word):
    with pytest.raises(exc, match=rf"\b{word}\b"):
        getattr(P, name)(torch.randn(1, 1, 4), torch.zeros(1, 1, 4), **kwargs)
