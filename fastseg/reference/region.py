"""Region losses: functions of the soft confusion sums of a reduction group (``LOSSES.md``).

Notation: ``p = sigmoid(z)`` (or the probabilities given with ``from_logits=False``), ``t`` the
target in [0, 1] (soft labels used as they are), sums over the valid pixels of a group:
``TP = sum p t``, ``FP = sum p (1-t)``, ``FN = sum (1-p) t``.

Conventions shared by every function here:

- ``scope="image"``: one group per image and channel (statistics ``[B, C]``); ``"batch"``: one
  group per channel, summed over the batch (``[C]``).
- ``reduction``: ``"mean"`` averages the per-group losses, ``"sum"`` adds them, ``"none"``
  returns them (``[B, C]`` or ``[C]``). A group with no valid pixel (an image fully covered by
  ``ignore``) is set to 0 and left out of the mean; with no valid group at all the mean is 0.
- ``ignore``: ignored pixels leave every sum. Per-pixel weights scale pointwise terms only, never
  confusion sums: a ``weight`` given to a region loss raises ``ValueError`` (never silently unused).
- Smoothing ``eps`` (> 0) sits in numerator and denominator of each ratio; eps = 1 (seed 001
  eq 5) unless stated. With eps = 1 a crack-free image still penalises false positives: its Dice
  loss is ``1 - 1/(sum p + 1)``, never NaN.
- A loss ``1 - index`` is computed as ``misses/(hits + misses + eps)`` (:func:`miss_ratio`) and
  ``-log index`` as ``log1p(misses/(hits + eps))``: the same numbers, without the cancellation
  that costs ``1 - index`` its digits near a perfect prediction; ``1 - p`` as ``sigmoid(-z)``.
- Powers ``x ** k`` of a quantity that reaches 0 at a perfect prediction (``1 - TI``,
  ``-log Tv``) use :func:`power_near_zero`: exact for ``x >= 1e-6``, linear below, so the value
  is 0 at a perfect prediction and the gradient stays finite even for ``k < 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import (
    CheckedInputs,
    check_loss_inputs,
    check_no_weight,
    check_number,
    check_probability,
    check_scope_reduction,
)
from ._common import group_present, group_sum, log_probs, prediction_error, reduce_groups, soft_confusion

__all__ = [
    "dice",
    "squared_dice",
    "jaccard",
    "tversky",
    "focal_tversky",
    "dibe_reg",
    "log_cosh_dice",
    "sensitivity_specificity",
]

#: Below this, ``x ** k`` in :func:`power_near_zero` continues linearly (value 0 at x = 0).
POWER_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# Building blocks (also used by :mod:`.compound`)
# --------------------------------------------------------------------------------------------


def power_near_zero(x: Tensor, k: float) -> Tensor:
    """``x ** k`` for ``x >= 0`` with a finite gradient at 0 for any ``k >= 0``.

    Exact for ``x >= POWER_FLOOR``; below it the linear continuation ``x * POWER_FLOOR ** (k-1)``
    (value 0 at x = 0, slope ``POWER_FLOOR ** (k-1)``), which differs from ``x ** k`` by less than
    ``POWER_FLOOR ** k``. ``k = 0`` gives 1 (``0 ** 0 = 1``). Negative round-off in ``x`` counts
    as 0.
    """
    if k == 0:
        return x**0.0  # 1, still a function of x (zero gradient): a loss of it can be backpropagated
    x = x.clamp_min(0)
    if k >= 1:
        return x**k
    # x ** k of the clamped x: its gradient stays finite where the other piece is selected
    return torch.where(x >= POWER_FLOOR, x.clamp_min(POWER_FLOOR) ** k, x * POWER_FLOOR ** (k - 1))


def prepare(
    input, target, *, from_logits: bool, scope: str, reduction: str, ignore, weight, allow_none: bool = True
) -> tuple[CheckedInputs, Tensor]:
    """Validate a region-loss call; return the checked inputs and ``p``."""
    check_no_weight(weight)
    check_scope_reduction(scope, reduction, allow_none=allow_none)
    checked = check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, weight=weight, zero_ignored=True)
    p, _, _ = log_probs(checked.input, from_logits)
    return checked, p


def finish(per_group: Tensor, checked: CheckedInputs, scope: str, reduction: str) -> Tensor:
    """Reduce per-group losses, leaving out groups without valid pixels."""
    return reduce_groups(per_group, reduction, group_present(checked, scope))


def check_eps(eps) -> float:
    return check_number("eps", eps, low=0.0, low_open=True)


def tversky_weights(alpha, beta, delta) -> tuple[float, float]:
    """Resolve ``(alpha, beta)`` = (FP weight, FN weight) from either form.

    Tversky form (seed 001 eq 7): ``alpha`` weights FP, ``beta`` weights FN, defaults 0.3 / 0.7,
    each >= 0. Delta form (seed 000 eq 4, Unified Focal): ``delta`` in [0, 1] weights FN and
    ``1 - delta`` FP, i.e. ``alpha = 1 - delta``, ``beta = delta``. Giving both forms is an error.
    """
    if delta is not None:
        if alpha is not None or beta is not None:
            raise ValueError("pass either delta (the delta form) or alpha/beta (the Tversky form), not both")
        delta = check_probability("delta", delta)
        return 1.0 - delta, delta
    alpha = 0.3 if alpha is None else check_number("alpha", alpha, low=0.0)
    beta = 0.7 if beta is None else check_number("beta", beta, low=0.0)
    return alpha, beta


def miss_ratio(hits: Tensor, misses: Tensor, eps: float) -> Tensor:
    """``1 - (hits + eps)/(hits + misses + eps)``, written as ``misses/(hits + misses + eps)``: the
    same number without the cancellation of ``1 - index`` when the index is near 1 (a nearly perfect
    prediction, a crack-free image predicted clean), in the value and in its gradient."""
    return misses / (hits + misses + eps)


def neg_log_index(hits: Tensor, misses: Tensor, eps: float) -> Tensor:
    """``-log((hits + eps)/(hits + misses + eps))``, written as ``log1p(misses/(hits + eps))``."""
    return torch.log1p(misses / (hits + eps))


def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh x)`` as ``log1p(2 sinh(x/2)^2)``: ``cosh x`` rounds to 1 below x = 3e-4 in
    float32 (1e-8 in float64), where ``log cosh x = x^2/2`` still has every digit."""
    return torch.log1p(2 * torch.sinh(x / 2) ** 2)


def dice_parts(p: Tensor, checked: CheckedInputs, scope: str) -> tuple[Tensor, Tensor]:
    """Per group ``(2TP, FP + FN)``: ``Dc = (2TP + eps)/(2TP + FP + FN + eps)`` (seed 001 eq 5)."""
    tp, fp, fn = soft_confusion(p, checked, scope)
    return 2 * tp, fp + fn


def tversky_parts(p: Tensor, checked: CheckedInputs, scope: str, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """Per group ``(TP, alpha FP + beta FN)``: ``Tv = (TP + eps)/(TP + alpha FP + beta FN + eps)`` (seed 001 eq 7)."""
    tp, fp, fn = soft_confusion(p, checked, scope)
    return tp, alpha * fp + beta * fn


def jaccard_parts(p: Tensor, checked: CheckedInputs, scope: str) -> tuple[Tensor, Tensor]:
    """Per group ``(TP, FP + FN)``: ``J = (TP + eps)/(sum t + sum p - TP + eps)`` (seed 002 eq 10),
    ``sum t + sum p - TP = TP + FP + FN``."""
    tp, fp, fn = soft_confusion(p, checked, scope)
    return tp, fp + fn


# --------------------------------------------------------------------------------------------
# Public losses
# --------------------------------------------------------------------------------------------


def dice(
    input,
    target,
    *,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Dice loss ``1 - (2TP + eps)/(2TP + FP + FN + eps)`` per group (seed 001 eq 4-5, 004 E).

    ``2TP + FP + FN = sum p + sum t``, so this equals MONAI's ``DiceLoss(sigmoid=True,
    smooth_nr=eps, smooth_dr=eps, batch=(scope == "batch"))``. eps > 0, default 1 (seed 001: "generally
    assigned to 1"). A crack-free image gives ``1 - 1/(sum p + 1)``: false positives are still
    penalised (segmentation_models_pytorch zeroes such images). ``weight`` must be None (region
    term); see the module docstring for scope, reduction and ignore.
    """
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    return finish(miss_ratio(*dice_parts(p, checked, scope), eps), checked, scope, reduction)


def squared_dice(
    input,
    target,
    *,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Squared (Milletari, V-Net) Dice loss ``1 - (2 sum p t + eps)/(sum t^2 + sum p^2 + eps)`` (seed 000 eq 5).

    Computed as ``sum (p - t)^2 / (2 sum p t + sum (p - t)^2 + eps)``, the same value, because
    ``sum t^2 + sum p^2 - 2 sum p t = sum (p - t)^2``: near a perfect prediction ``1 - ratio``
    would keep only the digits of the ratio that survive the subtraction.
    eps > 0, default 1. ``weight`` must be None (region term).
    """
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    tp = group_sum(p * checked.target, checked, scope)
    squared_error = group_sum(prediction_error(p, checked) ** 2, checked, scope)
    return finish(miss_ratio(2 * tp, squared_error, eps), checked, scope, reduction)


def jaccard(
    input,
    target,
    *,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Jaccard (soft IoU) loss ``1 - (TP + eps)/(sum t + sum p - TP + eps)`` (seed 002 eq 9-10).

    Seed 002 calls eps a "Laplace smoothing item" and gives no value: eps > 0, default 1 as for
    Dice. ``weight`` must be None (region term).
    """
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    return finish(miss_ratio(*jaccard_parts(p, checked, scope), eps), checked, scope, reduction)


def tversky(
    input,
    target,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    delta: float | None = None,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Tversky loss ``1 - (TP + eps)/(TP + alpha FP + beta FN + eps)`` (seed 001 eq 6-7, 004 F).

    ``alpha`` weights FP and ``beta`` FN (the names of seed 001, MONAI and smp), defaults
    (0.3, 0.7) as seed 001 sets them; both >= 0. Alternatively the delta form of seed 000 eq 4 /
    Unified Focal: ``delta`` in [0, 1] weights FN and ``1 - delta`` FP (``delta = 0.7`` is the
    default pair again); give either ``delta`` or ``alpha``/``beta``. ``alpha = beta = 0.5`` is
    the Dice loss with smoothing ``2 eps`` (seed 001: "degenerates exactly into Dice", which holds
    for the unsmoothed ratio). eps > 0, default 1. ``weight`` must be None (region term).
    """
    alpha, beta = tversky_weights(alpha, beta, delta)
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    return finish(miss_ratio(*tversky_parts(p, checked, scope, alpha, beta), eps), checked, scope, reduction)


def focal_tversky(
    input,
    target,
    *,
    gamma: float = 0.75,
    alpha: float | None = None,
    beta: float | None = None,
    delta: float | None = None,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Focal Tversky loss ``(1 - TI)^gamma`` (seed 000 eq 6, 004 G; Abraham and Khan 2019).

    ``gamma`` is the exponent itself, >= 0, default 0.75, as seed 000 and the Unified Focal code
    write it. Seed 001 eq 8 writes ``(1 - Tv)^(1/gamma)`` with its gamma = 0.75: for that form pass
    ``gamma=1/0.75`` (= 4/3). ``gamma = 1`` is the Tversky loss. ``TI`` as in :func:`tversky`:
    ``alpha`` (FP) / ``beta`` (FN), defaults (0.3, 0.7), or the delta form (``delta`` weights FN,
    seed 000 eq 4, default pair delta = 0.7). eps > 0, default 1.

    For ``gamma < 1`` the gradient of ``x^gamma`` is infinite at ``x = 1 - TI = 0``: below 1e-6 the
    power continues linearly (:func:`power_near_zero`), so a perfect prediction gives 0 and a
    finite gradient. ``weight`` must be None (region term).
    """
    gamma = check_number("gamma", gamma, low=0.0)
    alpha, beta = tversky_weights(alpha, beta, delta)
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    one_minus_ti = miss_ratio(*tversky_parts(p, checked, scope, alpha, beta), eps)
    return finish(power_near_zero(one_minus_ti, gamma), checked, scope, reduction)


def dibe_reg(
    input,
    target,
    *,
    gamma: float = 1.5,
    alpha: float = 0.3,
    beta: float | None = None,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Region part of DIBE: ``(-log Tv)^(1/gamma)`` (seed 001 eq 18).

    ``Tv = (TP + eps)/(TP + alpha FP + beta FN + eps)`` (seed 001 eq 7): ``alpha`` weights FP,
    ``beta`` FN; ``beta=None`` means ``1 - alpha`` (seed 001 eq 19 ties them), so alpha must then
    lie in [0, 1]; defaults alpha = 0.3, beta = 0.7, eps = 1. ``gamma`` > 0, default 1.5 (seed
    001 section 4.3.2, gamma_DIBEReg).

    For gamma > 1 the gradient ``-(1/(gamma Tv)) (-log Tv)^(1/gamma - 1)`` (seed 001 eq 23) grows
    without bound as Tv -> 1 (Appendix A). Here ``-log Tv`` is clamped away from 0 inside the
    power: exact for ``-log Tv >= 1e-6``, linear below (:func:`power_near_zero`), so a perfect
    prediction gives 0 with a finite gradient, never NaN or inf. ``weight`` must be None.
    """
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    if beta is None:
        alpha = check_probability("alpha", alpha)
        beta = 1.0 - alpha
    else:
        alpha = check_number("alpha", alpha, low=0.0)
        beta = check_number("beta", beta, low=0.0)
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    neg_log_tv = neg_log_index(*tversky_parts(p, checked, scope, alpha, beta), eps)
    return finish(power_near_zero(neg_log_tv, 1.0 / gamma), checked, scope, reduction)


def log_cosh_dice(
    input,
    target,
    *,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Log-Cosh Dice loss ``log(cosh(L_Dice))`` per group (seed 004 O, Jadon 2020).

    ``L_Dice`` is :func:`dice` (eps > 0, default 1); the log-cosh is applied per group, then
    the groups are reduced. ``weight`` must be None (region term).
    """
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    loss = miss_ratio(*dice_parts(p, checked, scope), eps)
    return finish(log_cosh(loss), checked, scope, reduction)


def sensitivity_specificity(
    input,
    target,
    *,
    w: float = 0.05,
    eps: float = 1e-6,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Sensitivity-specificity loss (seed 004 H; Brosch et al. 2015), per group::

        w sum((t-p)^2 t)/(sum t + eps) + (1-w) sum((t-p)^2 (1-t))/(sum(1-t) + eps)

    ``w`` in [0, 1], default 0.05. Brosch's formula has no smoothing; ``eps`` (> 0, default
    1e-6) only keeps a class without pixels (a crack-free image) at 0/eps = 0 instead of 0/0.
    ``sum(1-t)`` runs over valid pixels only. ``weight`` must be None (region term).
    """
    w = check_probability("w", w)
    eps = check_eps(eps)
    checked, p = prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=weight)
    t = checked.target
    sq = prediction_error(p, checked) ** 2  # (t - p)^2
    sens = group_sum(sq * t, checked, scope) / (group_sum(t, checked, scope) + eps)
    spec = group_sum(sq * (1 - t), checked, scope) / (group_sum(1 - t, checked, scope) + eps)
    return finish(w * sens + (1 - w) * spec, checked, scope, reduction)
