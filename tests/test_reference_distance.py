"""fastseg.reference distance losses against hand values, NumPy/SciPy transcriptions and MONAI."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from fastseg.reference import distance_loss, distance_map_ce, hausdorff_dt, shape_aware

LOSSES = [distance_loss, distance_map_ce, hausdorff_dt, shape_aware]

# ------------------------------------------------------------------ NumPy / SciPy transcriptions


def np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_bce(z, t):
    log_p = -np.logaddexp(0, -z)
    log_q = -np.logaddexp(0, z)
    return -(t * log_p + (1 - t) * log_q)


def images(a):
    """Index tuples of the (image, channel) pairs of ``[B, C, *spatial]``."""
    return list(np.ndindex(*a.shape[:2]))


def np_distance_to(target_set):
    """SciPy's distance of every pixel to the nearest pixel of ``target_set``."""
    return ndi.distance_transform_edt(~target_set)


def np_field(mask, valid=None):
    """MONAI's distance field of one image, edt(fg) + edt(bg) (SciPy), 0 for a single class; with
    ``valid``, ignored pixels belong to neither class (the distance to the nearest valid pixel of
    the other class; 0 at ignored pixels)."""
    valid = np.ones(mask.shape, bool) if valid is None else valid
    fg, bg = mask & valid, ~mask & valid
    if not (fg.any() and bg.any()):
        return np.zeros(mask.shape)
    return np.where(fg, np_distance_to(bg), np.where(bg, np_distance_to(fg), 0.0))


def np_boundary(mask, valid=None):
    """Foreground pixels with a (valid) background face neighbour; the outside and ignored pixels
    are neither class."""
    if valid is None:
        struct = ndi.generate_binary_structure(mask.ndim, 1)
        return mask & ~ndi.binary_erosion(mask, struct, border_value=1)
    fg, bg = mask & valid, ~mask & valid
    struct = ndi.generate_binary_structure(mask.ndim, 1)
    return fg & ndi.binary_dilation(bg, struct, border_value=0)


def ref_distance_loss(z, t, valid=None, alpha=4.0, eps=1.0, eps_dist=1e-6, scope="image"):
    p = np_sigmoid(z)
    valid = np.ones(z.shape, bool) if valid is None else valid
    t = np.where(valid, t, 0.0)
    crack = t > 0.5
    nd = np.ones(z.shape)
    for i in images(z):
        if crack[i].any():
            d = ndi.distance_transform_edt(~crack[i])  # distance to the nearest crack pixel
            top = d[valid[i]].max() if valid[i].any() else 0.0
            nd[i] = d / top if top > 0 else 0.0
    axes = tuple(range(2, z.ndim)) if scope == "image" else (0,) + tuple(range(2, z.ndim))
    s = lambda x: np.where(valid, x, 0.0).sum(axis=axes)  # noqa: E731
    tp, fp, fn = s(p * t), s(p * (1 - t)), s((1 - p) * t)
    dice = 1 - (2 * tp + eps) / (2 * tp + fp + fn + eps)
    dist = s(nd * p * (1 - t)) / (fp + eps_dist)
    return (dice * (1 + dist * (alpha - 1))).mean()


def ref_hausdorff(z, t, valid=None, weight=None, alpha=2.0):
    p = np_sigmoid(z)
    valid = np.ones(z.shape, bool) if valid is None else valid
    t = np.where(valid, t, 0.0)
    d_t, d_p = np.zeros(z.shape), np.zeros(z.shape)
    for i in images(z):
        d_t[i] = np_field(t[i] > 0.5, valid[i])
        d_p[i] = np_field(p[i] > 0.5, valid[i])
    term = (p - t) ** 2 * (d_t**alpha + d_p**alpha) * (1.0 if weight is None else weight)
    return np.where(valid, term, 0).sum() / valid.sum()


def ref_distance_map_ce(z, t, valid=None):
    """Phi as in JunMa11/SegLoss ``compute_edts_forPenalizedLoss``, then mean((1 + Phi) CE)."""
    valid = np.ones(z.shape, bool) if valid is None else valid
    t = np.where(valid, t, 0.0)
    phi = np.zeros(z.shape)
    for i in images(z):
        pos = (t[i] > 0.5) & valid[i]
        neg = ~(t[i] > 0.5) & valid[i]  # ignored pixels: neither class
        if pos.any() and neg.any():
            pos_edt = np_distance_to(neg)  # a crack pixel's distance to the nearest valid background
            neg_edt = np_distance_to(pos)
            pos_edt = (pos_edt[pos].max() - pos_edt) * pos / pos_edt[pos].max()
            neg_edt = (neg_edt[neg].max() - neg_edt) * neg / neg_edt[neg].max()
            phi[i] = pos_edt + neg_edt
    term = (1 + phi) * np_bce(z, t)
    return np.where(valid, term, 0).sum() / valid.sum()


def ref_shape_aware(z, t, valid=None):
    p = np_sigmoid(z)
    valid = np.ones(z.shape, bool) if valid is None else valid
    e = np.zeros(z.shape[:2])
    for i in images(z):
        gt_b = np_boundary(t[i] > 0.5, valid[i] if not valid.all() else None)
        pred_b = np_boundary(p[i] > 0.5, valid[i] if not valid.all() else None)
        if not pred_b.any():
            continue
        if gt_b.any():
            d = ndi.distance_transform_edt(~gt_b)
        else:  # empty curve: the image diagonal
            d = np.full(gt_b.shape, np.sqrt(sum(n * n for n in gt_b.shape)))
        e[i] = d[pred_b].mean()
    e = e.reshape(e.shape + (1,) * (z.ndim - 2))
    term = (1 + e) * np_bce(z, np.where(valid, t, 0.0))
    return np.where(valid, term, 0).sum() / valid.sum()


# ------------------------------------------------------------------------------------- inputs


def make(shape, seed=0, fg=0.2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(shape, generator=g) < fg).to(dtype)
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 3 * (2 * t.double() - 1)).to(dtype)
    return z, t


def close(got, want, rtol=1e-10):
    np.testing.assert_allclose(float(got), float(want), rtol=rtol, atol=1e-12)


# -------------------------------------------------------------------------------- hand values


def test_distance_loss_by_hand():
    # One 1 x 5 image, crack at x = 0; probabilities p. ND = [0, 1, 2, 3, 4] / 4.
    p = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.5], dtype=torch.float64).view(1, 1, 1, 5)
    t = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64).view(1, 1, 1, 5)
    tp, fp, fn = 0.5, 1.0, 0.5
    dice = 1 - (2 * tp + 1) / (2 * tp + fp + fn + 1)  # 1 - 2 / 3.5
    dist = (0.25 * 0.5 + 1.0 * 0.5) / (fp + 1e-6)
    close(distance_loss(p, t, from_logits=False), dice * (1 + dist * 3))
    close(distance_loss(p, t, from_logits=False, alpha=1.0), dice)  # alpha = 1: the Dice loss


def test_distance_loss_crack_free_image_has_nd_one():
    # No crack: ND = 1, so L_Dist = FP / (FP + eps_dist) and the Dice loss is scaled by ~alpha.
    p = torch.tensor([[0.2, 0.4]], dtype=torch.float64).view(1, 1, 1, 2)
    t = torch.zeros_like(p)
    dice = 1 - 1 / (0.6 + 1)
    close(distance_loss(p, t, from_logits=False), dice * (1 + 3 * 0.6 / (0.6 + 1e-6)))
    # Far false positives cost more than near ones: the point of the loss.
    t2 = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    t2[..., 0] = 1
    near, far = torch.zeros_like(t2), torch.zeros_like(t2)
    near[..., 0], near[..., 1] = 1.0, 0.5
    far[..., 0], far[..., 8] = 1.0, 0.5
    assert distance_loss(far, t2, from_logits=False) > distance_loss(near, t2, from_logits=False)


# ------------------------------------------------------------------ against NumPy, SciPy, MONAI


@pytest.mark.parametrize("scope", ["image", "batch"])
@pytest.mark.parametrize("shape", [(3, 2, 9, 11), (2, 1, 4, 5, 6)], ids=["2d", "3d"])
def test_distance_loss_equals_numpy(scope, shape):
    z, t = make(shape, seed=1, fg=0.15)
    t[0, 0] = 0  # a crack-free image
    close(distance_loss(z, t, scope=scope), ref_distance_loss(z.numpy(), t.numpy(), scope=scope))
    close(
        distance_loss(z, t, scope=scope, alpha=2.5, eps=0.1),
        ref_distance_loss(z.numpy(), t.numpy(), scope=scope, alpha=2.5, eps=0.1),
    )


def test_distance_loss_ignore_and_precomputed_distance():
    z, t = make((2, 1, 10, 12), seed=2)
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[:, :, :3] = True
    want = ref_distance_loss(z.numpy(), t.numpy(), valid=~ignore.numpy())
    close(distance_loss(z, t, ignore=ignore), want)
    # ignore_index in the target
    t255 = torch.where(ignore, torch.tensor(255.0, dtype=t.dtype), t).to(torch.int64)
    close(distance_loss(z, t255, ignore=255), want)
    # The raw SciPy EDT passed in gives the same value as computing it inside.
    d = np.stack([[ndi.distance_transform_edt(~(m > 0.5)) for m in img] for img in t.numpy()])
    close(distance_loss(z, t, distance=torch.from_numpy(d)), ref_distance_loss(z.numpy(), t.numpy()))


@pytest.mark.parametrize("shape", [(3, 1, 12, 14), (2, 2, 9, 10), (2, 1, 5, 6, 7)], ids=["2d", "2ch", "3d"])
def test_hausdorff_dt_equals_monai(shape):
    from monai.losses import HausdorffDTLoss

    z, t = make(shape, seed=3, fg=0.25)
    t[0, 0] = 0  # single class: MONAI's field is 0
    monai = HausdorffDTLoss(sigmoid=True, include_background=True, reduction="mean")(z, t)
    close(hausdorff_dt(z, t), monai, rtol=1e-6)  # MONAI keeps its field in float32
    close(hausdorff_dt(z, t), ref_hausdorff(z.numpy(), t.numpy()))


def test_hausdorff_dt_ignore_weight_and_reductions():
    z, t = make((2, 1, 10, 9), seed=4)
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[0, 0, :, :2] = True
    w = torch.rand(t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    want = ref_hausdorff(z.numpy(), t.numpy(), valid=~ignore.numpy(), weight=w.numpy())
    close(hausdorff_dt(z, t, ignore=ignore, weight=w), want)
    per_pixel = hausdorff_dt(z, t, ignore=ignore, weight=w, reduction="none")
    assert per_pixel.shape == z.shape and torch.all(per_pixel[ignore] == 0)
    close(hausdorff_dt(z, t, ignore=ignore, weight=w, reduction="sum"), want * (~ignore).sum().item())
    close(hausdorff_dt(z, t, alpha=1.0), ref_hausdorff(z.numpy(), t.numpy(), alpha=1.0))


@pytest.mark.parametrize("shape", [(3, 1, 12, 13), (2, 1, 5, 6, 6)], ids=["2d", "3d"])
def test_distance_map_ce_equals_numpy(shape):
    z, t = make(shape, seed=5, fg=0.3)
    t[0, 0] = 0  # no boundary: plain CE
    close(distance_map_ce(z, t), ref_distance_map_ce(z.numpy(), t.numpy()))
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[:, :, -2:] = True
    close(distance_map_ce(z, t, ignore=ignore), ref_distance_map_ce(z.numpy(), t.numpy(), valid=~ignore.numpy()))
    # Crack-free batch: exactly the mean BCE.
    zero = torch.zeros_like(t)
    close(distance_map_ce(z, zero), np_bce(z.numpy(), 0.0).mean())


@pytest.mark.parametrize("shape", [(3, 1, 14, 15), (2, 2, 5, 6, 7)], ids=["2d", "3d"])
def test_shape_aware_equals_numpy(shape):
    z, t = make(shape, seed=6, fg=0.3)
    t[0, 0] = 0  # crack-free ground truth: measured against the image diagonal
    close(shape_aware(z, t), ref_shape_aware(z.numpy(), t.numpy()))


@pytest.mark.parametrize("loss", ["hausdorff_dt", "distance_map_ce", "shape_aware"])
def test_ignored_pixels_belong_to_no_class_of_the_maps(loss):
    """An ignored pixel inside an all-crack image opens no boundary (the target's valid pixels are
    one class), and one inside a crack of a mixed image leaves the crack whole: the NumPy
    transcriptions over the valid pixels only."""
    z, t = make((2, 1, 7, 8), seed=9, fg=0.3)
    t[0] = 1  # all crack
    t[1, 0, 2:5, :] = 1  # a band of crack
    ignore = torch.zeros_like(t, dtype=torch.bool)
    ignore[0, 0, 3, 4] = ignore[1, 0, 3, 4] = ignore[1, 0, 6, 0] = True
    got = {"hausdorff_dt": hausdorff_dt, "distance_map_ce": distance_map_ce, "shape_aware": shape_aware}[loss](
        z, t, ignore=ignore)
    want = {"hausdorff_dt": ref_hausdorff, "distance_map_ce": ref_distance_map_ce, "shape_aware": ref_shape_aware}[loss](
        z.numpy(), t.numpy(), valid=~ignore.numpy())
    close(got, want)


def test_shape_aware_perfect_prediction_is_plain_ce():
    _, t = make((2, 1, 10, 10), seed=7)
    z = 6 * (2 * t - 1)
    close(shape_aware(z, t), np_bce(z.numpy(), t.numpy()).mean())


# ------------------------------------------------------------------------------ edges, gradients


def _edge_batch(dtype=torch.float32):
    """Crack-free, all-crack, ordinary, and extreme-logit images in one batch."""
    z, t = make((4, 1, 8, 9), seed=8, dtype=torch.float64)
    t[0] = 0
    t[1] = 1
    z[3] = torch.where(t[3] > 0.5, -80.0, 80.0)  # confidently wrong
    z[2, 0, :4] = 80.0
    return z.to(dtype), t.to(dtype)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_edges_are_finite(loss, dtype):
    z, t = _edge_batch(dtype)
    z.requires_grad_(True)
    value = loss(z, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    # Fully ignored batch: finite, zero gradient.
    z2 = z.detach().clone().requires_grad_(True)
    value = loss(z2, t, ignore=torch.ones_like(t, dtype=torch.bool))
    value.backward()
    assert torch.isfinite(value) and torch.all(z2.grad == 0)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_perfect_prediction_is_small_and_finite(loss):
    _, t = make((2, 1, 9, 10), seed=9)
    t[0] = 0
    z = (30 * (2 * t - 1)).requires_grad_(True)
    value = loss(z, t)
    value.backward()
    assert 0 <= value.item() < 1e-6 and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_gradcheck(loss):
    z, t = make((2, 1, 5, 6), seed=10)
    t[1, 0, 0, 0] = 0.7  # a soft label
    z = z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (z,), eps=1e-6, atol=1e-6, fast_mode=True)
    p = torch.sigmoid(z.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, from_logits=False), (p,), eps=1e-7, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda f: f.__name__)
def test_distance_maps_carry_no_gradient(loss):
    z, t = make((1, 1, 6, 7), seed=11)
    z.requires_grad_(True)
    d = torch.rand(t.shape, dtype=torch.float64, requires_grad=True)
    loss(z, t, distance=d).backward()
    assert d.grad is None and z.grad is not None


def test_argument_errors():
    z, t = make((1, 1, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        distance_loss(z, t, alpha=-1.0)
    with pytest.raises(ValueError, match="eps_dist"):
        distance_loss(z, t, eps_dist=0.0)
    with pytest.raises(ValueError, match="eps"):
        distance_loss(z, t, eps=0.0)
    with pytest.raises(ValueError, match="scope"):
        distance_loss(z, t, scope="pixel")
    with pytest.raises(ValueError, match="reduction"):
        hausdorff_dt(z, t, reduction="max")
    with pytest.raises(ValueError, match="distance"):
        shape_aware(z, t, distance=-torch.ones_like(z))
    with pytest.raises(ValueError, match="distance"):
        distance_map_ce(z, t, distance=torch.ones(1, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="distance"):
        hausdorff_dt(z, t, distance=torch.ones(1, 1, 4, 4, dtype=torch.int64))
