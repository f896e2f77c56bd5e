"""Distance-based losses (``LOSSES.md``, "Distance-based losses"), as plain autograd code.

Every loss here reads a distance map computed from the target (and, for two of them, from the
thresholded prediction) with the exact EDT of :mod:`fastseg.edt`. Shared rules:

- Crack pixels are ``t > 0.5`` (MONAI's threshold; for binary masks simply ``t = 1``); the
  predicted mask is ``p > 0.5``.
- Distance maps carry no gradient (they are computed under ``no_grad`` or detached).
- ``distance=None`` computes the target's distance map here; pass a precomputed one (the same
  map, ``[B, C, *spatial]`` or ``[B, *spatial]`` for C = 1, non-negative) to skip the EDT. Each
  loss says which map it reads. Maps of the prediction are always computed.
- Ignored pixels (``ignore``) count nowhere: they leave every sum and mean, the per-image maxima
  that normalise distances, and the classes distance maps are computed from: they are neither
  crack nor background, like the outside of the image (:func:`fastseg.edt.boundary_field` and
  :func:`fastseg.edt.inner_boundary` with ``valid``; the distance to the nearest crack needs no
  care, an ignored pixel being no crack). So an ignored pixel inside a crack opens no boundary in
  it, and an image whose valid pixels hold one class has no boundary.
- ``weight`` scales the pointwise terms (all but :func:`distance_loss`, which has none).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import (
    REDUCTIONS,
    CheckedInputs,
    check_choice,
    check_distance_map,
    check_loss_inputs,
    check_no_weight,
    check_number,
    check_probability,
    check_scope_reduction,
    type_name,
)
from ..edt import boundary_field_of_mask, edt_of_mask, inner_boundary_of_mask
from . import pointwise as pw
from . import region as rg
from ._common import (
    group_present,
    group_sum,
    log_probs,
    masked,
    prediction_error,
    reduce_groups,
    reduce_pointwise,
    soft_confusion,
)

__all__ = ["distance_loss", "distance_map_ce", "hausdorff_dt", "shape_aware", "hybrid_focal_margin_distance"]


# ---------------------------------------------------------------------------------------- helpers


def _spatial(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _valid_bool(checked: CheckedInputs) -> Tensor:
    if checked.valid is None:
        return torch.ones(checked.input.shape, dtype=torch.bool, device=checked.input.device)
    return checked.valid


def _probs_and_ce(checked: CheckedInputs, from_logits: bool) -> tuple[Tensor, Tensor]:
    """``p`` and the per-pixel BCE ``-[t log p + (1-t) log(1-p)]`` (soft labels mix the two)."""
    p, log_p, log_1mp = log_probs(checked.input, from_logits)
    t = checked.target
    return p, -(t * log_p + (1 - t) * log_1mp)


def _predicted_mask(p: Tensor, checked: CheckedInputs) -> Tensor:
    """The thresholded prediction ``p > 0.5`` (no gradient), background at ignored pixels."""
    return (p.detach() > 0.5) & _valid_bool(checked)


def _group_max(x: Tensor, where: Tensor) -> Tensor:
    """Max of ``x >= 0`` over the pixels of ``where`` per image and channel (0 if none), keepdim."""
    return torch.where(where, x, torch.zeros((), dtype=x.dtype, device=x.device)).amax(dim=_spatial(x), keepdim=True)


def normalized_distance(distance: Tensor, crack: Tensor, valid: Tensor) -> Tensor:
    """ND of seed 003: the distance to the nearest crack divided by its maximum per image.

    The maximum is taken over the valid pixels of each image and channel, so ND is in [0, 1]. An
    image (channel) without crack pixels has ND = 1 everywhere (``LOSSES.md``); an image whose
    valid pixels are all cracks has maximum 0 and ND = 0 (no pixel can be a false positive).
    """
    spatial = _spatial(distance)
    top = _group_max(distance, valid)
    zero = torch.zeros((), dtype=distance.dtype, device=distance.device)
    nd = torch.where(top > 0, distance / top.clamp_min(torch.finfo(distance.dtype).tiny), zero)
    crack_free = ~(crack & valid).any(dim=spatial, keepdim=True)
    return torch.where(crack_free, torch.ones((), dtype=distance.dtype, device=distance.device), nd)


def inverted_boundary_distance(field: Tensor, crack: Tensor, valid: Tensor) -> Tensor:
    """Phi of the distance-map-penalised CE: 1 near the boundary, falling to 0 far from it.

    ``field`` is :func:`fastseg.edt.boundary_field` of the target (distance to the other class).
    Per image and channel, each class is inverted and normalised by its own maximum (over valid
    pixels): ``Phi = (M_fg - field) / M_fg`` on crack pixels, ``(M_bg - field) / M_bg`` on
    background pixels, so ``Phi`` is in [0, 1) and largest next to the boundary. Images holding a
    single class (no boundary) get ``Phi = 0``: plain CE.
    """
    zero = torch.zeros((), dtype=field.dtype, device=field.device)
    tiny = torch.finfo(field.dtype).tiny
    fg, bg = crack & valid, ~crack & valid
    top_fg, top_bg = _group_max(field, fg), _group_max(field, bg)
    phi_fg = torch.where(top_fg > 0, (top_fg - field) / top_fg.clamp_min(tiny), zero)
    phi_bg = torch.where(top_bg > 0, (top_bg - field) / top_bg.clamp_min(tiny), zero)
    phi = torch.where(crack, phi_fg, phi_bg).clamp(0, 1)
    spatial = _spatial(field)
    two_classes = fg.any(dim=spatial, keepdim=True) & bg.any(dim=spatial, keepdim=True)
    return torch.where(two_classes, phi, zero)


# ----------------------------------------------------------------------------------------- losses


def distance_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 4.0,
    eps: float = 1.0,
    eps_dist: float = 1e-6,
    distance: Tensor | None = None,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Distance-based loss of Özcan and Schmiedecke (seed 003, eq 1-3).

    Per reduction group (``scope``)::

        L_DL   = L_Dice * (1 + L_Dist * (alpha - 1))                          (eq 1)
        L_Dice = 1 - (2 TP + eps) / (2 TP + FP + FN + eps)                    (eq 2, corrected)
        L_Dist = sum(ND * p * (1 - t)) / (sum(p * (1 - t)) + eps_dist)        (eq 3)

    with soft ``TP = sum p t``, ``FP = sum p (1-t)``, ``FN = sum (1-p) t``. Seed 003's eq 2 prints
    ``2TP / (2TP + FP + FN)``, the Dice *coefficient*, which a minimiser would drive to zero
    overlap; it is read as the Dice loss ``1 - Dice`` (``LOSSES.md``), smoothed with ``eps`` = 1
    as the catalog's Dice. Eq 3 averages ND over the false-positive pixels; with soft predictions
    that is the FP-weighted mean of ND, so ``L_Dist`` is in [0, 1] and ``alpha`` scales the Dice
    loss between 1 (no false positive, or all next to cracks) and ``alpha`` (all far away).
    ``eps_dist`` only guards ``sum p (1-t) = 0`` (then ``L_Dist = 0``); it is not in the paper.

    ND, the normalised distance: the exact EDT of every pixel to the nearest crack pixel of its
    image (:func:`fastseg.edt.edt` of ``t > 0.5``, ``to="foreground"``) divided by the largest
    such distance in that image and channel; an image without crack pixels has ND = 1 everywhere
    (see :func:`normalized_distance`). No gradient flows through ND.

    Args:
        input: logits (or probabilities with ``from_logits=False``), ``[B, C, *spatial]``.
        target: ``[B, C, *spatial]`` or ``[B, *spatial]`` (C = 1), values in [0, 1].
        alpha: weight of far false positives, >= 0 (paper: 4; 1 gives the Dice loss).
        eps: Dice smoothing, > 0 (catalog default 1; 0 would make a crack-free image predicted
            empty 0/0).
        eps_dist: > 0, added to the denominator of ``L_Dist``.
        distance: optional precomputed ``edt(t > 0.5, to="foreground")`` (the raw EDT; it is
            normalised here).
        scope: ``"image"`` (per image and channel) or ``"batch"`` (per channel over the batch).
        reduction: ``"mean"``/``"sum"`` over groups, or ``"none"`` (``[B, C]`` or ``[C]``); groups
            without a valid pixel (fully ignored) are left out of the mean, as in the region losses.
        ignore: mask (nonzero = ignored) or ignore_index value in ``target``.
        weight: must be None (a region loss: no pointwise term to weight).
    """
    check_no_weight(weight, "distance_loss")
    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, zero_ignored=True)
    check_scope_reduction(scope, reduction)
    alpha = check_number("alpha", alpha, low=0.0)
    eps = check_number("eps", eps, low=0.0, low_open=True)  # 0 would give 0/0 on crack-free images predicted empty
    eps_dist = check_number("eps_dist", eps_dist, low=0.0, low_open=True)

    p, _, _ = log_probs(checked.input, from_logits)
    t = checked.target
    crack = t > 0.5
    valid = _valid_bool(checked)
    with torch.no_grad():
        d = check_distance_map(distance, checked.input, p.dtype)
        if d is None:
            d = edt_of_mask(crack, to="foreground", dtype=p.dtype)
        nd = normalized_distance(d, crack, valid)

    tp, fp, fn = soft_confusion(p, checked, scope)
    dice_loss = rg.miss_ratio(2 * tp, fp + fn, eps)  # 1 - (2TP + eps)/(2TP + FP + FN + eps)
    return reduce_groups(dice_loss * _distance_factor(p, nd, fp, checked, scope, alpha, eps_dist), reduction,
                         group_present(checked, scope))


def _distance_factor(p, nd, fp, checked, scope, alpha, eps_dist) -> Tensor:
    """Seed 003 eq 1 and 3 per group: ``1 + L_Dist (alpha - 1)``, ``L_Dist = sum(ND FP) / (sum FP + eps_dist)``."""
    dist = group_sum(nd * p * (1 - checked.target), checked, scope) / (fp + eps_dist)
    return 1 + dist * (alpha - 1)


def _nd(p: Tensor, checked: CheckedInputs, distance) -> Tensor:
    """ND of seed 003 for the target of ``checked`` (``distance``: optional precomputed raw EDT)."""
    crack = checked.target > 0.5
    with torch.no_grad():
        d = check_distance_map(distance, checked.input, p.dtype)
        if d is None:
            d = edt_of_mask(crack, to="foreground", dtype=p.dtype)
        return normalized_distance(d, crack, _valid_bool(checked))


def hausdorff_dt(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 2.0,
    distance: Tensor | None = None,
    from_logits: bool = True,
    reduction: str = "mean",
    ignore=None,
    weight: Tensor | None = None,
) -> Tensor:
    """Hausdorff distance-transform loss of Karimi and Salcudean 2019 (survey 004 M).

    ``L = mean over pixels of (p - t)^2 * (d_t^alpha + d_p^alpha)``, alpha = 2, where ``d_t`` and
    ``d_p`` are the distance maps of the ground truth (``t > 0.5``) and of the thresholded
    prediction (``p > 0.5``): for every pixel the distance to the nearest pixel of the other class
    (:func:`fastseg.edt.boundary_field`; 0 everywhere in an image holding a single class). This is
    MONAI's ``HausdorffDTLoss`` (``sigmoid=True`` for logits, ``include_background=True`` when
    C > 1, since every channel is its own binary problem here): with no ignore and no
    weight, ``reduction="mean"`` equals MONAI's (the mean over pixels of equal-sized images is the
    mean of MONAI's per-image means). Here the mean runs over the valid pixels of the batch,
    ``"sum"`` adds the per-pixel terms (MONAI's ``"sum"`` adds per-image means instead) and
    ``"none"`` returns them.

    Args:
        alpha: exponent of the distances, >= 0 (paper and MONAI: 2).
        distance: optional precomputed ``d_t = boundary_field(t > 0.5)`` (not raised to alpha;
            ``valid=~ignore`` with an ignore mask).
        weight: per-pixel weights of the terms.
        (others as in :func:`distance_loss`.)
    """
    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, weight=weight, zero_ignored=True)
    check_choice("reduction", reduction, REDUCTIONS)
    alpha = check_number("alpha", alpha, low=0.0)

    p, _, _ = log_probs(checked.input, from_logits)
    t = checked.target
    with torch.no_grad():
        d_t = check_distance_map(distance, checked.input, p.dtype)
        if d_t is None:
            d_t = boundary_field_of_mask(t > 0.5, dtype=p.dtype, valid=checked.valid)
        d_p = boundary_field_of_mask(_predicted_mask(p, checked), dtype=p.dtype, valid=checked.valid)
        penalty = d_t**alpha + d_p**alpha
    return reduce_pointwise(prediction_error(p, checked) ** 2 * penalty, checked, reduction)


def distance_map_ce(
    input: Tensor,
    target: Tensor,
    *,
    distance: Tensor | None = None,
    from_logits: bool = True,
    reduction: str = "mean",
    ignore=None,
    weight: Tensor | None = None,
) -> Tensor:
    """Distance-map-penalised cross entropy of Caliva et al. 2019 (survey 004 L).

    ``L = mean over pixels of (1 + Phi) * CE``, ``CE = -[t log p + (1-t) log(1-p)]``.

    Caliva et al. derive ``Phi`` from the distance transform of the ground truth, inverted so the
    penalty is largest at the object boundary, the hard region. Their abstract leaves the exact
    map open; this follows the shape of the widely used public form (JunMa11/SegLoss,
    ``compute_edts_forPenalizedLoss``): per image and channel, with ``field`` the distance of every
    pixel to the nearest pixel of the other class (:func:`fastseg.edt.boundary_field` of
    ``t > 0.5``), ``Phi = (M_fg - field) / M_fg`` on crack pixels and ``(M_bg - field) / M_bg``
    on background, ``M`` the class's largest field value (:func:`inverted_boundary_distance`).
    SegLoss divides by ``M - 1`` instead (``Phi = 1`` on the boundary), which is 0/0 on a crack
    one pixel wide, the common case here; dividing by ``M`` keeps every value finite. So the
    weight ``1 + Phi`` is ``2 - 1/M`` at the class boundary (1.5 on the pixels next to a crack
    3 px wide; 1 on a 1-px crack's own pixels, whose field is 1 = M) and 1 at the farthest pixel
    of each class. Crack-free and all-crack images have no boundary: ``Phi = 0`` (plain CE).

    Args:
        distance: optional precomputed ``boundary_field(t > 0.5)`` (raw, inverted here;
            ``valid=~ignore`` with an ignore mask).
        (others as in :func:`hausdorff_dt`.)
    """
    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, weight=weight, zero_ignored=True)
    check_choice("reduction", reduction, REDUCTIONS)

    p, ce = _probs_and_ce(checked, from_logits)
    crack = checked.target > 0.5
    with torch.no_grad():
        field = check_distance_map(distance, checked.input, p.dtype)
        if field is None:
            field = boundary_field_of_mask(crack, dtype=p.dtype, valid=checked.valid)
        phi = inverted_boundary_distance(field, crack, _valid_bool(checked))
    return reduce_pointwise((1 + phi) * ce, checked, reduction)


def shape_aware(
    input: Tensor,
    target: Tensor,
    *,
    distance: Tensor | None = None,
    from_logits: bool = True,
    reduction: str = "mean",
    ignore=None,
    weight: Tensor | None = None,
) -> Tensor:
    """Shape-aware loss (Hayder et al.; survey 004 I): CE weighted by a boundary distance.

    The survey writes ``L = sum_i CE - sum_i E_i CE`` with the log-likelihood sign convention,
    i.e. ``sum_i (1 + E_i) CE_i``, and describes ``E`` as "the average point to curve Euclidean
    distance among points around curve of predicted segmentation to the ground truth". Taken
    literally, per image and channel::

        E = mean over predicted boundary pixels of their distance to the nearest GT boundary pixel
        L = mean over pixels of (1 + E) * CE,      CE = -[t log p + (1-t) log(1-p)]

    Boundaries are :func:`fastseg.edt.inner_boundary` of ``p > 0.5`` (no gradient) and of
    ``t > 0.5``: foreground pixels with a background face neighbour. A perfect prediction has
    ``E = 0`` (plain CE); no predicted boundary also gives ``E = 0``. A prediction with a
    boundary in an image whose ground truth has none (crack-free, or all crack: the image border
    is no boundary) is measured against an empty curve: the EDT's documented fill, the image
    diagonal (:func:`fastseg.edt.empty_fill`), so false cracks on a clean tile weigh heavily but
    finitely. ``E`` carries no gradient.

    Args:
        distance: optional precomputed ``edt(inner_boundary(t > 0.5), to="foreground")`` (the
            distance of every pixel to the nearest ground-truth boundary pixel; ``valid=~ignore``
            in ``inner_boundary`` with an ignore mask).
        (others as in :func:`hausdorff_dt`.)
    """
    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, weight=weight, zero_ignored=True)
    check_choice("reduction", reduction, REDUCTIONS)

    p, ce = _probs_and_ce(checked, from_logits)
    with torch.no_grad():
        d = check_distance_map(distance, checked.input, p.dtype)
        if d is None:
            d = edt_of_mask(inner_boundary_of_mask(checked.target > 0.5, valid=checked.valid), to="foreground", dtype=p.dtype)
        pred_boundary = inner_boundary_of_mask(_predicted_mask(p, checked), valid=checked.valid)
        spatial = _spatial(d)
        count = pred_boundary.sum(dim=spatial, keepdim=True).to(p.dtype)
        e = masked(d * pred_boundary, checked).sum(dim=spatial, keepdim=True) / count.clamp_min(1)
    return reduce_pointwise((1 + e) * ce, checked, reduction)


def hybrid_focal_margin_distance(
    input: Tensor,
    target: Tensor,
    *,
    m: float = 0.5,
    gamma_f: float = 2.0,
    gamma: float = 0.75,
    delta: float = 0.7,
    symmetric: bool = False,
    lam: float | None = None,
    eps: float = 1.0,
    alpha: float = 4.0,
    eps_dist: float = 1e-6,
    distance: Tensor | None = None,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight: Tensor | None = None,
) -> Tensor:
    """Hybrid Focal Margin (seed 000 eq 13/14) with seed 003's distance factor on its region term.

    Per group (``scope``)::

        L = w_p mean(aFM) + w_r reduce_groups( FT * (1 + L_Dist (alpha - 1)) )
        L_Dist = sum(ND p (1 - t)) / (sum p (1 - t) + eps_dist)                    (seed 003 eq 3)

    ``aFM`` (``FM`` with ``symmetric=True``), ``FT``, ``w_p``, ``w_r`` and every shared parameter
    as in :func:`fastseg.reference.hybrid_focal_margin`; ``ND``, ``alpha``, ``eps_dist`` and
    ``distance`` as in :func:`distance_loss`. Seed 003 scales its region term (the Dice loss) by
    ``1 + L_Dist (alpha - 1)``; this composition scales seed 000's region term (focal Tversky) the
    same way, so false positives far from any crack cost up to ``alpha`` times more in the region
    term, while the pointwise focal margin term is unchanged. This is a composition of the two
    seeds, not a loss either paper evaluates. ``alpha = 1`` gives :func:`hybrid_focal_margin`.
    ``reduction``: ``"mean"`` or ``"sum"`` (a compound loss).
    """
    alpha = check_number("alpha", alpha, low=0.0)
    eps_dist = check_number("eps_dist", eps_dist, low=0.0, low_open=True)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool; got {type_name(symmetric)}")
    check_choice("reduction", reduction, ("mean", "sum"))
    check_scope_reduction(scope, reduction)
    if lam is None:
        lam = 0.5 if symmetric else None
    w_point, w_region = (1.0, 1.0) if lam is None else (check_probability("lam", lam), 1.0 - lam)
    kw = dict(from_logits=from_logits, ignore=ignore)
    margin_fn = pw.focal_margin if symmetric else pw.asymmetric_focal_margin
    margin_term = margin_fn(input, target, gamma=gamma_f, m=m, weight=weight, reduction=reduction, **kw)
    ft = rg.focal_tversky(input, target, gamma=gamma, delta=delta, eps=eps, scope=scope, reduction="none", **kw)

    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, zero_ignored=True)
    p, _, _ = log_probs(checked.input, from_logits)
    nd = _nd(p, checked, distance)
    _, fp, _ = soft_confusion(p, checked, scope)
    per_group = ft * _distance_factor(p, nd, fp, checked, scope, alpha, eps_dist)
    return w_point * margin_term + w_region * reduce_groups(per_group, reduction, group_present(checked, scope))
