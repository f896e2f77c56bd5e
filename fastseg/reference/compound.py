"""Compound losses: weighted sums of a pointwise term and a region term (``LOSSES.md``).

Each function calls the pointwise reference (:mod:`.pointwise`) and the region reference
(:mod:`.region`) and adds them; nothing is recomputed here except the two-class focal Tversky
term of Unified Focal and the ``(-log Dc)^gamma_dc`` term of the exponential logarithmic loss.

Conventions shared by every function here:

- ``reduction`` is ``"mean"`` (pointwise term averaged over the valid pixels of the batch, plus
  region term averaged over the groups) or ``"sum"`` (pointwise term summed over the valid
  pixels, plus region term summed over the groups). ``"none"`` has no meaning for a sum of a
  per-pixel and a per-group term and raises ``ValueError``.
- ``scope`` (``"image"`` or ``"batch"``) applies to the region term only, as in :mod:`.region`;
  groups without a valid pixel are left out of its mean.
- ``ignore`` applies to both terms; ``weight`` scales the pointwise term only (region terms
  never use per-pixel weights).
"""

from __future__ import annotations

from torch import Tensor

from .._checks import check_choice, check_number, check_probability, check_scope_reduction, type_name
from . import pointwise as pw
from . import region as rg
from ._common import complement, group_sum

__all__ = [
    "bce_dice",
    "combo",
    "exp_log",
    "hybrid_focal",
    "unified_focal",
    "hybrid_focal_margin",
    "dibe",
    "holistic",
]

COMPOUND_REDUCTIONS = ("mean", "sum")


def _check_reduction(scope: str, reduction: str) -> None:
    check_choice("reduction", reduction, COMPOUND_REDUCTIONS)
    check_scope_reduction(scope, reduction)


def _mix_weights(lam: float | None, default: float | None) -> tuple[float, float]:
    """``(w_pointwise, w_region)``: ``(lam, 1-lam)``, or ``(1, 1)`` when ``lam`` (and its default) is None."""
    lam = default if lam is None else check_probability("lam", lam)
    return (1.0, 1.0) if lam is None else (lam, 1.0 - lam)


def bce_dice(
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
    """BceDice ``mean(BCE) + L_Dice`` (seed 000 eq 1, the crack baseline of its ref. OptimizedCrack).

    ``L_Dice = 1 - (2TP + eps)/(2TP + FP + FN + eps)`` with eps > 0, default 1 (seed 000: the
    smoothing 1 lets crack-free samples contribute). Seed 000 eq 1 prints the Dice coefficient
    inside a negated sum, which read literally would reward poor overlap; the catalog's reading
    ``BCE + Dice loss`` is implemented. ``weight`` scales BCE only.
    """
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    return pw.bce(input, target, weight=weight, **kw) + rg.dice(input, target, eps=eps, scope=scope, **kw)


def combo(
    input,
    target,
    *,
    theta: float = 0.5,
    lam: float = 0.5,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Combo loss ``theta mean(WBCE) + (1 - theta) L_Dice`` (seed 001 eq 9, 004 J; Taghanaki et al.).

    ``WBCE = -[lam t log p + (1-lam)(1-t) log(1-p)]`` (seed 001 eq 2). ``theta`` in [0, 1],
    default 0.5 (seed 001); ``lam`` in [0, 1], default 0.5 (Combo's usual beta = 0.5); Dice eps > 0,
    default 1. ``weight`` scales WBCE only.
    """
    theta = check_probability("theta", theta)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    wbce = pw.weighted_bce(input, target, lam=lam, weight=weight, **kw)
    return theta * wbce + (1 - theta) * rg.dice(input, target, eps=eps, scope=scope, **kw)


def exp_log(
    input,
    target,
    *,
    theta: float = 0.5,
    lam: float | None = None,
    gamma_ce: float = 1.0,
    gamma_dc: float = 1.0,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Exponential logarithmic loss ``theta mean(EL_CE) + (1 - theta) (-log Dc)^gamma_dc``.

    Source: seed 001 eq 10-11, 004 K (Wong et al. 2018). ``EL_CE = lam (-log p)^gamma_ce`` for
    t = 1 and ``(1-lam)(-log(1-p))^gamma_ce`` for t = 0 (:func:`~.pointwise.el_ce`; ``lam=None``
    means no class weight); ``Dc = (2TP + eps)/(2TP + FP + FN + eps)`` per group (eq 5, eps > 0,
    default 1), and ``(-log Dc)^gamma_dc`` is averaged (or summed) over the groups. Defaults as
    seed 001 sets them: theta = 0.5, gamma_ce = gamma_dc = 1. ``gamma_dc > 0``; for gamma_dc < 1
    the power continues linearly below 1e-6 (:func:`~.region.power_near_zero`), so a perfect
    prediction keeps a finite gradient. ``weight`` scales EL_CE only.
    """
    theta = check_probability("theta", theta)
    gamma_dc = check_number("gamma_dc", gamma_dc, low=0.0, low_open=True)
    eps = rg.check_eps(eps)
    _check_reduction(scope, reduction)
    el = pw.el_ce(input, target, lam=lam, gamma_ce=gamma_ce, from_logits=from_logits, reduction=reduction, ignore=ignore, weight=weight)
    checked, p = rg.prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=None)
    neg_log_dc = rg.neg_log_index(*rg.dice_parts(p, checked, scope), eps)
    region = rg.finish(rg.power_near_zero(neg_log_dc, gamma_dc), checked, scope, reduction)
    return theta * el + (1 - theta) * region


def hybrid_focal(
    input,
    target,
    *,
    lam: float | None = None,
    asymmetric: bool = False,
    gamma_f: float = 2.0,
    class_weight: float | None = None,
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
    """Hybrid Focal loss: a focal term plus a focal Tversky term, in its two published forms.

    - ``asymmetric=False`` (default), Yeung et al.'s form (seed 001 eq 12, seed 000 eq 7):
      ``lam mean(Focal) + (1 - lam) FT`` with ``Focal = -[cw (1-p)^g t log p + (1-cw) p^g (1-t)
      log(1-p)]`` (seed 001 eq 3; ``cw = class_weight``, ``None`` = no class weight); ``lam``
      defaults to 0.5.
    - ``asymmetric=True``, seed 000's form (eq 15): ``mean(aF) + FT`` with
      ``aF = -[t log p + p^g (1-t) log(1-p)]`` (eq 2; with ``class_weight`` the Unified Focal
      weights ``delta``/``1 - delta`` of :func:`~.pointwise.asymmetric_focal`); ``lam=None`` (the
      default) adds the two terms unweighted, a given ``lam`` makes it ``lam aF + (1-lam) FT``.

    ``FT = (1 - TI)^gamma`` per group (:func:`~.region.focal_tversky`): ``gamma`` is the exponent
    itself (default 0.75; seed 001's ``1/gamma`` form needs ``gamma = 1/0.75``), TI with ``alpha``
    (FP) / ``beta`` (FN), defaults (0.3, 0.7), or ``delta`` weighting FN (seed 000, delta = 0.7
    gives the same default pair); eps > 0, default 1. ``gamma_f`` >= 0 is the focal exponent
    (default 2, seeds 000 and 001). Seed 001 names the mixing weight theta; the catalog's lam is
    used here. ``weight`` scales the focal term only.
    """
    if not isinstance(asymmetric, bool):
        raise TypeError(f"asymmetric must be a bool; got {type_name(asymmetric)}")
    w_point, w_region = _mix_weights(lam, None if asymmetric else 0.5)
    gamma_f = check_number("gamma_f", gamma_f, low=0.0)
    if class_weight is not None:
        class_weight = check_probability("class_weight", class_weight)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    if asymmetric:
        focal_term = pw.asymmetric_focal(input, target, gamma=gamma_f, delta=class_weight, weight=weight, **kw)
    else:
        focal_term = pw.focal(input, target, gamma=gamma_f, lam=class_weight, weight=weight, **kw)
    ft = rg.focal_tversky(input, target, gamma=gamma, alpha=alpha, beta=beta, delta=delta, eps=eps, scope=scope, **kw)
    return w_point * focal_term + w_region * ft


def unified_focal(
    input,
    target,
    *,
    lam: float = 0.5,
    delta: float = 0.6,
    gamma: float = 0.5,
    asymmetric: bool = True,
    eps: float = 1e-7,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Unified Focal loss, symmetric or asymmetric (seed 000 eq 8-10; Yeung et al. 2022).

    Follows the authors' reference code (mlyg/unified-focal-loss, ``loss_functions.py``), which
    treats the binary problem as two classes, background ``p0 = 1-p, t0 = 1-t`` and foreground
    ``p1 = p, t1 = t``, with ``CE_c = -t_c log p_c`` and a Tversky index per class and group::

        TI_c = (TP_c + eps)/(TP_c + delta FN_c + (1-delta) FP_c + eps)      (eps = 1e-7 there)

    (for the background TP_0 = sum (1-p)(1-t), FN_0 = FP, FP_0 = FN)::

        symmetric focal   mean over pixels of (1-delta) (1-p0)^g CE0 + delta (1-p1)^g CE1
        asymmetric focal  mean over pixels of (1-delta) (1-p0)^g CE0 + delta CE1
        symmetric FT      mean over the two classes of (1-TI_c)^(1-g)
        asymmetric FT     mean of (1-TI_0) and (1-TI_1)^(1-g)
        L = lam FT + (1-lam) focal

    The focal Tversky exponent is ``1 - gamma`` (the code's ``(1-TI) * (1-TI)^(-gamma)``), not
    ``gamma``. Defaults as in that code: lam = 0.5, delta = 0.6, gamma = 0.5 (each in [0, 1]),
    ``asymmetric=True``. Seed 000 eq 9-10 print ``lam`` on the focal term (so does the
    catalog's compound table, whose prose then follows the code); the authors' code, followed
    here, puts it on FT; the two agree at the default lam = 0.5. This is not MONAI's
    ``AsymmetricUnifiedFocalLoss``, which swaps lam and 1 - lam, halves the focal part, defaults
    delta = 0.7 and applies no activation.

    Deviations from the Keras code, both invisible for moderate logits: ``p`` is not clipped to
    [1e-7, 1 - 1e-7] (logs come from ``logsigmoid``, exact at every logit), and ``(1-TI)^(1-g)``
    continues linearly below 1e-6 (:func:`~.region.power_near_zero`) where the code gives NaN
    (``0 * 0^-g``) at a perfect prediction. The TI groups follow ``scope`` (the code: per image,
    ``scope="image"``); C > 1 channels are independent binary problems. ``weight`` scales the
    focal term only.
    """
    lam = check_probability("lam", lam)
    delta = check_probability("delta", delta)
    gamma = check_probability("gamma", gamma)
    if not isinstance(asymmetric, bool):
        raise TypeError(f"asymmetric must be a bool; got {type_name(asymmetric)}")
    eps = rg.check_eps(eps)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore, weight=weight)
    if asymmetric:
        focal_term = pw.asymmetric_focal(input, target, gamma=gamma, delta=delta, **kw)
    else:
        focal_term = pw.focal(input, target, gamma=gamma, lam=delta, **kw)

    checked, p = rg.prepare(input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore, weight=None)
    t = checked.target
    tp1 = group_sum(p * t, checked, scope)
    fp1 = group_sum(p * (1 - t), checked, scope)
    q = complement(checked)  # 1 - p
    fn1 = group_sum(q * t, checked, scope)
    tp0 = group_sum(q * (1 - t), checked, scope)
    one_minus_ti1 = rg.miss_ratio(tp1, delta * fn1 + (1 - delta) * fp1, eps)  # 1 - TI of the crack class
    one_minus_ti0 = rg.miss_ratio(tp0, delta * fp1 + (1 - delta) * fn1, eps)  # 1 - TI of the background
    fore = rg.power_near_zero(one_minus_ti1, 1 - gamma)
    back = one_minus_ti0 if asymmetric else rg.power_near_zero(one_minus_ti0, 1 - gamma)
    ft = rg.finish((back + fore) / 2, checked, scope, reduction)
    return lam * ft + (1 - lam) * focal_term


def hybrid_focal_margin(
    input,
    target,
    *,
    m: float = 0.5,
    gamma_f: float = 2.0,
    gamma: float = 0.75,
    delta: float = 0.7,
    symmetric: bool = False,
    lam: float | None = None,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Hybrid Focal Margin loss, seed 000's proposal.

    - ``symmetric=False`` (default), eq 14: ``mean(aFM) + FT`` with
      ``aFM = -[t log sigmoid(z - m) + p^g (1-t) log(1-p)]`` (eq 11); ``lam=None`` (the default)
      adds the two terms unweighted as eq 14 does, a given ``lam`` makes it ``lam aFM + (1-lam) FT``.
    - ``symmetric=True``, eq 13: ``lam mean(FM) + (1 - lam) FT`` with
      ``FM = -[(1-p)^g t log sigmoid(z - m) + p^g (1-t) log(1-p)]`` (eq 12); lam defaults to 0.5.

    ``FT = (1 - TI)^gamma`` per group, ``TI = (TP + eps)/(TP + delta FN + (1-delta) FP + eps)``
    (eq 4, 6). Defaults: the seed's DeepCrack setting g = ``gamma_f`` = 2, delta = 0.7,
    gamma = 0.75, m = 0.5 (it also reports m = 1.0 and 1.5); eps > 0, default 1. With m = 0
    (``symmetric=False``) this is seed 000's Hybrid Focal, :func:`hybrid_focal` with
    ``asymmetric=True``. ``weight`` scales the focal margin term only.
    """
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool; got {type_name(symmetric)}")
    w_point, w_region = _mix_weights(lam, 0.5 if symmetric else None)
    gamma_f = check_number("gamma_f", gamma_f, low=0.0)
    m = check_number("m", m, low=0.0)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    margin_fn = pw.focal_margin if symmetric else pw.asymmetric_focal_margin
    margin_term = margin_fn(input, target, gamma=gamma_f, m=m, weight=weight, **kw)
    ft = rg.focal_tversky(input, target, gamma=gamma, delta=delta, eps=eps, scope=scope, **kw)
    return w_point * margin_term + w_region * ft


def dibe(
    input,
    target,
    *,
    theta: float = 0.5,
    lam: float = 0.75,
    gamma: float = 2.0,
    alpha: float = 0.3,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """DIBE loss ``theta mean(DIBE_Dis) + (1 - theta) DIBE_Reg`` (seed 001 eq 19).

    One shared set of hyperparameters, as eq 19 states: ``lam`` (class weight of DIBE_Dis, eq 16),
    ``gamma`` (focusing exponent of DIBE_Dis and the ``1/gamma`` of DIBE_Reg, eq 18), ``alpha``
    and ``beta = 1 - alpha``. Defaults theta = 0.5, lam = 0.75, gamma = 2, alpha = 0.3 (seed 001
    section 4.3.2: gamma_DIBE = 2, (alpha, beta) = (0.3, 0.7)); theta, lam, alpha in [0, 1],
    gamma > 0; Tversky eps > 0, default 1.

    Both terms are implemented as printed (``LOSSES.md``): in DIBE_Dis (eq 16) ``alpha`` acts on
    missed foreground (y = 1, yhat = 0) and ``beta`` on false alarms; in DIBE_Reg's Tversky index
    (eq 7) ``alpha`` weights FP and ``beta`` FN. The paper calls alpha its "FP regulator" in both.
    DIBE_Reg keeps a finite gradient at a perfect prediction (see :func:`~.region.dibe_reg`).
    ``weight`` scales DIBE_Dis only.
    """
    theta = check_probability("theta", theta)
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    alpha = check_probability("alpha", alpha)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    dis = pw.dibe_dis(input, target, lam=lam, gamma=gamma, alpha=alpha, beta=1 - alpha, weight=weight, **kw)
    reg = rg.dibe_reg(input, target, gamma=gamma, alpha=alpha, beta=1 - alpha, eps=eps, scope=scope, **kw)
    return theta * dis + (1 - theta) * reg


def holistic(
    input,
    target,
    *,
    a: float = 1.0,
    b: float = 1.0,
    q: str = "exp",
    beta: float = 1.0,
    gamma: float | None = None,
    base: float = 10.0,
    smooth: float = 1.0,
    eps: float = 1.0,
    from_logits: bool = True,
    scope: str = "image",
    reduction: str = "mean",
    ignore=None,
    weight=None,
) -> Tensor:
    """Holistic loss ``a mean(AdaptiveWCE) + b (1 - Jaccard)`` (seed 002 eq 8-10).

    ``AdaptiveWCE = -[q(alpha) t log p + (1-t) log(1-p)]`` (eq 2) with the crack weight ``q``
    chosen by ``q`` ("xie", "power", "log", "exp"), ``beta``, ``gamma``, ``smooth`` and the
    exponential base ``base`` (the ``a`` of eq 6, renamed here because eq 8 uses ``a`` for the
    mixing weight); see :func:`~.pointwise.adaptive_wce`. ``Jaccard = (TP + eps)/(sum t + sum p -
    TP + eps)`` (eq 10, eps the paper's Laplace smoothing lambda, value not given: default 1).

    ``a``, ``b`` >= 0. Seed 002 gives no single default: it fixes b = 1 and tunes a per data set
    (its text: a = 20 or 0.5 on CrackForest, 10 on AigleRN, 1 on Crack360, 2 on BJN260); the
    default here, a = b = 1, weights both terms equally. ``weight`` scales the WCE term only.
    Eq 8-10 sum the Jaccard counts over the training batch (``scope="batch"``); the default
    ``scope="image"`` averages per-image indices, as every region loss here does by default.
    """
    a = check_number("a", a, low=0.0)
    b = check_number("b", b, low=0.0)
    base = check_number("base", base, low=1.0, low_open=True)
    _check_reduction(scope, reduction)
    kw = dict(from_logits=from_logits, reduction=reduction, ignore=ignore)
    wce = pw.adaptive_wce(input, target, q=q, beta=beta, gamma=gamma, a=base, smooth=smooth, weight=weight, **kw)
    return a * wce + b * rg.jaccard(input, target, eps=eps, scope=scope, **kw)
