"""fastseg.metrics: counts, ratios, OII (seed 001 Table 1), tolerance matching, ODS/OIS.

Every expected value is independent of the code under test: counted by hand, read from seed 001's
Table 1, or computed by a brute-force NumPy/SciPy loop in this file.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from fastseg import metrics as M

# --------------------------------------------------------------------------------------------
# confusion counts on tiny masks (counted by hand)

# 3x3 image. Probabilities: predicted (>= 0.5) where marked P; target crack where marked T.
PROBS = [[0.9, 0.5, 0.1],
         [0.2, 0.7, 0.49],
         [0.0, 0.3, 1.0]]
TARGET = [[1, 0, 0],
          [1, 1, 0],
          [0, 0, 0]]
# predicted (>= 0.5): (0,0) (0,1) (1,1) (2,2) -> 4 pixels; target: (0,0) (1,0) (1,1)
# TP = (0,0),(1,1) = 2; FP = (0,1),(2,2) = 2; FN = (1,0) = 1; TN = 9 - 5 = 4


def _img(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)[None, None]


def test_confusion_counts_by_hand():
    c = M.confusion(_img(PROBS), _img(TARGET))
    assert c.tp.shape == (1, 1) and c.tp.dtype == torch.int64
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item(), c.tp_gt.item()) == (2, 2, 1, 4, 2)
    assert c.iou().item() == pytest.approx(2 / 5)
    assert c.precision().item() == pytest.approx(2 / 4)
    assert c.recall().item() == pytest.approx(2 / 3)
    assert c.f1().item() == pytest.approx(4 / 7)
    assert c.dice().item() == pytest.approx(4 / 7)
    assert c.pixel_accuracy().item() == pytest.approx(6 / 9)


def test_confusion_threshold_is_inclusive_and_adjustable():
    # threshold 0.7: predicted (0,0) 0.9, (1,1) 0.7, (2,2) 1.0 -> TP 2, FP 1, FN 1, TN 5
    c = M.confusion(_img(PROBS), _img(TARGET), threshold=0.7)
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 1, 1, 5)


def test_confusion_logits_bool_and_half_inputs():
    probs = torch.tensor(PROBS, dtype=torch.float64)
    logits = torch.log(probs) - torch.log1p(-probs)  # logit; p=0 -> -inf, p=1 -> inf: clamp
    logits = logits.clamp(-80, 80)
    c = M.confusion(logits[None, None], _img(TARGET), from_logits=True)
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 2, 1, 4)
    hard = _img(PROBS) >= 0.5
    c = M.confusion(hard, _img(TARGET, torch.bool))
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 2, 1, 4)
    c = M.confusion(_img(PROBS, torch.float16), _img(TARGET, torch.uint8))
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 2, 1, 4)


def test_confusion_extreme_logits():
    z = torch.tensor([[80.0, -80.0], [-80.0, 80.0]])[None, None]
    t = torch.tensor([[1, 1], [0, 0]])[None, None]
    c = M.confusion(z, t, from_logits=True)
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (1, 1, 1, 1)


def test_confusion_ignore_mask_and_index():
    ignore = torch.zeros(3, 3, dtype=torch.bool)
    ignore[0, 1] = True  # an FP pixel
    ignore[1, 0] = True  # the FN pixel
    c = M.confusion(_img(PROBS), _img(TARGET), ignore=ignore[None, None])
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 1, 0, 4)
    t = torch.tensor(TARGET)
    t[0, 1] = 255
    t[1, 0] = 255
    c = M.confusion(_img(PROBS), t[None, None], ignore=255)
    assert (c.tp.item(), c.fp.item(), c.fn.item(), c.tn.item()) == (2, 1, 0, 4)


@pytest.mark.parametrize("from_logits", [False, True])
def test_nan_predictions_raise_outside_ignored_pixels_only(from_logits):
    """A NaN would count as background (``NaN >= th`` is False): a miss the model never made.
    At an ignored pixel it counts nowhere, like anything there (a probability of 7 included)."""
    t = torch.ones(1, 1, 4, 4, dtype=torch.uint8)
    pred = torch.full((1, 1, 4, 4), 0.7 if not from_logits else 2.0)
    pred[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pred holds NaN outside ignored pixels"):
        M.confusion(pred, t, from_logits=from_logits)
    ignore = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    ignore[0, 0, 0, 0] = True
    assert M.confusion(pred, t, from_logits=from_logits, ignore=ignore).tp.item() == 15
    if not from_logits:
        pred[0, 0, 0, 0] = 7.0
        assert M.confusion(pred, t, ignore=ignore).tp.item() == 15
        with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
            M.confusion(pred, t)


def test_confusion_per_image_and_channel_and_total():
    # B=2, C=2 with [B, C] counts; image 1 channel 0 is the hand case; the others are simple
    probs = torch.zeros(2, 2, 3, 3)
    target = torch.zeros(2, 2, 3, 3)
    probs[0, 0] = torch.tensor(PROBS)
    target[0, 0] = torch.tensor(TARGET)
    probs[0, 1, 0, 0] = 1.0  # one FP
    target[1, 0] = 1.0  # all-crack target, empty prediction: FN 9
    probs[1, 1] = 1.0
    target[1, 1] = 1.0  # perfect all-crack
    c = M.confusion(probs, target)
    assert c.tp.shape == (2, 2)
    assert c.tp.tolist() == [[2, 0], [0, 9]]
    assert c.fp.tolist() == [[2, 1], [0, 0]]
    assert c.fn.tolist() == [[1, 0], [9, 0]]
    assert c.tn.tolist() == [[4, 8], [0, 0]]
    tot = c.total()
    assert tot.tp.tolist() == [2, 9] and tot.fp.tolist() == [2, 1] and tot.fn.tolist() == [10, 0] and tot.tn.tolist() == [4, 8]
    both = M.Confusion.cat([c, c])
    assert both.tp.shape == (4, 2) and both.total().tp.tolist() == [4, 18]


def test_confusion_target_without_channel_axis():
    c = M.confusion(_img(PROBS), torch.tensor(TARGET)[None])
    assert (c.tp.item(), c.fp.item(), c.fn.item()) == (2, 2, 1)


# --------------------------------------------------------------------------------------------
# ratios: hand values and the 0/0 conventions


def test_ratios_by_hand():
    assert M.iou(2, 1, 1) == pytest.approx(0.5)
    assert M.precision(3, 1) == pytest.approx(0.75)
    assert M.recall(3, 2) == pytest.approx(0.6)
    assert M.f1(3, 1, 2) == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert M.dice(3, 1, 2) == pytest.approx(6 / 9)
    assert M.pixel_accuracy(3, 1, 2, 4) == pytest.approx(0.7)
    assert isinstance(M.iou(2, 1, 1), float)


def test_ratios_zero_division():
    # empty prediction and empty target: a perfect score by default
    assert M.iou(0, 0, 0) == 1.0 and M.f1(0, 0, 0) == 1.0 and M.dice(0, 0, 0) == 1.0
    assert M.precision(0, 0) == 1.0 and M.recall(0, 0) == 1.0 and M.pixel_accuracy(0, 0, 0, 0) == 1.0
    # nothing predicted, cracks present: precision 0/0 = 1 but recall 0 and F1 0
    assert M.precision(0, 0) == 1.0 and M.recall(0, 5) == 0.0 and M.f1(0, 0, 5) == 0.0
    assert M.iou(0, 0, 0, zero_division=0.0) == 0.0
    assert math.isnan(M.precision(0, 0, zero_division=float("nan")))


def test_ratios_on_tensors_broadcast():
    tp = torch.tensor([[2, 0], [4, 0]])
    out = M.iou(tp, torch.tensor([1, 0]), torch.tensor([[1], [0]]))
    assert out.dtype == torch.float64 and out.shape == (2, 2)
    assert out.tolist() == [[2 / 4, 0.0], [4 / 5, 1.0]]  # (4, 1, 0) -> 0.8; (0, 0, 0) -> 1
    out = M.precision(torch.tensor([1.0, 0.0], dtype=torch.float32), torch.tensor([1.0, 0.0]))
    assert out.dtype == torch.float32 and out.tolist() == [0.5, 1.0]
    out = M.recall(torch.tensor([1.0], dtype=torch.float32), torch.tensor([2.0], dtype=torch.float64))
    assert out.dtype == torch.float64 and out.item() == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------------------
# OII, seed 001 eq 13-15 and Table 1

# Seed 001, Table 1, copied from the paper's text: No., TP:FP:FN, FP/FN, IoU, PA, OII.
TABLE1 = [
    (1, 2, 0.5, 0.5, 1, 0.667, 0.800, 0.064),
    (2, 2, 1, 1, 1, 0.500, 0.667, 0.126),
    (3, 2, 3, 3, 1, 0.250, 0.400, 0.334),
    (4, 2, 5, 1, 5, 0.250, 0.286, -0.844),
    (5, 2, 4, 2, 2, 0.250, 0.333, -0.563),
    (6, 2, 2, 4, 0.5, 0.250, 0.500, 0.563),
    (7, 2, 1, 5, 0.2, 0.250, 0.667, 0.844),
    (8, 2, 1, 2, 0.5, 0.400, 0.667, 0.457),
    (9, 2, 1, 0.5, 2, 0.571, 0.667, -0.397),
    (10, 2, 1, 0.2, 5, 0.625, 0.667, -0.780),
]


@pytest.mark.parametrize("row", TABLE1, ids=lambda r: f"no{r[0]}")
def test_oii_table1(row):
    no, tp, fp, fn, _, iou_t, pa_t, oii_t = row
    if no == 3:
        # Misprint in the paper: row 3 (2:3:3) prints 0.334, but eq 13-15 give 0.344 there
        # (x = 1, k = 1 - (2/pi) arctan(6/10) = 0.6560 -> OII = 1 - k = 0.3440), and all nine
        # other rows agree with the equations (LOSSES.md, "Metrics"). Test 0.344.
        oii_t = 0.344
    value = M.oii(tp, fp, fn)
    if no == 1:
        # 0.06345... : the table's 0.064 is half-up rounding of 0.0635 (rounded twice);
        # to 3 decimals it is 0.063. Accept the printed value within 6e-4.
        assert abs(value - oii_t) < 6e-4
    else:
        assert round(value, 3) == pytest.approx(oii_t, abs=1e-9)
    assert round(M.iou(tp, fp, fn), 3) == pytest.approx(iou_t, abs=1e-9)
    assert round(M.precision(tp, fp), 3) == pytest.approx(pa_t, abs=1e-9)


def test_oii_table1_on_tensors():
    tp, fp, fn = (torch.tensor([r[i] for r in TABLE1], dtype=torch.float32) for i in (1, 2, 3))
    expected = torch.tensor([0.064, 0.126, 0.344, -0.844, -0.563, 0.563, 0.844, 0.457, -0.397, -0.780])
    out = M.oii(tp, fp, fn)
    assert out.dtype == torch.float32 and out.shape == (10,)
    assert torch.allclose(out, expected, atol=6e-4, rtol=0)


def test_oii_hand_value_and_antisymmetry():
    # TP=10, FP=2, FN=6: x = 1/3, x + 1/x - 1 = 7/3, k = 1 - (2/pi) atan(8/50)
    k = 1 - 2 / math.pi * math.atan(8 / 50)
    assert M.oii(10, 2, 6) == pytest.approx(1 - k / (7 / 3), rel=1e-12)
    # swapping FP and FN flips the sign (x -> 1/x leaves x + 1/x - 1 unchanged)
    assert M.oii(10, 6, 2) == pytest.approx(-(1 - k / (7 / 3)), rel=1e-12)


def test_oii_edge_cases():
    assert M.oii(5, 0, 3) == 1.0  # FP = 0: x -> 0+, OII -> 1
    assert M.oii(5, 3, 0) == -1.0  # FN = 0: x -> inf, OII -> -1
    assert M.oii(5, 0, 0) == 0.0  # perfect: k = 1 and x = 1 give 0 on both branches
    assert M.oii(0, 0, 0) == 0.0  # empty target, empty prediction: perfect as well
    assert M.oii(0, 0, 4) == 1.0  # IoU = 0: the paper sets OII = 1
    assert M.oii(0, 4, 0) == 1.0  # IoU = 0 with only false positives: still 1 (paper's rule)
    assert M.oii(0, 4, 2) == 1.0
    # continuity towards the limits
    assert M.oii(5, 1e-9, 3) == pytest.approx(1.0, abs=1e-8)
    assert M.oii(5, 3, 1e-9) == pytest.approx(-1.0, abs=1e-8)
    out = M.oii(torch.tensor([5, 5, 5, 0]), torch.tensor([0, 3, 0, 0]), torch.tensor([3, 0, 0, 0]))
    assert out.tolist() == [1.0, -1.0, 0.0, 0.0]
    assert torch.isfinite(out).all()


def test_oii_of_counts_near_float64s_limits():
    """``FP^2 + FN^2 - FP FN`` underflowed to 0 (counts 1e-170) or overflowed to inf - inf (1e200),
    and the fallback gave OII = 0 or 0.43; eq 13-15 by hand give 1 - k/(x + 1/x - 1) with x = 1/2:
    1/3 for TP = 1 (k = 1 - (2/pi) atan(3e-170 / 5) = 1), and k = 1 - (2/pi) atan(3/5) for the
    scaled cases (FP + FN = 3e200, 5 TP = 5e200)."""
    assert M.oii(1, 1e-170, 2e-170) == pytest.approx(1 - 1 / (0.5 + 2 - 1), rel=1e-12)
    k = 1 - (2 / math.pi) * math.atan(3 / 5)
    assert M.oii(1e200, 1e200, 2e200) == pytest.approx(1 - k / (0.5 + 2 - 1), rel=1e-12)
    assert M.oii(1e200, 2e200, 1e200) == pytest.approx(k / (0.5 + 2 - 1) - 1, rel=1e-12)


# --------------------------------------------------------------------------------------------
# tolerance matching (hand cases)


def test_tolerance_shift_by_one_pixel():
    t = torch.zeros(1, 1, 7, 7)
    t[0, 0, 1:6, 3] = 1
    p = torch.zeros(1, 1, 7, 7)
    p[0, 0, 1:6, 4] = 1  # the same line one pixel to the right
    c0 = M.confusion(p, t, tolerance=0)
    assert (c0.tp.item(), c0.fp.item(), c0.fn.item()) == (0, 5, 5) and c0.f1().item() == 0.0
    c1 = M.confusion(p, t, tolerance=1)
    assert (c1.tp.item(), c1.fp.item(), c1.fn.item(), c1.tp_gt.item()) == (5, 0, 0, 5)
    assert c1.f1().item() == 1.0
    r = M.ods_ois(p, t, tolerance=1)
    assert r.ods_f1 == 1.0 and r.ois_f1 == 1.0
    assert M.ods_ois(p, t, tolerance=0).ods_f1 == 0.0


def test_tolerance_is_euclidean_disk():
    t = torch.zeros(1, 1, 5, 5)
    t[0, 0, 2, 2] = 1
    p = torch.zeros(1, 1, 5, 5)
    p[0, 0, 3, 3] = 1  # diagonal neighbour: distance sqrt(2)
    assert M.confusion(p, t, tolerance=1).f1().item() == 0.0
    assert M.confusion(p, t, tolerance=1.5).f1().item() == 1.0


def test_tolerance_partial_match_by_hand():
    # ground truth: column 2, rows 1..5; prediction: column 3, rows 1..3, plus a stray (6, 6)
    t = torch.zeros(1, 1, 7, 7)
    t[0, 0, 1:6, 2] = 1
    p = torch.zeros(1, 1, 7, 7)
    p[0, 0, 1:4, 3] = 1
    p[0, 0, 6, 6] = 1
    c = M.confusion(p, t, tolerance=1)
    # predicted hits: the 3 column pixels (distance 1); the stray is 4 away
    # detected ground truth: rows 1..3 (distance 1); row 4 is sqrt(2) from (3, 3); row 5 further
    assert (c.tp.item(), c.fp.item(), c.tp_gt.item(), c.fn.item()) == (3, 1, 3, 2)
    assert c.precision().item() == pytest.approx(3 / 4)
    assert c.recall().item() == pytest.approx(3 / 5)
    assert c.f1().item() == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    c = M.confusion(p, t, tolerance=1.5)
    assert (c.tp.item(), c.fp.item(), c.tp_gt.item(), c.fn.item()) == (3, 1, 4, 1)


def test_tolerance_in_3d_is_a_ball():
    t = torch.zeros(1, 1, 5, 5, 5)
    t[0, 0, 2, 2, 2] = 1
    p = torch.zeros(1, 1, 5, 5, 5)
    p[0, 0, 3, 3, 3] = 1  # distance sqrt(3) = 1.73
    assert M.confusion(p, t, tolerance=1.5).f1().item() == 0.0
    assert M.confusion(p, t, tolerance=1.8).f1().item() == 1.0
    r = M.ods_ois(p.half(), t, tolerance=1.8)
    assert r.ods_f1 == 1.0 and r.ois_f1 == 1.0


def _disk(radius, ndim):
    r = int(math.floor(radius))
    grid = np.indices((2 * r + 1,) * ndim) - r
    return (grid**2).sum(0) <= radius * radius


@pytest.mark.parametrize("radius", [1, 1.5, 2, 3])
@pytest.mark.parametrize("shape", [(2, 1, 9, 11), (1, 2, 5, 6, 7), (3, 1, 13)])
def test_max_filter_matches_scipy(radius, shape):
    x = torch.rand(shape, dtype=torch.float64)
    nd = len(shape) - 2
    out = M.max_filter(x, radius, nd)
    fp = _disk(radius, nd)[None, None]  # no mixing across images and channels
    ref = ndimage.grey_dilation(x.numpy(), footprint=fp, mode="constant", cval=-np.inf)
    np.testing.assert_array_equal(out.numpy(), ref)


# --------------------------------------------------------------------------------------------
# ODS / OIS against a brute-force loop


def _brute_ods_ois(probs, target, thresholds, radius, valid=None):
    """Per threshold and image: relaxed counts with SciPy binary dilation; then ODS/OIS."""
    p = probs[:, 0].numpy()
    g = target[:, 0].numpy().astype(bool)
    v = np.ones_like(g) if valid is None else valid[:, 0].numpy()
    g = g & v
    th = thresholds.numpy()
    B, T = p.shape[0], th.size
    st = _disk(radius, p.ndim - 1) if radius >= 1 else None
    cnt = np.zeros((4, B, T))
    for b in range(B):
        for j in range(T):
            pred = (p[b] >= th[j]) & v[b]
            near_g = ndimage.binary_dilation(g[b], structure=st) if st is not None else g[b]
            near_p = ndimage.binary_dilation(pred, structure=st) if st is not None else pred
            cnt[:, b, j] = [(pred & near_g).sum(), pred.sum(), (g[b] & near_p).sum(), g[b].sum()]

    def prf(tpp, npred, tpg, ngt):
        P = np.where(npred > 0, tpp / np.maximum(npred, 1), 1.0)
        R = np.where(ngt > 0, tpg / np.maximum(ngt, 1), 1.0)
        F = np.where(P + R > 0, 2 * P * R / np.where(P + R > 0, P + R, 1), 0.0)
        return P, R, F

    P, R, F = prf(*cnt.sum(1))
    j = int(np.argmax(F))
    _, _, Fi = prf(*cnt)
    ji = np.argmax(Fi, axis=1)
    picked = cnt[:, np.arange(B), ji].sum(1)
    Po, Ro, Fo = prf(*picked)
    return dict(ods=(P[j], R[j], F[j], th[j]), ois=(float(Po), float(Ro), float(Fo)), ois_mean=Fi[np.arange(B), ji].mean(), ji=ji, curve=F)


def _crack_batch(B=4, H=12, W=13):
    g = torch.Generator().manual_seed(1)
    t = torch.zeros(B, 1, H, W)
    for b in range(1, B):  # image 0 is crack-free
        r = int(torch.randint(0, H, (1,), generator=g))
        for x in range(W):
            t[b, 0, r, x] = 1
            r = min(H - 1, max(0, r + int(torch.randint(-1, 2, (1,), generator=g))))
    noise = torch.rand(B, 1, H, W, generator=g)
    probs = (0.4 * t + 0.7 * noise).clamp(0, 1)
    # shift responses by 1 or 2 pixels, so tolerances 0, 1 and 2 all score differently
    probs = torch.cat([torch.roll(probs[:2], 1, dims=2), torch.roll(probs[2:], 2, dims=3)])
    probs = probs * (torch.rand(B, 1, H, W, generator=g) > 0.1)
    probs[0] *= 0.3  # a crack-free image with weak responses
    return probs, t


@pytest.mark.parametrize("radius", [0, 1, 1.5, 2])
@pytest.mark.parametrize("thresholds", [19, "tensor"])
def test_ods_ois_matches_brute_force(radius, thresholds):
    probs, t = _crack_batch()
    if thresholds == "tensor":
        thresholds = torch.tensor([0.7, 0.1, 0.35, 0.5, 0.35, 0.9, 0.62])  # unsorted, a duplicate
        th_sorted = torch.unique(thresholds)
    else:
        th_sorted = (torch.arange(1, 20, dtype=torch.float64) / 20).float()
    r = M.ods_ois(probs, t, thresholds=thresholds, tolerance=radius)
    ref = _brute_ods_ois(probs, t, th_sorted, radius)
    assert torch.equal(r.thresholds, th_sorted)
    assert (r.ods_precision, r.ods_recall, r.ods_f1) == pytest.approx(ref["ods"][:3], abs=1e-12)
    assert r.ods_threshold == pytest.approx(float(ref["ods"][3]), abs=0)
    assert (r.ois_precision, r.ois_recall, r.ois_f1) == pytest.approx(ref["ois"], abs=1e-12)
    assert r.ois_f1_mean == pytest.approx(ref["ois_mean"], abs=1e-12)
    np.testing.assert_allclose(r.f1.numpy(), ref["curve"], atol=1e-12)
    np.testing.assert_array_equal(r.image_thresholds.numpy(), th_sorted.numpy()[ref["ji"]])
    # the crack-free image (image 0) reaches F1 = 1 at a threshold above its strongest response
    assert r.image_f1[0].item() == 1.0


def test_fully_ignored_images_are_left_out_of_the_per_image_mean():
    """An image without a valid pixel has no F1 (NaN) and does not enter ``ois_f1_mean``; the
    pooled scores equal those of the batch without it."""
    probs, t = _crack_batch()
    ignore = torch.zeros(t.shape, dtype=torch.bool)
    ignore[1] = True
    r = M.ods_ois(probs, t, ignore=ignore, tolerance=1)
    keep = [0] + list(range(2, probs.shape[0]))
    alone = M.ods_ois(probs[keep], t[keep], tolerance=1)
    assert torch.isnan(r.image_f1[1]) and torch.equal(r.image_f1[keep], alone.image_f1)
    assert r.ois_f1_mean == pytest.approx(float(alone.image_f1.mean()), abs=1e-15)
    assert (r.ods_f1, r.ois_f1) == (alone.ods_f1, alone.ois_f1)
    joined = M.ThresholdCounts.cat([M.threshold_counts(probs[:2], t[:2], ignore=ignore[:2], tolerance=1),
                                    M.threshold_counts(probs[2:], t[2:], tolerance=1)])
    assert M.ods_ois_from_counts(joined).ois_f1_mean == r.ois_f1_mean


def test_f1_of_an_image_with_nothing_predicted_or_present_is_zero_division_whatever_the_batch():
    """With tolerance, F1 is 2PR/(P+R); an image with no count at all is 0/0 (``zero_division``)
    whether or not another image of the batch has ``tp != tp_gt``."""
    p = torch.zeros(2, 1, 8, 8)
    t = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    p[1, 0, 2, 2] = 1
    t[1, 0, 2, 3] = t[1, 0, 2, 1] = 1  # image 1: one prediction matching two crack pixels (tp 1, tp_gt 2)
    both = M.confusion(p, t, tolerance=1)
    assert not torch.equal(both.tp, both.tp_gt)
    for zero_division in (float("nan"), -1.0, 0.0, 1.0):
        got = both.f1(zero_division)
        alone = M.confusion(p[:1], t[:1], tolerance=1).f1(zero_division)
        torch.testing.assert_close(got[:1], alone, equal_nan=True)
        torch.testing.assert_close(got[:1], torch.full_like(got[:1], zero_division), equal_nan=True)
        assert got[1].item() == 1.0  # P = 1/1, R = 2/2


def test_ods_ois_values_on_the_grid_count_as_predicted():
    # probabilities exactly equal to thresholds: p >= th is a prediction (ties included)
    _, t = _crack_batch(B=3, H=8, W=9)
    grid = (torch.arange(1, 10, dtype=torch.float64) / 10).float()
    idx = torch.randint(0, 9, t.shape)
    probs = torch.where(t.bool(), grid[idx.clamp_min(5)], grid[idx.clamp_max(6)])
    r = M.ods_ois(probs, t, thresholds=9)
    ref = _brute_ods_ois(probs, t, grid, 0)
    assert (r.ods_precision, r.ods_recall, r.ods_f1) == pytest.approx(ref["ods"][:3], abs=1e-12)
    assert (r.ois_precision, r.ois_recall, r.ois_f1) == pytest.approx(ref["ois"], abs=1e-12)
    np.testing.assert_allclose(r.f1.numpy(), ref["curve"], atol=1e-12)


def test_ods_ois_with_ignore_matches_brute_force():
    probs, t = _crack_batch(B=3, H=9, W=10)
    ignore = torch.rand(3, 1, 9, 10) < 0.2
    r = M.ods_ois(probs, t, thresholds=9, tolerance=1, ignore=ignore)
    ref = _brute_ods_ois(probs, t, (torch.arange(1, 10, dtype=torch.float64) / 10).float(), 1, valid=~ignore)
    assert (r.ods_precision, r.ods_recall, r.ods_f1) == pytest.approx(ref["ods"][:3], abs=1e-12)
    assert (r.ois_precision, r.ois_recall, r.ois_f1) == pytest.approx(ref["ois"], abs=1e-12)


def test_ods_ois_batches_join():
    probs, t = _crack_batch()
    whole = M.ods_ois(probs, t, thresholds=15, tolerance=1)
    parts = [M.threshold_counts(probs[i : i + 2], t[i : i + 2], thresholds=15, tolerance=1) for i in (0, 2)]
    joined = M.ods_ois_from_counts(M.ThresholdCounts.cat(parts))
    assert (joined.ods_f1, joined.ois_f1, joined.ods_threshold) == (whole.ods_f1, whole.ois_f1, whole.ods_threshold)


def test_ods_ois_perfect_prediction():
    _, t = _crack_batch()
    r = M.ods_ois(t.clone(), t)
    assert r.ods_f1 == 1.0 and r.ois_f1 == 1.0 and r.ois_f1_mean == 1.0
    assert r.ods_precision == 1.0 and r.ods_recall == 1.0


# --------------------------------------------------------------------------------------------
# bad inputs


def test_a_batch_with_every_pixel_ignored_scores_nothing():
    """A void tile (every pixel ignored) crashed the value check of the empty set of scored
    pixels (aminmax of nothing); it has nothing to count: zero counts, NaN image F1, and it
    leaves the pooled scores of a joined data set as they were."""
    probs, t = _crack_batch()
    void = torch.full((1, *t.shape[1:]), 255, dtype=torch.uint8)
    for from_logits in (False, True):
        c = M.confusion(probs[:1] if not from_logits else probs[:1] * 4 - 2, void, ignore=255, from_logits=from_logits)
        assert [int(getattr(c, k).sum()) for k in ("tp", "fp", "fn", "tn", "tp_gt")] == [0] * 5
    r = M.ods_ois(probs[:1], void, ignore=255)
    assert math.isnan(r.ois_f1_mean) and torch.isnan(r.image_f1).all()
    whole = M.ods_ois(probs, t)
    joined = M.ThresholdCounts.cat([M.threshold_counts(probs, t), M.threshold_counts(probs[:1], void, ignore=255)])
    assert (M.ods_ois_from_counts(joined).ods_f1, M.ods_ois_from_counts(joined).ois_f1) == (whole.ods_f1, whole.ois_f1)


def test_ties_pick_the_lowest_threshold_whatever_the_rounding():
    """P, R = 3/5, 3/4 at 0.3 and 1, 1/2 at 0.6: F1 = 2/3 at both (exact fractions), computed as
    0.6666666666666665 and 0.6666666666666666; the documented tie rule picks 0.3."""
    probs = torch.tensor([0.9, 0.9, 0.4, 0.0, 0.4, 0.4]).reshape(1, 1, 1, 6)
    target = torch.tensor([1, 1, 1, 1, 0, 0]).reshape(1, 1, 1, 6)
    r = M.ods_ois(probs, target, thresholds=torch.tensor([0.3, 0.6]))
    assert r.ods_threshold == pytest.approx(0.3) and r.image_thresholds.tolist() == pytest.approx([0.3])
    assert (r.ods_precision, r.ods_recall) == pytest.approx((3 / 5, 3 / 4))


def test_bad_inputs_raise():
    p, t = _img(PROBS), _img(TARGET)
    with pytest.raises(ValueError, match=r"pred must hold probabilities in \[0, 1\]; pass from_logits=True"):
        M.confusion(p * 2, t)
    with pytest.raises(ValueError, match=r"probs must hold probabilities in \[0, 1\]; apply torch.sigmoid"):
        M.ods_ois(p * 2, t)
    with pytest.raises(ValueError, match="^target must be binary"):
        M.confusion(p, t * 0.5)
    with pytest.raises(ValueError, match="^targets must be binary"):
        M.ods_ois(p, t * 0.5)
    with pytest.raises(ValueError, match=r"^targets must have the shape of probs"):
        M.ods_ois(p, torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError, match="^targets must be a torch.Tensor"):
        M.threshold_counts(p, t.numpy())
    with pytest.raises(TypeError, match="pred"):
        M.confusion(torch.ones(1, 1, 3, 3, dtype=torch.int64), t)
    with pytest.raises(TypeError, match="from_logits must be a bool; got str"):
        M.confusion(p, t, from_logits="False")
    with pytest.raises(ValueError, match="from_logits"):
        M.confusion(p > 0.5, t, from_logits=True)
    with pytest.raises(ValueError, match="tolerance"):
        M.confusion(p, t, tolerance=-1)
    with pytest.raises(TypeError, match="threshold"):
        M.confusion(p, t, threshold="0.5")
    with pytest.raises(ValueError, match="threshold"):
        M.confusion(p, t, threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        M.confusion(p, torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        M.confusion(torch.full((1, 1, 2, 2), float("nan")), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="one channel"):
        M.ods_ois(torch.rand(2, 2, 4, 4), torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="thresholds"):
        M.ods_ois(p, t, thresholds=0)
    with pytest.raises(ValueError, match="thresholds"):
        M.ods_ois(p, t, thresholds=torch.rand(2, 2))
    with pytest.raises(ValueError, match="thresholds"):
        M.ods_ois(p, t, thresholds=torch.tensor([0.5, 1.5]))
    with pytest.raises(TypeError, match="thresholds"):
        M.ods_ois(p, t, thresholds=0.5)
    with pytest.raises(TypeError, match="counts"):
        M.ods_ois_from_counts((1, 2))
    with pytest.raises(ValueError, match="non-negative"):
        M.oii(1, -1, 2)
    with pytest.raises(ValueError, match="finite"):
        M.iou(float("nan"), 1, 1)
    with pytest.raises(TypeError, match="tp"):
        M.oii("1", 1, 1)
    with pytest.raises(TypeError, match="zero_division"):
        M.iou(1, 1, 1, zero_division=None)
    with pytest.raises(ValueError, match="broadcastable"):
        M.iou(torch.ones(2), torch.ones(3), 1)
