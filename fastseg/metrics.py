"""Segmentation metrics: confusion counts, ratios, ODS/OIS and the output imbalance index (OII).

Everything here scores *hard* predictions (a pixel is crack when its probability is ``>=`` a
threshold); nothing carries a gradient. See LOSSES.md, "Metrics".

Conventions (decisions, repeated in the functions below):

- Shapes follow the losses: ``pred`` is ``[B, C, *spatial]`` (1 to 3 spatial dims), ``target``
  the same or ``[B, *spatial]`` when C = 1. Counts are **per image and channel**, int64 tensors
  of shape ``[B, C]``; :meth:`Confusion.total` sums them over the data set (shape ``[C]``).
- ``pred`` holds probabilities by default (``from_logits=False``: metrics usually see the output
  of a sigmoid); pass ``from_logits=True`` for logits. A bool ``pred`` is taken as the hard
  prediction itself. Targets must be binary (0/1) outside ignored pixels.
- ``ignore`` is a mask (nonzero = ignored) or an ``ignore_index`` value in the target, as for the
  losses; ignored pixels count nowhere (neither as prediction nor as ground truth).
- 0/0: every ratio takes the value ``zero_division`` (default 1.0) when its denominator is 0:
  an image with no crack and no predicted crack scores IoU = F1 = precision = recall = 1;
  precision with nothing predicted is 1 ("no false alarm made"), recall with nothing to find is 1
  ("nothing missed"). F1 is then still 0 whenever one of P, R is 0.
- Matching tolerance ``r`` (pixels, Euclidean, ``tolerance=0`` = exact): a predicted pixel
  within distance ``r`` of a ground-truth pixel is a hit for precision, a ground-truth pixel within
  ``r`` of a predicted pixel is detected for recall (the relaxed precision/recall of crack and edge
  benchmarks; it is the dilation-based approximation, not BSDS's one-to-one matching). Dilation
  by a disk (ball in 3-D) of radius ``r`` runs on the tensors' device, see :func:`max_filter`.

Sources: precision (seed 001 calls it PA, eq 21), IoU (001 eq 20), P, R, F1 (002 eq 11),
ODS/OIS (002 section IV), OII (001 eq 13-15).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import _outside_unit_interval, check_input_tensor, check_loss_inputs, check_number, type_name

__all__ = [
    "Confusion",
    "confusion",
    "iou",
    "precision",
    "recall",
    "f1",
    "dice",
    "pixel_accuracy",
    "oii",
    "max_filter",
    "ThresholdCounts",
    "threshold_counts",
    "ODSOIS",
    "ods_ois",
    "ods_ois_from_counts",
]


# --------------------------------------------------------------------------------------------
# ratios of counts


def _is_scalar(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def _counts_as_tensors(name_values: dict) -> tuple[list[Tensor], bool, torch.dtype]:
    """Validate counts (non-negative, finite); return float64 tensors, whether all were numbers,
    and the floating dtype of the result (float64 for integers / Python numbers)."""
    all_scalar = all(_is_scalar(v) for v in name_values.values())
    out_dtype = None
    tensors = []
    device = None
    for name, v in name_values.items():
        if isinstance(v, Tensor):
            if v.dtype == torch.bool or v.is_complex():
                raise TypeError(f"{name} must be a real number or an integer/floating tensor; got dtype {v.dtype}")
            if v.is_floating_point():
                out_dtype = v.dtype if out_dtype is None else torch.promote_types(out_dtype, v.dtype)
            device = v.device if device is None else device
        elif not _is_scalar(v):
            raise TypeError(f"{name} must be a real number or a tensor of counts; got {type_name(v)}")
    for name, v in name_values.items():
        t = torch.as_tensor(v, dtype=torch.float64, device=device)
        if bool(torch.isnan(t).any()) or bool(torch.isinf(t).any()):
            raise ValueError(f"{name} must be finite; got non-finite counts")
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative (a count of pixels)")
        tensors.append(t)
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(name_values, tensors))
        raise ValueError(f"counts must have broadcastable shapes; got {shapes}") from None
    return tensors, all_scalar, torch.float64 if out_dtype is None else out_dtype


def _finish(result: Tensor, all_scalar: bool, out_dtype: torch.dtype):
    return float(result.item()) if all_scalar else result.to(out_dtype)


def _ratio(num: Tensor, den: Tensor, zero_division: float) -> Tensor:
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, zero_division))


def _zero_division(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"zero_division must be a real number (or float('nan')); got {type_name(value)}")
    return float(value)


def iou(tp, fp, fn, *, zero_division: float = 1.0):
    """Intersection over union ``TP / (TP + FP + FN)`` (seed 001 eq 20, 002 eq 9).

    Counts may be Python numbers (a float is returned) or tensors (broadcast; a float64 tensor for
    integer counts). 0/0 (no crack, none predicted) gives ``zero_division`` (default 1).
    """
    (tp, fp, fn), s, dt = _counts_as_tensors({"tp": tp, "fp": fp, "fn": fn})
    return _finish(_ratio(tp, tp + fp + fn, _zero_division(zero_division)), s, dt)


def precision(tp, fp, *, zero_division: float = 1.0):
    """Precision ``TP / (TP + FP)`` (seed 002 eq 11; seed 001's PA, eq 21).

    Nothing predicted (0/0) gives ``zero_division`` (default 1: no false alarm was made).
    """
    (tp, fp), s, dt = _counts_as_tensors({"tp": tp, "fp": fp})
    return _finish(_ratio(tp, tp + fp, _zero_division(zero_division)), s, dt)


def recall(tp, fn, *, zero_division: float = 1.0):
    """Recall ``TP / (TP + FN)`` (seed 002 eq 11).

    Nothing to find (0/0) gives ``zero_division`` (default 1: nothing was missed). With a matching
    tolerance pass :attr:`Confusion.tp_gt` (detected ground-truth pixels) as ``tp``.
    """
    (tp, fn), s, dt = _counts_as_tensors({"tp": tp, "fn": fn})
    return _finish(_ratio(tp, tp + fn, _zero_division(zero_division)), s, dt)


def f1(tp, fp, fn, *, zero_division: float = 1.0):
    """F1 score ``2 TP / (2 TP + FP + FN)``, the harmonic mean ``2PR/(P+R)`` of seed 002 eq 11.

    Equal to the Dice coefficient of hard masks. 0/0 gives ``zero_division`` (default 1).
    """
    (tp, fp, fn), s, dt = _counts_as_tensors({"tp": tp, "fp": fp, "fn": fn})
    return _finish(_ratio(2 * tp, 2 * tp + fp + fn, _zero_division(zero_division)), s, dt)


def dice(tp, fp, fn, *, zero_division: float = 1.0):
    """Dice coefficient ``2 TP / (2 TP + FP + FN)`` of hard masks (seed 001 eq 4); same as :func:`f1`
    (``zero_division``: the value where the denominator is 0, no crack predicted or present)."""
    return f1(tp, fp, fn, zero_division=zero_division)


def pixel_accuracy(tp, fp, fn, tn, *, zero_division: float = 1.0):
    """Pixel accuracy ``(TP + TN) / (TP + FP + FN + TN)``; no valid pixel (0/0) gives ``zero_division``.

    Not seed 001's "PA", which is precision (eq 21).
    """
    (tp, fp, fn, tn), s, dt = _counts_as_tensors({"tp": tp, "fp": fp, "fn": fn, "tn": tn})
    return _finish(_ratio(tp + tn, tp + fp + fn + tn, _zero_division(zero_division)), s, dt)


def oii(tp, fp, fn):
    """Output imbalance index of seed 001 (eq 13-15).

    With ``x = FP/FN`` (eq 14) and the attenuation ``k = 1 - (2/pi) arctan((FP + FN) / (5 TP))``
    (eq 15)::

        OII = 1 - k / (x + 1/x - 1)    for x in (0, 1]   (FN >= FP: positive, "too few crack")
        OII = k / (x + 1/x - 1) - 1    for x > 1         (FP >  FN: negative, "too much crack")

    The value lies in [-1, 1]; its sign says which error dominates, its size how much (seed 001
    Table 1 is reproduced by the tests; its row 3 prints 0.334 where the equations give 0.344, and
    its row 1 prints 0.064 where they give 0.06345, which rounds to 0.063).

    Edge cases (decisions; the paper defines only the first):

    - IoU = 0, i.e. TP = 0 with FP + FN > 0: OII = 1, as the paper sets it (section 4.4.2),
      also when only false positives are present (the formula alone would give -1 there).
    - FP = 0 < FN (nothing falsely detected, cracks missed): the limit x -> 0+, where
      ``x + 1/x - 1 -> inf``, so OII = 1.
    - FN = 0 < FP: the limit x -> inf, OII = -1.
    - FP = FN = 0 (perfect prediction, also an empty target with an empty prediction): OII = 0.
      FP = FN means x = 1, where both branches read ``1 - k`` and ``k - 1``, and here k = 1
      (arctan 0 = 0), so both give 0: the formula is continuous and symmetric there.

    Computed as ``k y / (y^2 - y + 1)`` with ``y = min(FP, FN) / max(FP, FN)`` for
    ``k / (x + 1/x - 1)`` (the same for FP, FN > 0: the expression is symmetric in ``x`` and
    ``1/x``), which gives the limits above without division by zero, and no square that over- or
    underflows for counts near float64's range. Counts may be Python
    numbers (a float is returned) or tensors (broadcast; float64 for integer counts, otherwise
    the counts' floating dtype, computed in float64). Fractions of counts are fine (Table 1 has
    0.5 and 0.2).
    """
    (tp, fp, fn), s, dt = _counts_as_tensors({"tp": tp, "fp": fp, "fn": fn})
    k = 1.0 - (2.0 / math.pi) * torch.atan2(fp + fn, 5.0 * tp)  # atan2(0, 0) = 0: k = 1
    big, small = torch.maximum(fp, fn), torch.minimum(fp, fn)
    x = small / torch.where(big > 0, big, torch.ones_like(big))  # in [0, 1]: no square over- or underflows
    ratio = torch.where(big > 0, k * x / (x * x - x + 1.0), k)
    value = torch.where(fp <= fn, 1.0 - ratio, ratio - 1.0)
    value = torch.where((tp == 0) & (fp + fn > 0), torch.ones_like(value), value)
    return _finish(value, s, dt)


# --------------------------------------------------------------------------------------------
# dilation by a disk


def _disk_rows(radius: float, ndim: int) -> list[tuple[tuple[int, ...], int]]:
    """Offsets of the ball of the given radius, as (offset on the leading axes, half-width on the
    last axis): the ball is the union of these 1-D segments."""
    r2 = radius * radius
    ri = int(math.floor(radius))
    rows = []

    def half_width(s: int) -> int:
        w = int(math.isqrt(max(int(math.floor(r2 - s)), 0)))
        while (w + 1) ** 2 + s <= r2:
            w += 1
        while w > 0 and w * w + s > r2:
            w -= 1
        return w

    def rec(prefix: tuple[int, ...], s: int):
        if len(prefix) == ndim - 1:
            rows.append((prefix, half_width(s)))
            return
        for d in range(-ri, ri + 1):
            if s + d * d <= r2:
                rec(prefix + (d,), s + d * d)

    rec((), 0)
    return rows


def max_filter(x: Tensor, radius: float, spatial_dims: int) -> Tensor:
    """Grey-scale dilation: the maximum of ``x`` over a Euclidean disk (ball) of ``radius``.

    ``out[i] = max{x[j] : |i - j| <= radius}`` over the last ``spatial_dims`` axes (1 to 3);
    outside the image counts as -inf. For a 0/1 mask this is binary dilation, and thresholding
    commutes with it: ``max_filter(p) >= th`` is the dilation of ``p >= th``, which lets ODS/OIS
    dilate once for all thresholds. The ball is split into 1-D segments along the last axis, each a
    ``max_pool1d``: ``O(r^(d-1))`` vectorised ops, no per-pixel loop. Returns float32 (float64
    stays float64).
    """
    radius = check_number("radius", radius, low=0.0)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type_name(x)}")
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or not 1 <= spatial_dims <= min(3, x.ndim):
        raise ValueError(f"spatial_dims must be 1, 2 or 3 and at most x.ndim = {x.ndim}; got {spatial_dims!r}")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if radius < 1:
        return x.clone()
    shape = x.shape
    lead = shape[: x.ndim - spatial_dims]
    sp = shape[x.ndim - spatial_dims :]
    ri = int(math.floor(radius))
    # pad the leading spatial axes by ri with -inf (max_pool1d pads the last axis itself)
    xp = _pad_leading(x.reshape(-1, *sp), ri, spatial_dims - 1)
    rows = _disk_rows(radius, spatial_dims)
    flat = xp.reshape(-1, 1, sp[-1])
    cache: dict[int, Tensor] = {}
    out = None
    for offset, w in rows:
        if w not in cache:
            pooled = flat if w == 0 else F.max_pool1d(flat, 2 * w + 1, stride=1, padding=w)
            cache[w] = pooled.reshape(xp.shape)
        src = cache[w]
        index = (slice(None),) + tuple(slice(ri + d, ri + d + n) for d, n in zip(offset, sp[:-1])) + (slice(None),)
        piece = src[index]
        out = piece if out is None else torch.maximum(out, piece)
    return out.reshape(*lead, *sp)


def _pad_leading(x: Tensor, r: int, n: int) -> Tensor:
    """Pad axes 1..n of ``x`` (the leading spatial axes) by ``r`` on both sides with -inf."""
    for axis in range(1, n + 1):
        shape = list(x.shape)
        shape[axis] = r
        fill = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device)
        x = torch.cat([fill, x, fill], dim=axis)
    return x


# --------------------------------------------------------------------------------------------
# confusion counts at one threshold


@dataclass(frozen=True)
class Confusion:
    """Hard confusion counts, int64 tensors of shape ``[B, C]`` (per image and channel), or ``[C]``
    after :meth:`total`.

    - ``tp``: predicted pixels that hit the ground truth (within the tolerance),
    - ``fp``: predicted pixels that do not,
    - ``fn``: ground-truth pixels with no predicted pixel within the tolerance,
    - ``tn``: valid pixels neither predicted nor ground truth,
    - ``tp_gt``: ground-truth pixels with a predicted pixel within the tolerance.

    With ``tolerance=0``, ``tp_gt == tp`` and ``tp + fp + fn + tn`` is the number of valid pixels.
    With a tolerance, precision is ``tp / (tp + fp)`` but recall is ``tp_gt / (tp_gt + fn)``:
    use the methods below, which pick the right counts.
    """

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor
    tp_gt: Tensor

    def total(self) -> "Confusion":
        """Counts summed over the images (dim 0): the per-data-set counts, shape ``[C]``."""
        return Confusion(*(getattr(self, f.name).sum(0) for f in fields(self)))

    @staticmethod
    def cat(parts: "list[Confusion]") -> "Confusion":
        """Concatenate per-image counts of several batches along the image axis."""
        if not parts:
            raise ValueError("parts must be a non-empty list of Confusion")
        return Confusion(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Confusion)))

    def precision(self, zero_division: float = 1.0) -> Tensor:
        return precision(self.tp, self.fp, zero_division=zero_division)

    def recall(self, zero_division: float = 1.0) -> Tensor:
        return recall(self.tp_gt, self.fn, zero_division=zero_division)

    def f1(self, zero_division: float = 1.0) -> Tensor:
        """``2PR/(P+R)`` of :meth:`precision` and :meth:`recall` (0 when both are 0); with
        ``tolerance=0`` this equals ``2TP/(2TP+FP+FN)`` except that 0/0 gives ``zero_division``."""
        if torch.equal(self.tp, self.tp_gt):
            return f1(self.tp, self.fp, self.fn, zero_division=zero_division)
        p, r = self.precision(zero_division), self.recall(zero_division)
        nothing = (self.tp + self.fp + self.fn) == 0  # nothing predicted, nothing to find: 0/0
        return torch.where(nothing, torch.full_like(p, _zero_division(zero_division)), _ratio(2 * p * r, p + r, 0.0))

    def dice(self, zero_division: float = 1.0) -> Tensor:
        return self.f1(zero_division)

    def iou(self, zero_division: float = 1.0) -> Tensor:
        return iou(self.tp, self.fp, self.fn, zero_division=zero_division)

    def pixel_accuracy(self, zero_division: float = 1.0) -> Tensor:
        return pixel_accuracy(self.tp, self.fp, self.fn, self.tn, zero_division=zero_division)

    def oii(self) -> Tensor:
        return oii(self.tp, self.fp, self.fn)

    def as_dict(self) -> dict[str, Tensor]:
        """Every metric of these counts, by name."""
        return {
            "iou": self.iou(),
            "precision": self.precision(),
            "recall": self.recall(),
            "f1": self.f1(),
            "pixel_accuracy": self.pixel_accuracy(),
            "oii": self.oii(),
        }


def _check_tolerance(tolerance) -> float:
    return check_number("tolerance", tolerance, low=0.0)


def _hard_inputs(pred, target, *, from_logits, ignore, name="pred", target_name="target"):
    """Validate; return (probabilities or hard 0/1 as float, binary target bool, valid bool)."""
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool; got {type_name(from_logits)}")
    if isinstance(pred, Tensor) and pred.dtype == torch.bool:
        if from_logits:
            raise ValueError(f"{name} is a bool mask (a hard prediction); from_logits must be False")
        pred = pred.to(torch.float32)
    check_input_tensor(pred, name=name)
    checked = check_loss_inputs(pred, target, from_logits=True, ignore=ignore, name=name, target_name=target_name)
    t = checked.target
    if bool(((t != 0) & (t != 1)).any()):
        raise ValueError(f"{target_name} must be binary (0 or 1) outside ignored pixels for hard metrics")
    valid = checked.valid if checked.valid is not None else torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    scored = checked.input[valid]  # ignored pixels may hold anything, as in the losses
    # A NaN would be counted as background (NaN >= threshold is False) and score as a miss.
    if bool(torch.isnan(scored).any()):
        raise ValueError(f"{name} holds NaN outside ignored pixels")
    if not from_logits and scored.numel() and _outside_unit_interval(scored):
        hint = "pass from_logits=True for logits" if name == "pred" else "apply torch.sigmoid to logits first"
        raise ValueError(f"{name} must hold probabilities in [0, 1]; {hint}")
    x = checked.input.to(torch.float64 if pred.dtype == torch.float64 else torch.float32)
    if from_logits:
        x = torch.sigmoid(x)
    return x, t.bool() & valid, valid


def confusion(pred, target, *, threshold: float = 0.5, from_logits: bool = False, ignore=None, tolerance: float = 0) -> Confusion:
    """Hard confusion counts per image and channel (shape ``[B, C]``, int64).

    A pixel is predicted crack when its probability is ``>= threshold`` (for logits,
    ``sigmoid(z) >= threshold``); ``pred`` holds probabilities unless ``from_logits=True``, or is a
    bool mask (the hard prediction). ``target`` must be binary outside ignored pixels. ``ignore``:
    a mask (nonzero = ignored) or the ``ignore_index`` value in ``target``; ignored pixels count
    nowhere. ``tolerance`` r >= 0 (pixels): a predicted pixel within Euclidean distance r of a
    ground-truth pixel is a ``tp`` (else ``fp``); a ground-truth pixel within r of a prediction is
    a ``tp_gt`` (else ``fn``). Sum over the data set with :meth:`Confusion.total`.
    """
    threshold = check_number("threshold", threshold, low=0.0, high=1.0)
    tolerance = _check_tolerance(tolerance)
    probs, gt, valid = _hard_inputs(pred, target, from_logits=from_logits, ignore=ignore)
    hard = (probs >= threshold) & valid
    spatial = probs.ndim - 2
    if tolerance >= 1:
        near_gt = max_filter(gt.to(torch.float32), tolerance, spatial) > 0.5
        near_pred = max_filter(hard.to(torch.float32), tolerance, spatial) > 0.5
    else:
        near_gt, near_pred = gt, hard
    dims = tuple(range(2, probs.ndim))
    tp = (hard & near_gt).sum(dims)
    fp = hard.sum(dims) - tp
    tp_gt = (gt & near_pred).sum(dims)
    fn = gt.sum(dims) - tp_gt
    tn = (valid & ~hard & ~gt).sum(dims)
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn, tp_gt=tp_gt)


# --------------------------------------------------------------------------------------------
# counts over a grid of thresholds, ODS and OIS


def _thresholds(thresholds, device, dtype) -> Tensor:
    if isinstance(thresholds, int) and not isinstance(thresholds, bool):
        if thresholds < 1:
            raise ValueError(f"thresholds must be a positive number of levels or a 1-D tensor; got {thresholds}")
        n = thresholds
        return (torch.arange(1, n + 1, dtype=torch.float64, device=device) / (n + 1)).to(dtype)
    if not isinstance(thresholds, Tensor):
        raise TypeError(f"thresholds must be an int (number of levels) or a 1-D tensor; got {type_name(thresholds)}")
    if thresholds.ndim != 1 or thresholds.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D tensor; got shape {tuple(thresholds.shape)}")
    th = thresholds.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(th).all()) or bool((th < 0).any()) or bool((th > 1).any()):
        raise ValueError("thresholds must be finite values in [0, 1]")
    th = torch.unique(th.to(dtype))  # sorted, duplicates removed
    return th


def _count_ge(values: Tensor, mask: Tensor, thresholds: Tensor) -> Tensor:
    """``out[b, j] = #{i : mask[b, i] and values[b, i] >= thresholds[j]}``, int64 ``[B, T]``.

    One bucketize and one bincount over all pixels (no loop over thresholds): the bucket of v is
    the number of thresholds <= v, so v >= th_j exactly when its bucket is > j.
    """
    B = values.shape[0]
    T = thresholds.numel()
    bucket = torch.searchsorted(thresholds, values.contiguous(), right=True)  # [B, N] in 0..T
    bucket = bucket + torch.arange(B, device=values.device).unsqueeze(1) * (T + 1)
    hist = torch.bincount(bucket[mask], minlength=B * (T + 1)).view(B, T + 1)
    return hist[:, 1:].flip(1).cumsum(1).flip(1)


@dataclass(frozen=True)
class ThresholdCounts:
    """Per-image counts at every threshold (inputs of ODS/OIS); ``[B, T]`` int64 unless noted.

    ``n_pred``: predicted pixels; ``tp_pred``: predicted pixels within the tolerance of the ground
    truth; ``n_gt`` ``[B]``: ground-truth pixels; ``tp_gt``: ground-truth pixels within the
    tolerance of a prediction; ``thresholds`` ``[T]``; ``n_valid`` ``[B]``: pixels not ignored
    (``None`` in counts made by hand: every image is then scored). Batches are joined by
    :meth:`cat`, so a data set can be scored batch by batch.
    """

    n_pred: Tensor
    tp_pred: Tensor
    n_gt: Tensor
    tp_gt: Tensor
    thresholds: Tensor
    n_valid: Tensor | None = None

    @staticmethod
    def cat(parts: "list[ThresholdCounts]") -> "ThresholdCounts":
        if not parts:
            raise ValueError("parts must be a non-empty list of ThresholdCounts")
        th = parts[0].thresholds
        for p in parts[1:]:
            if not torch.equal(p.thresholds.cpu(), th.cpu()):
                raise ValueError("all parts must use the same thresholds")
        valid = [p.n_valid for p in parts]
        return ThresholdCounts(
            *(torch.cat([getattr(p, n) for p in parts]) for n in ("n_pred", "tp_pred", "n_gt", "tp_gt")),
            thresholds=th,
            n_valid=None if any(v is None for v in valid) else torch.cat(valid),
        )


def threshold_counts(probs, targets, *, thresholds=99, tolerance: float = 0, ignore=None) -> ThresholdCounts:
    """Counts of every image at every threshold, for :func:`ods_ois_from_counts`.

    ``probs``: probabilities ``[B, 1, *spatial]`` (or ``[B, C, ...]`` with C = 1; score several
    channels one at a time); ``targets`` binary, ``[B, 1, *spatial]`` or ``[B, *spatial]``.
    ``thresholds``: an int n gives the grid ``k/(n+1)``, k = 1..n (BSDS's grid; the default 99 is
    0.01..0.99, which contains 0.5), or a 1-D tensor of values in [0, 1] (sorted, duplicates
    dropped). Pixel i is predicted at threshold th when ``probs[i] >= th``, compared in the
    probabilities' compute dtype (float32, or float64 for float64 input); the thresholds are cast
    to it. ``tolerance``: matching radius r in pixels, see the module docstring; dilating the
    probabilities once with :func:`max_filter` serves all thresholds. ``ignore``: as in the
    losses (a bool/integer mask, nonzero = ignored, or the ignore_index value in ``targets``):
    ignored pixels count nowhere, neither as predictions nor as ground truth.
    """
    tolerance = _check_tolerance(tolerance)
    if isinstance(probs, Tensor) and probs.ndim >= 3 and probs.shape[1] != 1:
        raise ValueError(
            f"probs must have one channel ([B, 1, *spatial]); got shape {tuple(probs.shape)}: "
            "score each channel separately, e.g. probs[:, c:c+1], or add the channel axis of "
            "[B, H, W] images, probs.unsqueeze(1)"
        )
    p, gt, valid = _hard_inputs(probs, targets, from_logits=False, ignore=ignore, name="probs", target_name="targets")
    th = _thresholds(thresholds, p.device, p.dtype)
    spatial = p.ndim - 2
    B = p.shape[0]
    p_valid = torch.where(valid, p, torch.full_like(p, -math.inf))
    if tolerance >= 1:
        near_gt = max_filter(gt.to(p.dtype), tolerance, spatial) > 0.5
        p_near = max_filter(p_valid, tolerance, spatial)
    else:
        near_gt, p_near = gt, p_valid
    flat = lambda x: x.reshape(B, -1)  # noqa: E731
    n_pred = _count_ge(flat(p), flat(valid), th)
    tp_pred = _count_ge(flat(p), flat(valid & near_gt), th)
    tp_gt = tp_pred if tolerance < 1 else _count_ge(flat(p_near), flat(gt), th)
    n_gt = flat(gt).sum(1)
    return ThresholdCounts(n_pred=n_pred, tp_pred=tp_pred, n_gt=n_gt, tp_gt=tp_gt, thresholds=th,
                           n_valid=flat(valid).sum(1))


@dataclass(frozen=True)
class ODSOIS:
    """Result of :func:`ods_ois`.

    ODS (optimal data set scale): the one threshold with the best F1 of the counts pooled over
    all images; ``ods_precision``, ``ods_recall``, ``ods_f1``, ``ods_threshold``; the pooled curves
    ``precision``, ``recall``, ``f1`` ``[T]`` over ``thresholds`` ``[T]``.

    OIS (optimal image scale): each image at its own best threshold (``image_thresholds``,
    ``image_f1`` ``[B]``). ``ois_precision``, ``ois_recall``, ``ois_f1`` pool the counts of the
    images at their best thresholds (the BSDS benchmark's definition); ``ois_f1_mean`` is the
    mean of the per-image best F1 (the other definition in use). An image without any valid pixel
    (fully ignored) has nothing to score: its ``image_f1`` is NaN and it is left out of
    ``ois_f1_mean`` (as the losses leave such images out of their region means); it adds no
    count to the pooled scores anyway.
    """

    ods_precision: float
    ods_recall: float
    ods_f1: float
    ods_threshold: float
    ois_precision: float
    ois_recall: float
    ois_f1: float
    ois_f1_mean: float
    thresholds: Tensor
    precision: Tensor
    recall: Tensor
    f1: Tensor
    image_thresholds: Tensor
    image_f1: Tensor


def _prf(tp_pred, n_pred, tp_gt, n_gt):
    dt = torch.float64
    p = _ratio(tp_pred.to(dt), n_pred.to(dt), 1.0)
    r = _ratio(tp_gt.to(dt), n_gt.to(dt), 1.0)
    return p, r, _ratio(2 * p * r, p + r, 0.0)


#: F1 values within this relative distance of the best are ties: the same fraction reached by two
#: roundings (2/3 as 0.6666666666666665 and 0.6666666666666666) must not pick the later threshold.
TIE_TOLERANCE = 1e-12


def _first_best(f: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """The first index of the largest value of ``f`` (along ``dim``), values within
    :data:`TIE_TOLERANCE` of it counting as ties."""
    best = f.amax() if dim is None else f.amax(dim=dim, keepdim=True)
    near = f >= best * (1.0 - TIE_TOLERANCE)
    return torch.argmax(near.to(torch.uint8), dim=dim, keepdim=keepdim)


def ods_ois_from_counts(counts: ThresholdCounts) -> ODSOIS:
    """ODS and OIS from :class:`ThresholdCounts` (see :func:`ods_ois`)."""
    if not isinstance(counts, ThresholdCounts):
        raise TypeError(f"counts must be a ThresholdCounts; got {type_name(counts)}")
    n_gt = counts.n_gt.unsqueeze(1).expand_as(counts.n_pred)
    # ODS: pool over images, best threshold (first one on ties)
    P, R, Fs = _prf(counts.tp_pred.sum(0), counts.n_pred.sum(0), counts.tp_gt.sum(0), counts.n_gt.sum(0))
    j = int(_first_best(Fs))
    # OIS: best threshold per image, then pool the counts there
    _, _, Fi = _prf(counts.tp_pred, counts.n_pred, counts.tp_gt, n_gt)
    ji = _first_best(Fi, dim=1, keepdim=True)
    pick = lambda x: x.gather(1, ji).squeeze(1)  # noqa: E731
    p_o, r_o, f_o = _prf(pick(counts.tp_pred).sum(), pick(counts.n_pred).sum(), pick(counts.tp_gt).sum(), counts.n_gt.sum())
    best_f = pick(Fi)
    scored = best_f
    if counts.n_valid is not None:
        scored = best_f[counts.n_valid > 0]
        best_f = torch.where(counts.n_valid > 0, best_f, torch.full_like(best_f, math.nan))
    return ODSOIS(
        ods_precision=float(P[j]),
        ods_recall=float(R[j]),
        ods_f1=float(Fs[j]),
        ods_threshold=float(counts.thresholds[j]),
        ois_precision=float(p_o),
        ois_recall=float(r_o),
        ois_f1=float(f_o),
        ois_f1_mean=float(scored.mean()) if scored.numel() else math.nan,
        thresholds=counts.thresholds,
        precision=P,
        recall=R,
        f1=Fs,
        image_thresholds=counts.thresholds[ji.squeeze(1)],
        image_f1=best_f,
    )


def ods_ois(probs, targets, *, thresholds=99, tolerance: float = 0, ignore=None) -> ODSOIS:
    """ODS and OIS precision, recall and F1 over a grid of thresholds (seed 002, section IV).

    ODS: one threshold for the whole data set, the one maximising F1 of the pooled counts.
    OIS: the best threshold of each image. P = TP/(TP+FP), R = TP/(TP+FN), F1 = 2PR/(P+R)
    (002 eq 11), with the 0/0 convention of this module (P = 1 with nothing predicted, R = 1 with
    nothing to find, F1 = 0 when P + R = 0), so a crack-free image with a clean prediction scores 1.
    Ties (F1 within 1e-12 relative, :data:`TIE_TOLERANCE`) pick the lowest threshold. No
    interpolation between thresholds (BSDS interpolates).

    Arguments as :func:`threshold_counts`; ``probs`` ``[B, 1, *spatial]`` in [0, 1]. For a data set
    larger than one batch, join per-batch :func:`threshold_counts` with :meth:`ThresholdCounts.cat`
    and call :func:`ods_ois_from_counts`.
    """
    return ods_ois_from_counts(threshold_counts(probs, targets, thresholds=thresholds, tolerance=tolerance, ignore=ignore))
