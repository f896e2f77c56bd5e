"""Distribution-based (pointwise) losses of the catalog, as literal transcriptions of their formulas.

Notation (``LOSSES.md``): ``z`` logits, ``p = sigmoid(z)``, ``t`` the target in [0, 1]. Every loss
is a per-pixel term

    l = t * (foreground term) + (1 - t) * (background term)

(the mixture is fastseg's rule for soft labels; for hard labels it is the paper's case
distinction), reduced by :func:`~fastseg.reference._common.reduce_pointwise`: ``weight`` scales
each pixel's term, ignored pixels count nowhere, ``"mean"`` divides by the number of valid pixels
of the batch, ``"sum"`` adds, ``"none"`` returns the per-pixel map (ignored pixels 0).

Common signature::

    fn(input, target, *, <loss parameters>, from_logits=True, reduction="mean", ignore=None, weight=None)

- ``input``: logits ``[B, C, *spatial]`` (1-3 spatial dims), or probabilities in [0, 1] with
  ``from_logits=False`` (logs are clamped at -100 as ``torch.nn.BCELoss`` does; the margin
  losses map probabilities to logits by ``log p - log(1-p)``).
- ``target``: same shape (or ``[B, *spatial]`` when C = 1), values in [0, 1], soft labels allowed.
- ``ignore``: mask tensor (nonzero = ignored) or the ``ignore_index`` value in ``target``.
- ``weight``: non-negative per-pixel weight map, broadcastable to the input's shape.

Numerics: ``log p`` and ``log(1-p)`` are ``logsigmoid(z)`` and ``logsigmoid(-z)``; powers of
probabilities are taken in log space, ``p^g = exp(g log p)`` and ``(1-p)^g = exp(g log(1-p))``,
so the focusing factors and their gradients stay finite for every ``g >= 0`` and every logit
(also ``|z| = 80`` and fp16 inputs, which are computed in float32; float64 stays float64). The
result has the compute dtype (float32 for fp16/bf16/fp32 inputs, float64 for float64).

Class weights computed from the target (:func:`balanced_bce`, :func:`adaptive_wce`) carry no
gradient, and are computed per channel over the valid pixels of the whole batch (each channel is
its own binary problem; for C = 1, the usual case, that is the whole batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import REDUCTIONS, CheckedInputs, check_choice, check_loss_inputs, check_number, check_probability
from ._common import LOG_CLAMP, as_compute, log_probs, logits_of, reduce_pointwise

__all__ = [
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

ADAPTIVE_Q = ("xie", "power", "log", "exp")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _checked(input, target, from_logits, reduction, ignore, weight) -> CheckedInputs:
    check_choice("reduction", reduction, REDUCTIONS)
    return check_loss_inputs(input, target, from_logits=from_logits, ignore=ignore, weight=weight, zero_ignored=True)


def _lam_pair(name: str, lam) -> tuple[float, float]:
    """Class weights ``(lam, 1 - lam)``; ``None`` means no class weight, ``(1, 1)``."""
    if lam is None:
        return 1.0, 1.0
    lam = check_probability(name, lam)
    return lam, 1.0 - lam


def _pow(log_base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` from ``log base``: ``exp(exponent * log base)`` (1 when exponent = 0)."""
    return torch.exp(exponent * log_base)


def _pow_clamped(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for ``base >= 0``, the base clamped to the smallest normal float.

    The clamp keeps the gradient finite for exponents below 1 at ``base = 0`` (it is 0 there).
    """
    if exponent == 0:
        return torch.ones_like(base)
    return base.clamp_min(torch.finfo(base.dtype).tiny) ** exponent


def _channel_counts(checked: CheckedInputs) -> tuple[Tensor, Tensor]:
    """``(n_pos, n_neg)`` per channel over the valid pixels of the batch, shaped to broadcast.

    ``n_pos = sum t`` (soft labels count fractionally), ``n_neg = N_valid - n_pos``; no gradient.
    """
    t = checked.target
    dims = (0, *range(2, t.ndim))
    if checked.valid is None:
        n = torch.full((t.shape[1],), t.numel() / t.shape[1], dtype=t.dtype, device=t.device)
    else:
        n = checked.valid.to(t.dtype).sum(dim=dims)
    n_pos = t.sum(dim=dims)  # ignored pixels already hold t = 0
    shape = (1, t.shape[1]) + (1,) * (t.ndim - 2)
    n_pos = n_pos.detach().reshape(shape)
    n_neg = (n.reshape(shape) - n_pos).clamp_min(0)
    return n_pos, n_neg


# --------------------------------------------------------------------------------------------
# cross-entropy family
# --------------------------------------------------------------------------------------------


def bce(input, target, *, from_logits=True, reduction="mean", ignore=None, weight=None) -> Tensor:
    """Binary cross-entropy, ``-[t log p + (1-t) log(1-p)]``.

    Source: seed 000; seed 001 eq 1; seed 004 A. Equals
    ``torch.nn.functional.binary_cross_entropy_with_logits`` (and ``binary_cross_entropy`` with
    ``from_logits=False``) whenever no pixel is ignored.
    """
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    loss = -(t * log_p + (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def weighted_bce(input, target, *, lam=0.5, from_logits=True, reduction="mean", ignore=None, weight=None) -> Tensor:
    """Weighted binary cross-entropy, ``-[lam t log p + (1-lam)(1-t) log(1-p)]``.

    Source: seed 001 eq 2; seed 004 B. ``lam`` in [0, 1] (default 0.5, which is half the BCE)
    weights the foreground (crack) term, ``1 - lam`` the background term.
    """
    lam, one_m_lam = _lam_pair("lam", lam)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    loss = -(lam * t * log_p + one_m_lam * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def balanced_bce(input, target, *, from_logits=True, reduction="mean", ignore=None, weight=None) -> Tensor:
    """Balanced cross-entropy: weighted BCE with ``lam = beta``, the fraction of negative pixels.

        beta = N_neg / N,   l = -[beta t log p + (1-beta)(1-t) log(1-p)]

    Source: seed 004 C; the same as Xie's weighted cross-entropy, seed 002 eq 1 (there
    ``alpha`` = fraction of non-crack pixels). ``beta`` is computed per channel from the valid
    target pixels of the whole batch (``N = number of valid pixels``, ``N_neg = sum (1 - t)``, so
    soft labels count fractionally) and carries no gradient. Edge cases, as the formula gives them:
    a crack-free batch has ``beta = 1`` (the background term gets weight 0, the loss is 0), an
    all-crack batch ``beta = 0``; both finite. A channel with no valid pixel contributes nothing.
    """
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    n_pos, n_neg = _channel_counts(c)
    beta = n_neg / (n_pos + n_neg).clamp_min(1)
    loss = -(beta * t * log_p + (1 - beta) * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def _adaptive_q(q: str, alpha: Tensor, odds: Tensor, beta: float, gamma: float, a: float) -> Tensor:
    """The crack weight ``q(alpha)`` of seed 002 eq 3-7 (``odds = alpha / (1 - alpha)``)."""
    if q == "xie":  # eq 3
        return odds
    if q == "power":  # eq 4
        return beta * odds**gamma
    if q == "log":  # eq 5, clamped at 0 (see adaptive_wce)
        return beta * torch.log(odds).clamp_min(0)
    return beta * a ** (gamma * (2 * alpha - 1))  # eq 6 (eq 7: a = 10, gamma = 1)


def adaptive_wce(
    input,
    target,
    *,
    q="exp",
    beta=1.0,
    gamma=None,
    a=10.0,
    smooth=1.0,
    from_logits=True,
    reduction="mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Adaptive weighted cross-entropy, ``-[q(alpha) t log p + (1-t) log(1-p)]``.

    Source: seed 002 eq 2, with ``alpha`` the fraction of non-crack pixels in the batch and the
    crack weight ``q(alpha)`` one of

    - ``q="xie"``:   ``alpha / (1 - alpha)`` (eq 3, Xie's WCE; ignores ``beta``, ``gamma``, ``a``)
    - ``q="power"``: ``beta (alpha / (1 - alpha))^gamma``, ``0 < beta, gamma <= 1`` (eq 4)
    - ``q="log"``:   ``beta ln(alpha / (1 - alpha))``, ``0 < beta <= 1`` (eq 5)
    - ``q="exp"``:   ``beta a^(gamma (2 alpha - 1))``, ``0 < beta <= 1``, ``a > 1``,
      ``0 <= gamma <= 1`` (eq 6); eq 7, the paper's recommendation, is ``a = 10, gamma = 1``,
      so ``q <= 10``.

    Defaults: ``q="exp"`` (the paper's conclusion prefers it), ``beta=1`` (the paper's first
    comparison fixes beta = 1; its tables tune it in quartiles/octaves, e.g. 0.5 or 0.75),
    ``gamma=None`` meaning the paper's value for the chosen type (1/2 for "power", 1 for
    "exp"; "xie" and "log" use no ``gamma``), ``a=10`` (used by "exp" only).

    ``alpha`` is computed per channel over the valid target pixels of the whole batch, carries no
    gradient, and is Laplace-smoothed as seed 002 footnote 5 does for batches without crack
    pixels (where ``1 - alpha = 0``): with ``N_pos = sum t``, ``N_neg = N_valid - N_pos``,

        alpha = (N_neg + smooth) / (N_valid + 2 smooth),   alpha / (1 - alpha) = (N_neg + smooth) / (N_pos + smooth)

    ``smooth`` (default 1, add-one smoothing) must be >= 0; with ``smooth=0`` the formula is the
    paper's unsmoothed one, except that a class count below one pixel (a class absent from the
    batch, or soft labels summing to less than a pixel) is counted as one pixel, so a crack-free
    or all-crack batch still gives finite values and gradients.

    Decision: for ``q="log"``, ``ln(alpha / (1 - alpha))`` is negative when a batch has more
    crack than non-crack pixels, which would turn the crack term into a reward; the paper
    assumes ``alpha / (1 - alpha) >= 25`` (its Fig. 3), and fastseg clamps ``q`` at 0.
    """
    check_choice("q", q, ADAPTIVE_Q)
    beta = check_number("beta", beta, low=0.0, high=1.0, low_open=True)
    if q == "power":
        gamma = 0.5 if gamma is None else check_number("gamma", gamma, low=0.0, high=1.0, low_open=True)
    elif q == "exp":
        gamma = 1.0 if gamma is None else check_number("gamma", gamma, low=0.0, high=1.0)
    a = check_number("a", a, low=1.0, low_open=True)
    smooth = check_number("smooth", smooth, low=0.0)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target

    n_pos, n_neg = _channel_counts(c)
    n_pos, n_neg = n_pos + smooth, n_neg + smooth
    if smooth == 0:
        n_pos, n_neg = n_pos.clamp_min(1), n_neg.clamp_min(1)
    alpha = n_neg / (n_neg + n_pos)
    odds = n_neg / n_pos  # = alpha / (1 - alpha)
    q_alpha = _adaptive_q(q, alpha, odds, beta, gamma, a)

    loss = -(q_alpha * t * log_p + (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


# --------------------------------------------------------------------------------------------
# focal family
# --------------------------------------------------------------------------------------------


def focal(
    input, target, *, gamma=2.0, lam=None, from_logits=True, reduction="mean", ignore=None, weight=None
) -> Tensor:
    """Focal loss, ``-[lam (1-p)^g t log p + (1-lam) p^g (1-t) log(1-p)]``.

    Source: seed 001 eq 3; seed 004 D (Lin et al.). ``gamma >= 0`` (default 2); ``lam`` in [0, 1]
    or ``None`` (default) for no class weight (both terms weight 1). For hard labels it equals
    torchvision's ``sigmoid_focal_loss`` with ``alpha = lam`` (``alpha = -1`` for ``lam=None``);
    for soft labels it is the mixture of the two terms, as kornia's ``binary_focal_loss_with_logits``.
    With ``gamma = 0`` it is :func:`weighted_bce` (:func:`bce` when ``lam`` is None).
    """
    gamma = check_number("gamma", gamma, low=0.0)
    lam, one_m_lam = _lam_pair("lam", lam)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    loss = -(lam * _pow(log_1mp, gamma) * t * log_p + one_m_lam * _pow(log_p, gamma) * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def asymmetric_focal(
    input, target, *, gamma=2.0, delta=None, from_logits=True, reduction="mean", ignore=None, weight=None
) -> Tensor:
    """Asymmetric focal loss (aF), ``-[t log p + p^g (1-t) log(1-p)]``.

    Source: seed 000 eq 2 (Yeung et al.): only the background term is focused, the rare
    foreground keeps its full weight. ``gamma >= 0`` (default 2). Optional class weight as in
    Unified Focal (Yeung et al. 2022, their ``asymmetric_focal_loss``): with ``delta`` in [0, 1]
    the loss is ``-[delta t log p + (1-delta) p^g (1-t) log(1-p)]`` (Unified Focal's default is
    0.6; ``None``, the default here, means no class weight, as seed 000 eq 2 writes it).
    """
    gamma = check_number("gamma", gamma, low=0.0)
    delta, one_m_delta = _lam_pair("delta", delta)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    loss = -(delta * t * log_p + one_m_delta * _pow(log_p, gamma) * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def _check_margin(m) -> float:
    return check_number("m", m, low=0.0)


def asymmetric_margin(input, target, *, m=0.5, from_logits=True, reduction="mean", ignore=None, weight=None) -> Tensor:
    """Asymmetric large margin loss (aM), ``-[t log sigmoid(z - m) + (1-t) log(1-p)]``.

    Source: seed 000 eq 3 (Li et al.'s asymmetric large margin): the rare foreground's logit is
    shifted by the margin ``m >= 0`` (default 0.5, the seed's best value on DeepCrack; it
    recommends 0.5 to 1.5), i.e. the two-class softmax with ``m`` subtracted from the foreground
    logit. With ``m = 0`` it is :func:`bce`. For ``from_logits=False``, ``z = log p - log(1-p)``.
    """
    m = _check_margin(m)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    z = logits_of(c.input, from_logits)
    log_p_margin = F.logsigmoid(z - m)
    log_1mp = F.logsigmoid(-z)
    t = c.target
    loss = -(t * log_p_margin + (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def asymmetric_focal_margin(
    input, target, *, gamma=2.0, m=0.5, from_logits=True, reduction="mean", ignore=None, weight=None
) -> Tensor:
    """Asymmetric focal margin loss (aFM), ``-[t log sigmoid(z - m) + p^g (1-t) log(1-p)]``.

    Source: seed 000 eq 11, the seed's proposal: the regularised foreground term of aM (eq 3)
    with the focused background term of aF (eq 2); ``p = sigmoid(z)`` (no margin) in the focusing
    factor. ``gamma >= 0`` (default 2), ``m >= 0`` (default 0.5). With ``m = 0`` it is aF
    (:func:`asymmetric_focal`), with ``gamma = 0`` aM (:func:`asymmetric_margin`), with both 0 BCE.
    """
    gamma = check_number("gamma", gamma, low=0.0)
    m = _check_margin(m)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    z = logits_of(c.input, from_logits)
    log_p, log_1mp = F.logsigmoid(z), F.logsigmoid(-z)
    log_p_margin = F.logsigmoid(z - m)
    t = c.target
    loss = -(t * log_p_margin + _pow(log_p, gamma) * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


def focal_margin(
    input, target, *, gamma=2.0, m=0.5, from_logits=True, reduction="mean", ignore=None, weight=None
) -> Tensor:
    """Symmetric focal margin loss (FM), ``-[(1-p)^g t log sigmoid(z - m) + p^g (1-t) log(1-p)]``.

    Source: seed 000 eq 12; ``p = sigmoid(z)`` (no margin) in both focusing factors, as printed.
    Eq 12 as printed holds the foreground term only; the background term ``p^g (1-t) log(1-p)``
    is the catalog's completion (the focal loss's, which FM reduces to at ``m = 0``).
    ``gamma >= 0`` (default 2), ``m >= 0`` (default 0.5). With ``m = 0`` it is :func:`focal` without
    class weight, with ``gamma = 0`` aM (:func:`asymmetric_margin`), with both 0 BCE.
    """
    gamma = check_number("gamma", gamma, low=0.0)
    m = _check_margin(m)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    z = logits_of(c.input, from_logits)
    log_p, log_1mp = F.logsigmoid(z), F.logsigmoid(-z)
    log_p_margin = F.logsigmoid(z - m)
    t = c.target
    loss = -(_pow(log_1mp, gamma) * t * log_p_margin + _pow(log_p, gamma) * (1 - t) * log_1mp)
    return reduce_pointwise(loss, c, reduction)


# --------------------------------------------------------------------------------------------
# seed 001: exponential logarithmic CE and DIBE_Dis
# --------------------------------------------------------------------------------------------


def el_ce(
    input, target, *, lam=None, gamma_ce=1.0, from_logits=True, reduction="mean", ignore=None, weight=None
) -> Tensor:
    """Exponential logarithmic cross-entropy, ``lam (-log p)^gce`` (t=1), ``(1-lam)(-log(1-p))^gce`` (t=0).

    Source: seed 001 eq 11 (Wong et al.); soft labels mix the two cases with ``t`` and ``1 - t``.
    ``gamma_ce > 0`` (default 1, seed 001's setting, where the loss is (weighted) BCE);
    ``lam`` in [0, 1] or ``None`` (default) for no class weight. The power is taken as
    ``exp(gce log(-log p))`` (:func:`_el_power`), so ``gamma_ce < 1`` keeps a finite gradient at
    confident pixels (``-log p -> 0``), a logit whose ``-log p`` underflows keeps its
    ``e^(-gce |z|)``, and a probability of exactly 1 reads as the logit 100 (``e^(-100 gce)``).
    """
    lam, one_m_lam = _lam_pair("lam", lam)
    gamma_ce = check_number("gamma_ce", gamma_ce, low=0.0, low_open=True)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    _, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    z_abs = as_compute(c.input).abs() if from_logits else None
    fg, bg = _el_power(-log_p, gamma_ce, z_abs), _el_power(-log_1mp, gamma_ce, z_abs)
    return reduce_pointwise(lam * t * fg + one_m_lam * (1 - t) * bg, c, reduction)


def _el_power(nl: Tensor, gamma: float, z_abs: Tensor | None) -> Tensor:
    """``nl^gamma`` of ``nl = -log p`` (or ``-log(1-p)``), taken as ``exp(gamma log nl)``.

    Logits (``z_abs = |z|``): an ``nl`` below the smallest normal float has underflowed; it is
    ``e^(-|z|)`` to float precision, so ``log nl = -|z|`` and the power keeps ``e^(-gamma |z|)``
    (clamping ``nl`` gave ``tiny^gamma``: 0.49 instead of 4.5e-5 for ``gamma = 0.001`` at
    ``|z| = 1e4``). Probabilities: ``nl = 0`` at a probability of exactly 1 (0 for the
    background term); it reads as ``e^-100``, the value ``torch.nn.BCELoss``'s clamp
    ``log(1 - p) = -100`` gives the other log, i.e. the probability is read as the logit 100
    (as the fused path reads it): the power is ``e^(-100 gamma)``, below 1e-13 for ``gamma >= 0.3``.
    Either way the gradient stays finite (0 where the clamp applies).
    """
    tiny = torch.finfo(nl.dtype).tiny
    log_nl = nl.clamp_min(tiny).log()
    if z_abs is not None:
        log_nl = torch.where(nl >= tiny, log_nl, -z_abs)
    else:
        log_nl = torch.where(nl > 0, log_nl, LOG_CLAMP).clamp_min(LOG_CLAMP)
    return torch.exp(gamma * log_nl)


def dibe_dis(
    input,
    target,
    *,
    lam=0.75,
    gamma=2.0,
    alpha=0.3,
    beta=None,
    from_logits=True,
    reduction="mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """DIBE_Dis, the distribution term of the dual-imbalance loss (seed 001 eq 16).

    With ``yhat = [p >= 0.5]`` (the predicted label, no gradient)::

        y=1, yhat=1:  -lam (1-p)^g log p
        y=1, yhat=0:  -lam (1 - p^(1+alpha))^g (1+alpha) log p
        y=0, yhat=0:  -(1-lam) p^g log(1-p)
        y=0, yhat=1:  -(1-lam) (1 - (1-p)^(1+beta))^g (1+beta) log(1-p)

    The equation is implemented as printed: ``alpha`` acts on missed foreground pixels (y = 1
    predicted 0) and ``beta`` on false alarms (y = 0 predicted 1). The paper's text calls the
    y=1, yhat=0 region "FP"; by its own definitions of y and yhat it is a false negative
    (``LOSSES.md`` decision). Soft targets mix the y=1 and y=0 cases with weights ``t`` and
    ``1 - t``. With ``alpha = beta = 0`` it is :func:`focal` with the same ``lam`` and ``gamma``.

    Parameters (seed 001 section 3.2 and its experiments): ``lam`` in [0, 1], default 0.75;
    ``gamma >= 0``, default 2 (the paper searches [0, 4]); ``alpha`` in [0, 1], default 0.3;
    ``beta`` in [0, 1] or ``None`` (default) meaning ``1 - alpha``, the coupling of eq 19 and the
    paper's setting (alpha, beta) = (0.3, 0.7). ``1 - p^(1+alpha)`` is computed as
    ``-expm1((1+alpha) log p)`` and clamped to the smallest normal float before the power, so both
    branches stay finite (with finite gradients) at every logit.
    """
    lam, one_m_lam = _lam_pair("lam", lam)
    gamma = check_number("gamma", gamma, low=0.0)
    alpha = check_probability("alpha", alpha)
    beta = 1.0 - alpha if beta is None else check_probability("beta", beta)
    c = _checked(input, target, from_logits, reduction, ignore, weight)
    p, log_p, log_1mp = log_probs(c.input, from_logits)
    t = c.target
    yhat = (p.detach() >= 0.5).to(p.dtype)

    fg_hit = _pow(log_1mp, gamma) * -log_p  # (1-p)^g (-log p)
    fg_miss = _pow_clamped(-torch.expm1((1 + alpha) * log_p), gamma) * (1 + alpha) * -log_p
    bg_hit = _pow(log_p, gamma) * -log_1mp  # p^g (-log(1-p))
    bg_alarm = _pow_clamped(-torch.expm1((1 + beta) * log_1mp), gamma) * (1 + beta) * -log_1mp

    foreground = lam * (yhat * fg_hit + (1 - yhat) * fg_miss)
    background = one_m_lam * ((1 - yhat) * bg_hit + yhat * bg_alarm)
    loss = t * foreground + (1 - t) * background
    return reduce_pointwise(loss, c, reduction)

