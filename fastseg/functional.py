"""Fused losses: the catalog (``LOSSES.md``) as one fused forward pass and one fused backward pass.

Every function here has the name, signature, defaults, validation and semantics of its
counterpart in :mod:`fastseg.reference` (the oracle, whose docstrings give the formulas, their
sources and the catalog's decisions), plus the keywords ``backend`` and ``deterministic``, and
``scope`` for the losses whose reference has none (the pointwise ones and the per-pixel distance
losses: ``"batch"`` or ``"global"``, below):

- ``backend``: ``"auto"`` (default; Triton kernels for CUDA tensors; for CPU tensors the chunked
  torch path, or inside a caller's ``torch.compile`` the Inductor backend), ``"triton"`` (on CPU
  tensors the kernels run in Triton's interpreter: set ``TRITON_INTERPRET=1`` in the
  environment), ``"torch"`` or ``"inductor"`` (CPU only, opt-in in eager code: the torch path's
  passes ``torch.compile``d).
- ``deterministic`` (default True): the forward reduction runs in a fixed order, so two runs
  give bitwise-identical losses and gradients (on CPU at the same ``torch.get_num_threads()``:
  the torch path's chunks grow with it); ``False`` lets the Triton backend use atomics.

How a loss is evaluated (:mod:`fastseg.engine`): its plan lists the per-pixel quantities it needs
(:mod:`fastseg.engine.spec`), one backend pass sums them per (image, channel), and a few scalar
torch ops (the plan's epilogue) give the loss; backward is one more pass computing ``dL/dz`` from
``dL/dS``. Nothing per pixel is saved between the two. ``from_logits=False`` maps the
probabilities to logits ``log p - log(1-p)`` (logs clamped at -100, as the reference clamps)
outside the fused op, and autograd chains that map. Double backward raises ``RuntimeError``.

``scope="global"`` sums the statistics over every rank of a ``torch.distributed`` process group
before the epilogue: one all-reduce of a ``[C, K]`` tensor per call (:mod:`fastseg.distributed`,
which also says how to scale the loss under DDP), so every rank returns the loss of the global
batch. Pointwise losses (their reference has no scope: it averages over the valid pixels of the
batch) take ``scope="batch"`` (default, the reference's value) or ``"global"``: the mean over the
valid pixels of every rank's batch, with the class fractions of ``balanced_bce`` /
``adaptive_wce`` taken over the global batch; ``"image"`` raises ``ValueError``. With
``reduction="none"`` a pointwise loss returns this rank's per-pixel map, the rows of the global
batch's map: per-pixel terms need no synchronisation, only the class fractions (balanced /
adaptive WCE) are global.

Differences from the reference that are by design: gradients flow to ``input`` only (never to a
soft ``target`` or a ``weight`` map that requires grad), and under ``torch.compile`` the value
checks that read the data (targets in [0, 1], probabilities in [0, 1], non-negative weights) are
skipped, since they would force a host synchronisation and a graph break.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import (
    REDUCTIONS,
    check_choice,
    check_loss_inputs,
    check_no_gradient_expected,
    check_no_weight,
    check_number,
    check_probability,
    check_scope_reduction,
    value_checks_apply,
    type_name,
)
from .engine import distance_maps as DM
from .engine import plans as P
from .distributed import GLOBAL, global_stats
from .engine.function import group_sums
from .engine.spec import reads_weight

__all__ = [
    # pointwise
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
    # region
    "dice",
    "squared_dice",
    "jaccard",
    "tversky",
    "focal_tversky",
    "dibe_reg",
    "log_cosh_dice",
    "sensitivity_specificity",
    # compound
    "bce_dice",
    "combo",
    "exp_log",
    "hybrid_focal",
    "unified_focal",
    "hybrid_focal_margin",
    "dibe",
    "holistic",
    # distance
    "distance_loss",
    "hausdorff_dt",
    "distance_map_ce",
    "shape_aware",
    "hybrid_focal_margin_distance",
]

ADAPTIVE_Q = ("xie", "power", "log", "exp")
COMPOUND_REDUCTIONS = ("mean", "sum")
LOG_CLAMP = -100.0


# --------------------------------------------------------------------------------------------
# the engine call
# --------------------------------------------------------------------------------------------


def _logits(x: Tensor) -> Tensor:
    """Probabilities to logits, ``log p - log(1-p)`` with both logs clamped at -100 as
    ``torch.nn.BCELoss`` clamps them (``log 0 = -100``; a positive value below the smallest normal
    float is read as that float, keeping the gradient finite). NaN stays NaN, as in the reference."""
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    tiny = torch.finfo(x.dtype).tiny

    def clamped_log(y):
        return torch.where(y <= 0, LOG_CLAMP, torch.log(y.clamp_min(tiny))).clamp_min(LOG_CLAMP)

    return clamped_log(x) - clamped_log(1 - x)


def _run(plan: P.Plan, input, target, *, from_logits, scope, reduction, ignore, weight, backend, deterministic,
         process_group=None, distance=None) -> Tensor:
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be a bool; got {type_name(deterministic)}")
    checked = check_loss_inputs(
        input,
        target,
        from_logits=from_logits,
        ignore=ignore,
        weight=weight,
        check_values=value_checks_apply(input),
        convert_target=False,  # the backends read bool/uint8 targets as they are (1 byte a pixel)
    )
    check_no_gradient_expected("target", target)
    check_no_gradient_expected("weight", weight)
    x = checked.input
    z = x if from_logits else _logits(x)
    B, C = x.shape[0], x.shape[1]
    N = x[0, 0].numel()
    per_pixel = reduction == "none" and plan.pointwise
    shape = (B * C * N, 1, 1) if per_pixel else (B, C, N)

    def flat(tensor):
        return None if tensor is None else tensor.reshape(shape)

    weight = checked.weight
    if plan.maps is not None:  # distance losses: per-call maps on the input's device (engine.distance_maps)
        weight, distance = plan.maps(checked, from_logits, distance)
    S = group_sums(
        flat(z),
        flat(checked.target),
        quantities=plan.quantities,
        params=plan.params,
        valid=flat(checked.valid),
        weight=flat(weight) if _uses_weight(plan) else None,
        distance=flat(distance),
        backend=backend,
        deterministic=deterministic,
    )
    if scope == GLOBAL:  # one all-reduce of the per-channel sums (fastseg.distributed)
        stats = global_stats(S, plan.quantities, B, C, N if per_pixel else 1, per_pixel=per_pixel,
                             process_group=process_group)
    else:
        stats = P.Stats(S, plan.quantities, B, C, N if per_pixel else 1, scope, checked.valid is not None)
    out = plan.epilogue(stats, reduction)
    return out.reshape(x.shape) if per_pixel else out


def _uses_weight(plan: P.Plan) -> bool:
    return reads_weight(plan.quantities)


# --------------------------------------------------------------------------------------------
# parameter resolution (the reference's rules, same errors)
# --------------------------------------------------------------------------------------------


def _lam_pair(name: str, lam) -> tuple[float, float]:
    """``(lam, 1 - lam)``; ``None`` means no class weight, ``(1, 1)``."""
    if lam is None:
        return 1.0, 1.0
    lam = check_probability(name, lam)
    return lam, 1.0 - lam


def _check_eps(eps) -> float:
    return check_number("eps", eps, low=0.0, low_open=True)


def _tversky_weights(alpha, beta, delta) -> tuple[float, float]:
    """``(FP weight, FN weight)`` from the Tversky form (alpha, beta) or the delta form."""
    if delta is not None:
        if alpha is not None or beta is not None:
            raise ValueError("pass either delta (the delta form) or alpha/beta (the Tversky form), not both")
        delta = check_probability("delta", delta)
        return 1.0 - delta, delta
    alpha = 0.3 if alpha is None else check_number("alpha", alpha, low=0.0)
    beta = 0.7 if beta is None else check_number("beta", beta, low=0.0)
    return alpha, beta


def _check_bool(name, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type_name(value)}")


def _pointwise_reduction(reduction) -> None:
    check_choice("reduction", reduction, REDUCTIONS)


def _compound_reduction(scope, reduction) -> None:
    check_choice("reduction", reduction, COMPOUND_REDUCTIONS)
    check_scope_reduction(scope, reduction)


def _mix_weights(lam, default) -> tuple[float, float]:
    lam = default if lam is None else check_probability("lam", lam)
    return (1.0, 1.0) if lam is None else (lam, 1.0 - lam)


def _adaptive_params(q, beta, gamma, a, smooth):
    check_choice("q", q, ADAPTIVE_Q)
    beta = check_number("beta", beta, low=0.0, high=1.0, low_open=True)
    if q == "power":
        gamma = 0.5 if gamma is None else check_number("gamma", gamma, low=0.0, high=1.0, low_open=True)
    elif q == "exp":
        gamma = 1.0 if gamma is None else check_number("gamma", gamma, low=0.0, high=1.0)
    a = check_number("a", a, low=1.0, low_open=True)
    smooth = check_number("smooth", smooth, low=0.0)
    return dict(q=q, beta=beta, gamma=gamma, a=a, smooth=smooth)


def _dibe_dis_params(lam, gamma, alpha, beta):
    w_fg, w_bg = _lam_pair("lam", lam)
    gamma = check_number("gamma", gamma, low=0.0)
    alpha = check_probability("alpha", alpha)
    beta = 1.0 - alpha if beta is None else check_probability("beta", beta)
    return dict(w_fg=w_fg, w_bg=w_bg, gamma=gamma, alpha=alpha, beta=beta)


def _dibe_reg_params(gamma, alpha, beta, eps):
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    if beta is None:
        alpha = check_probability("alpha", alpha)
        beta = 1.0 - alpha
    else:
        alpha = check_number("alpha", alpha, low=0.0)
        beta = check_number("beta", beta, low=0.0)
    return dict(gamma=gamma, alpha=alpha, beta=beta, eps=_check_eps(eps))


# --------------------------------------------------------------------------------------------
# plan builders: validate a loss's parameters (the reference's rules) and return its plan.
# fastseg.losses calls the same builders at construction.
# --------------------------------------------------------------------------------------------


def bce_plan() -> P.Plan:
    return P.ce_plan()


def weighted_bce_plan(*, lam=0.5) -> P.Plan:
    w_fg, w_bg = _lam_pair("lam", lam)
    return P.ce_plan(w_fg=w_fg, w_bg=w_bg)


def balanced_bce_plan() -> P.Plan:
    return P.balanced_bce_plan()


def adaptive_wce_plan(*, q="exp", beta=1.0, gamma=None, a=10.0, smooth=1.0) -> P.Plan:
    return P.adaptive_wce_plan(**_adaptive_params(q, beta, gamma, a, smooth))


def focal_plan(*, gamma=2.0, lam=None) -> P.Plan:
    gamma = check_number("gamma", gamma, low=0.0)
    w_fg, w_bg = _lam_pair("lam", lam)
    return P.ce_plan(w_fg=w_fg, w_bg=w_bg, g_fg=gamma, g_bg=gamma)


def asymmetric_focal_plan(*, gamma=2.0, delta=None) -> P.Plan:
    gamma = check_number("gamma", gamma, low=0.0)
    w_fg, w_bg = _lam_pair("delta", delta)
    return P.ce_plan(w_fg=w_fg, w_bg=w_bg, g_bg=gamma)


def asymmetric_margin_plan(*, m=0.5) -> P.Plan:
    return P.ce_plan(m=check_number("m", m, low=0.0))


def asymmetric_focal_margin_plan(*, gamma=2.0, m=0.5) -> P.Plan:
    gamma = check_number("gamma", gamma, low=0.0)
    return P.ce_plan(g_bg=gamma, m=check_number("m", m, low=0.0))


def focal_margin_plan(*, gamma=2.0, m=0.5) -> P.Plan:
    gamma = check_number("gamma", gamma, low=0.0)
    return P.ce_plan(g_fg=gamma, g_bg=gamma, m=check_number("m", m, low=0.0))


def el_ce_plan(*, lam=None, gamma_ce=1.0) -> P.Plan:
    w_fg, w_bg = _lam_pair("lam", lam)
    gamma_ce = check_number("gamma_ce", gamma_ce, low=0.0, low_open=True)
    return P.el_ce_plan(w_fg=w_fg, w_bg=w_bg, gce=gamma_ce)


def dibe_dis_plan(*, lam=0.75, gamma=2.0, alpha=0.3, beta=None) -> P.Plan:
    return P.dibe_dis_plan(**_dibe_dis_params(lam, gamma, alpha, beta))


def dice_plan(*, eps=1.0) -> P.Plan:
    return P.dice_plan(eps=_check_eps(eps))


def squared_dice_plan(*, eps=1.0) -> P.Plan:
    return P.squared_dice_plan(eps=_check_eps(eps))


def jaccard_plan(*, eps=1.0) -> P.Plan:
    return P.jaccard_plan(eps=_check_eps(eps))


def tversky_plan(*, alpha=None, beta=None, delta=None, eps=1.0) -> P.Plan:
    alpha, beta = _tversky_weights(alpha, beta, delta)
    return P.tversky_plan(alpha=alpha, beta=beta, eps=_check_eps(eps))


def focal_tversky_plan(*, gamma=0.75, alpha=None, beta=None, delta=None, eps=1.0) -> P.Plan:
    gamma = check_number("gamma", gamma, low=0.0)
    alpha, beta = _tversky_weights(alpha, beta, delta)
    return P.focal_tversky_plan(gamma=gamma, alpha=alpha, beta=beta, eps=_check_eps(eps))


def dibe_reg_plan(*, gamma=1.5, alpha=0.3, beta=None, eps=1.0) -> P.Plan:
    return P.dibe_reg_plan(**_dibe_reg_params(gamma, alpha, beta, eps))


def log_cosh_dice_plan(*, eps=1.0) -> P.Plan:
    return P.log_cosh_dice_plan(eps=_check_eps(eps))


def sensitivity_specificity_plan(*, w=0.05, eps=1e-6) -> P.Plan:
    w = check_probability("w", w)
    return P.sensitivity_specificity_plan(w=w, eps=_check_eps(eps))


def bce_dice_plan(*, eps=1.0) -> P.Plan:
    eps = _check_eps(eps)
    return P.compound_plan(P.ce_plan(), 1.0, lambda st: P.miss_ratio(*P.dice_parts(st), eps), 1.0)


def combo_plan(*, theta=0.5, lam=0.5, eps=1.0) -> P.Plan:
    theta = check_probability("theta", theta)
    w_fg, w_bg = _lam_pair("lam", lam)
    eps = _check_eps(eps)
    return P.compound_plan(P.ce_plan(w_fg=w_fg, w_bg=w_bg), theta, lambda st: P.miss_ratio(*P.dice_parts(st), eps), 1 - theta)


def exp_log_plan(*, theta=0.5, lam=None, gamma_ce=1.0, gamma_dc=1.0, eps=1.0) -> P.Plan:
    theta = check_probability("theta", theta)
    gamma_dc = check_number("gamma_dc", gamma_dc, low=0.0, low_open=True)
    eps = _check_eps(eps)
    point = el_ce_plan(lam=lam, gamma_ce=gamma_ce)
    region = lambda st: P.power_near_zero(P.neg_log_index(*P.dice_parts(st), eps), gamma_dc)  # noqa: E731
    return P.compound_plan(point, theta, region, 1 - theta)


def _focal_tversky_term(gamma, alpha, beta, delta, eps):
    gamma = check_number("gamma", gamma, low=0.0)
    alpha, beta = _tversky_weights(alpha, beta, delta)
    eps = _check_eps(eps)
    return lambda st: P.power_near_zero(P.miss_ratio(*P.tversky_parts(st, alpha, beta), eps), gamma)


def hybrid_focal_plan(*, lam=None, asymmetric=False, gamma_f=2.0, class_weight=None, gamma=0.75, alpha=None, beta=None,
                      delta=None, eps=1.0) -> P.Plan:
    _check_bool("asymmetric", asymmetric)
    w_point, w_region = _mix_weights(lam, None if asymmetric else 0.5)
    gamma_f = check_number("gamma_f", gamma_f, low=0.0)
    w_fg, w_bg = _lam_pair("class_weight", class_weight)
    if asymmetric:
        point = P.ce_plan(w_fg=w_fg, w_bg=w_bg, g_bg=gamma_f)
    else:
        point = P.ce_plan(w_fg=w_fg, w_bg=w_bg, g_fg=gamma_f, g_bg=gamma_f)
    return P.compound_plan(point, w_point, _focal_tversky_term(gamma, alpha, beta, delta, eps), w_region)


def unified_focal_plan(*, lam=0.5, delta=0.6, gamma=0.5, asymmetric=True, eps=1e-7) -> P.Plan:
    lam = check_probability("lam", lam)
    delta = check_probability("delta", delta)
    gamma = check_probability("gamma", gamma)
    _check_bool("asymmetric", asymmetric)
    eps = _check_eps(eps)
    point = P.ce_plan(w_fg=delta, w_bg=1 - delta, g_fg=0.0 if asymmetric else gamma, g_bg=gamma)

    def region(st):
        tp1, fp1, fn1 = P.confusion(st)
        tp0 = st.group(P.Q.TN)  # the background class's TP: sum (1-p)(1-t)
        miss1 = P.miss_ratio(tp1, delta * fn1 + (1 - delta) * fp1, eps)  # 1 - TI of the crack class
        miss0 = P.miss_ratio(tp0, delta * fp1 + (1 - delta) * fn1, eps)  # and of the background
        fore = P.power_near_zero(miss1, 1 - gamma)
        back = miss0 if asymmetric else P.power_near_zero(miss0, 1 - gamma)
        return (back + fore) / 2

    return P.compound_plan(point, 1 - lam, region, lam, P.CONFUSION + (P.Q.TN,))


def hybrid_focal_margin_plan(*, m=0.5, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None, eps=1.0) -> P.Plan:
    _check_bool("symmetric", symmetric)
    w_point, w_region = _mix_weights(lam, 0.5 if symmetric else None)
    gamma_f = check_number("gamma_f", gamma_f, low=0.0)
    m = check_number("m", m, low=0.0)
    point = P.ce_plan(g_fg=gamma_f if symmetric else 0.0, g_bg=gamma_f, m=m)
    return P.compound_plan(point, w_point, _focal_tversky_term(gamma, None, None, delta, eps), w_region)


def dibe_plan(*, theta=0.5, lam=0.75, gamma=2.0, alpha=0.3, eps=1.0) -> P.Plan:
    theta = check_probability("theta", theta)
    gamma = check_number("gamma", gamma, low=0.0, low_open=True)
    alpha = check_probability("alpha", alpha)
    point = P.dibe_dis_plan(**_dibe_dis_params(lam, gamma, alpha, 1 - alpha))
    reg = _dibe_reg_params(gamma, alpha, 1 - alpha, eps)
    region = lambda st: P.power_near_zero(  # noqa: E731
        P.neg_log_index(*P.tversky_parts(st, reg["alpha"], reg["beta"]), reg["eps"]), 1.0 / reg["gamma"]
    )
    return P.compound_plan(point, theta, region, 1 - theta)


def holistic_plan(*, a=1.0, b=1.0, q="exp", beta=1.0, gamma=None, base=10.0, smooth=1.0, eps=1.0) -> P.Plan:
    a = check_number("a", a, low=0.0)
    b = check_number("b", b, low=0.0)
    base = check_number("base", base, low=1.0, low_open=True)
    params = _adaptive_params(q, beta, gamma, base, smooth)
    eps = _check_eps(eps)
    return P.compound_plan(P.adaptive_wce_plan(**params), a, lambda st: P.miss_ratio(*P.jaccard_parts(st), eps), b)


POINTWISE = ("bce", "weighted_bce", "balanced_bce", "adaptive_wce", "focal", "asymmetric_focal", "asymmetric_margin",
             "asymmetric_focal_margin", "focal_margin", "el_ce", "dibe_dis", "hausdorff_dt", "distance_map_ce",
             "shape_aware")
REGION = ("dice", "squared_dice", "jaccard", "tversky", "focal_tversky", "dibe_reg", "log_cosh_dice",
          "sensitivity_specificity", "distance_loss")
COMPOUND = ("bce_dice", "combo", "exp_log", "hybrid_focal", "unified_focal", "hybrid_focal_margin", "dibe", "holistic",
            "hybrid_focal_margin_distance")
#: Losses that read distance maps: their calls (and modules) take ``distance=`` (a precomputed target map).
DISTANCE = ("distance_loss", "hausdorff_dt", "distance_map_ce", "shape_aware", "hybrid_focal_margin_distance")


def kind(name: str) -> str:
    """``"pointwise"``, ``"region"`` or ``"compound"``: which scope/reduction rules apply."""
    return "pointwise" if name in POINTWISE else "region" if name in REGION else "compound"


#: Scopes of pointwise losses: the mean over the valid pixels of this process's batch, or of the
#: batches of every rank (:mod:`fastseg.distributed`); a pointwise mean has no per-image form.
POINTWISE_SCOPES = ("batch", GLOBAL)


def check_scope_and_reduction(name: str, scope, reduction) -> None:
    """The reference's rules: pointwise losses any reduction and scope "batch" or "global"; region
    losses any scope and reduction; compound losses any scope and "mean"/"sum"."""
    k = kind(name)
    if k == "pointwise":
        if scope == "image":
            raise ValueError(f"{name} is a pointwise loss: it averages over the valid pixels of the batch, so scope "
                             f"must be 'batch' or 'global' (every rank's batch); got scope='image'")
        check_choice("scope", scope, POINTWISE_SCOPES)
        _pointwise_reduction(reduction)
    elif k == "region":
        check_scope_reduction(scope, reduction)
    else:
        _compound_reduction(scope, reduction)


def run_plan(plan: P.Plan, input, target, *, from_logits=True, scope="image", reduction="mean", ignore=None,
             weight=None, backend="auto", deterministic=True, process_group=None, distance=None) -> Tensor:
    """Evaluate a plan (scope and reduction already checked; a pointwise plan reads ``"image"`` and
    ``"batch"`` alike); ``process_group`` is the group of ``scope="global"`` (default: the default
    group; see :mod:`fastseg.distributed`)."""
    return _run(plan, input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore,
                weight=weight, backend=backend, deterministic=deterministic, process_group=process_group,
                distance=distance)


def _pointwise(name, plan, input, target, from_logits, scope, reduction, ignore, weight, backend, deterministic):
    check_scope_and_reduction(name, scope, reduction)
    return run_plan(plan, input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore,
                    weight=weight, backend=backend, deterministic=deterministic)


def _grouped(name, plan, input, target, from_logits, scope, reduction, ignore, weight, backend, deterministic):
    check_scope_and_reduction(name, scope, reduction)
    if not plan.reads_weight:
        check_no_weight(weight, name)
    return run_plan(plan, input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore,
                    weight=weight, backend=backend, deterministic=deterministic)


# --------------------------------------------------------------------------------------------
# pointwise losses (reduction "mean" over the valid pixels of the batch, "sum", or "none"; scope
# "batch", or "global": the batches of every rank of a torch.distributed group)
# --------------------------------------------------------------------------------------------


def bce(input, target, *, from_logits=True, scope="batch", reduction="mean", ignore=None, weight=None, backend="auto",
        deterministic=True) -> Tensor:
    """Binary cross-entropy ``-[t log p + (1-t) log(1-p)]`` (seed 000; 001 eq 1; 004 A)."""
    return _pointwise("bce", bce_plan(), input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def weighted_bce(input, target, *, lam=0.5, from_logits=True, scope="batch", reduction="mean", ignore=None,
                 weight=None, backend="auto", deterministic=True) -> Tensor:
    """Weighted BCE ``-[lam t log p + (1-lam)(1-t) log(1-p)]`` (seed 001 eq 2; 004 B)."""
    plan = weighted_bce_plan(lam=lam)
    return _pointwise("weighted_bce", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def balanced_bce(input, target, *, from_logits=True, scope="batch", reduction="mean", ignore=None, weight=None,
                 backend="auto", deterministic=True) -> Tensor:
    """Balanced CE: weighted BCE with ``lam = beta`` = fraction of negative valid pixels per channel
    over the batch, no gradient (seed 004 C; seed 002 eq 1). With ``scope="global"`` the batch is
    the global one (every rank's valid pixels), also for ``reduction="none"``."""
    plan = balanced_bce_plan()
    return _pointwise("balanced_bce", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def adaptive_wce(input, target, *, q="exp", beta=1.0, gamma=None, a=10.0, smooth=1.0, from_logits=True, scope="batch",
                 reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Adaptive WCE ``-[q(alpha) t log p + (1-t) log(1-p)]`` (seed 002 eq 2-7; the reference's
    smoothing of alpha and its clamp of ``q="log"`` at 0); alpha is the class fraction of the batch,
    of the global batch with ``scope="global"`` (also for ``reduction="none"``)."""
    plan = adaptive_wce_plan(q=q, beta=beta, gamma=gamma, a=a, smooth=smooth)
    return _pointwise("adaptive_wce", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def focal(input, target, *, gamma=2.0, lam=None, from_logits=True, scope="batch", reduction="mean", ignore=None,
          weight=None, backend="auto", deterministic=True) -> Tensor:
    """Focal ``-[lam (1-p)^g t log p + (1-lam) p^g (1-t) log(1-p)]`` (seed 001 eq 3; 004 D)."""
    plan = focal_plan(gamma=gamma, lam=lam)
    return _pointwise("focal", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def asymmetric_focal(input, target, *, gamma=2.0, delta=None, from_logits=True, scope="batch", reduction="mean",
                     ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Asymmetric focal ``-[delta t log p + (1-delta) p^g (1-t) log(1-p)]`` (seed 000 eq 2)."""
    plan = asymmetric_focal_plan(gamma=gamma, delta=delta)
    return _pointwise("asymmetric_focal", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def asymmetric_margin(input, target, *, m=0.5, from_logits=True, scope="batch", reduction="mean", ignore=None,
                      weight=None, backend="auto", deterministic=True) -> Tensor:
    """Asymmetric large margin ``-[t log sigmoid(z-m) + (1-t) log(1-p)]`` (seed 000 eq 3)."""
    plan = asymmetric_margin_plan(m=m)
    return _pointwise("asymmetric_margin", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def asymmetric_focal_margin(input, target, *, gamma=2.0, m=0.5, from_logits=True, scope="batch", reduction="mean",
                            ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Asymmetric focal margin ``-[t log sigmoid(z-m) + p^g (1-t) log(1-p)]`` (seed 000 eq 11)."""
    plan = asymmetric_focal_margin_plan(gamma=gamma, m=m)
    return _pointwise("asymmetric_focal_margin", plan, input, target, from_logits, scope, reduction, ignore, weight,
                      backend, deterministic)


def focal_margin(input, target, *, gamma=2.0, m=0.5, from_logits=True, scope="batch", reduction="mean", ignore=None,
                 weight=None, backend="auto", deterministic=True) -> Tensor:
    """Focal margin ``-[(1-p)^g t log sigmoid(z-m) + p^g (1-t) log(1-p)]`` (seed 000 eq 12)."""
    plan = focal_margin_plan(gamma=gamma, m=m)
    return _pointwise("focal_margin", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def el_ce(input, target, *, lam=None, gamma_ce=1.0, from_logits=True, scope="batch", reduction="mean", ignore=None,
          weight=None, backend="auto", deterministic=True) -> Tensor:
    """Exponential logarithmic CE ``lam (-log p)^gce`` (t=1), ``(1-lam)(-log(1-p))^gce`` (t=0)
    (seed 001 eq 11), the power taken as ``exp(gce log(-log p))``: a logit whose ``-log p``
    underflows keeps ``e^(-gce |z|)``, and a probability of exactly 1 is the clamped logit 100
    (``e^(-100 gce)``; see :func:`fastseg.reference.el_ce`)."""
    plan = el_ce_plan(lam=lam, gamma_ce=gamma_ce)
    return _pointwise("el_ce", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


def dibe_dis(input, target, *, lam=0.75, gamma=2.0, alpha=0.3, beta=None, from_logits=True, scope="batch",
             reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """DIBE_Dis (seed 001 eq 16) as printed: ``alpha`` on missed foreground, ``beta`` (default
    ``1 - alpha``) on false alarms; ``yhat = [p >= 0.5]`` without gradient."""
    plan = dibe_dis_plan(lam=lam, gamma=gamma, alpha=alpha, beta=beta)
    return _pointwise("dibe_dis", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                      deterministic)


# --------------------------------------------------------------------------------------------
# region losses: per group (scope), reduced over groups holding a valid pixel. A ``weight``
# raises ValueError: region terms never take per-pixel weights.
# --------------------------------------------------------------------------------------------


def dice(input, target, *, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None, weight=None,
         backend="auto", deterministic=True) -> Tensor:
    """Dice loss ``1 - (2TP + eps)/(2TP + FP + FN + eps)`` per group (seed 001 eq 4-5; 004 E)."""
    return _grouped("dice", dice_plan(eps=eps), input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def squared_dice(input, target, *, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None,
                 weight=None, backend="auto", deterministic=True) -> Tensor:
    """Squared Dice ``1 - (2 sum pt + eps)/(sum t^2 + sum p^2 + eps)`` (seed 000 eq 5)."""
    return _grouped("squared_dice", squared_dice_plan(eps=eps), input, target, from_logits, scope, reduction, ignore,
                    weight, backend, deterministic)


def jaccard(input, target, *, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None, weight=None,
            backend="auto", deterministic=True) -> Tensor:
    """Jaccard loss ``1 - (TP + eps)/(sum t + sum p - TP + eps)`` (seed 002 eq 9-10)."""
    return _grouped("jaccard", jaccard_plan(eps=eps), input, target, from_logits, scope, reduction, ignore, weight,
                    backend, deterministic)


def tversky(input, target, *, alpha=None, beta=None, delta=None, eps=1.0, from_logits=True, scope="image",
            reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Tversky loss ``1 - (TP + eps)/(TP + alpha FP + beta FN + eps)`` (seed 001 eq 6-7; 004 F);
    or the delta form (seed 000 eq 4: delta weights FN)."""
    plan = tversky_plan(alpha=alpha, beta=beta, delta=delta, eps=eps)
    return _grouped("tversky", plan, input, target, from_logits, scope, reduction, ignore, weight, backend, deterministic)


def focal_tversky(input, target, *, gamma=0.75, alpha=None, beta=None, delta=None, eps=1.0, from_logits=True,
                  scope="image", reduction="mean", ignore=None, weight=None, backend="auto",
                  deterministic=True) -> Tensor:
    """Focal Tversky ``(1 - TI)^gamma`` (seed 000 eq 6; 004 G), linear below 1e-6."""
    plan = focal_tversky_plan(gamma=gamma, alpha=alpha, beta=beta, delta=delta, eps=eps)
    return _grouped("focal_tversky", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def dibe_reg(input, target, *, gamma=1.5, alpha=0.3, beta=None, eps=1.0, from_logits=True, scope="image",
             reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """DIBE_Reg ``(-log Tv)^(1/gamma)`` (seed 001 eq 18), ``-log Tv`` linear below 1e-6."""
    plan = dibe_reg_plan(gamma=gamma, alpha=alpha, beta=beta, eps=eps)
    return _grouped("dibe_reg", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def log_cosh_dice(input, target, *, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None,
                  weight=None, backend="auto", deterministic=True) -> Tensor:
    """Log-Cosh Dice ``log(cosh(L_Dice))`` per group (seed 004 O)."""
    return _grouped("log_cosh_dice", log_cosh_dice_plan(eps=eps), input, target, from_logits, scope, reduction, ignore,
                    weight, backend, deterministic)


def sensitivity_specificity(input, target, *, w=0.05, eps=1e-6, from_logits=True, scope="image", reduction="mean",
                            ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Sensitivity-specificity ``w sum((t-p)^2 t)/(sum t + eps) + (1-w) sum((t-p)^2 (1-t))/(sum(1-t) + eps)``
    (seed 004 H)."""
    plan = sensitivity_specificity_plan(w=w, eps=eps)
    return _grouped("sensitivity_specificity", plan, input, target, from_logits, scope, reduction, ignore, weight,
                    backend, deterministic)


# --------------------------------------------------------------------------------------------
# compound losses ("mean" or "sum"; scope applies to the region term, weight to the pointwise one)
# --------------------------------------------------------------------------------------------


def bce_dice(input, target, *, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None, weight=None,
             backend="auto", deterministic=True) -> Tensor:
    """``mean(BCE) + L_Dice`` (seed 000 eq 1, read as BCE + Dice loss)."""
    return _grouped("bce_dice", bce_dice_plan(eps=eps), input, target, from_logits, scope, reduction, ignore, weight,
                    backend, deterministic)


def combo(input, target, *, theta=0.5, lam=0.5, eps=1.0, from_logits=True, scope="image", reduction="mean",
          ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Combo ``theta mean(WBCE) + (1 - theta) L_Dice`` (seed 001 eq 9; 004 J)."""
    plan = combo_plan(theta=theta, lam=lam, eps=eps)
    return _grouped("combo", plan, input, target, from_logits, scope, reduction, ignore, weight, backend, deterministic)


def exp_log(input, target, *, theta=0.5, lam=None, gamma_ce=1.0, gamma_dc=1.0, eps=1.0, from_logits=True,
            scope="image", reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Exponential logarithmic ``theta mean(EL_CE) + (1 - theta) (-log Dc)^gamma_dc`` (seed 001 eq 10-11)."""
    plan = exp_log_plan(theta=theta, lam=lam, gamma_ce=gamma_ce, gamma_dc=gamma_dc, eps=eps)
    return _grouped("exp_log", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def hybrid_focal(input, target, *, lam=None, asymmetric=False, gamma_f=2.0, class_weight=None, gamma=0.75, alpha=None,
                 beta=None, delta=None, eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None,
                 weight=None, backend="auto", deterministic=True) -> Tensor:
    """Hybrid Focal: ``lam mean(Focal) + (1-lam) FT`` (Yeung, seed 001 eq 12; lam default 0.5) or,
    with ``asymmetric=True``, ``mean(aF) + FT`` (seed 000 eq 15)."""
    plan = hybrid_focal_plan(lam=lam, asymmetric=asymmetric, gamma_f=gamma_f, class_weight=class_weight, gamma=gamma,
                             alpha=alpha, beta=beta, delta=delta, eps=eps)
    return _grouped("hybrid_focal", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def unified_focal(input, target, *, lam=0.5, delta=0.6, gamma=0.5, asymmetric=True, eps=1e-7, from_logits=True,
                  scope="image", reduction="mean", ignore=None, weight=None, backend="auto",
                  deterministic=True) -> Tensor:
    """Unified Focal, symmetric or asymmetric (seed 000 eq 8-10; the authors' code): background and
    foreground classes, ``L = lam FT + (1-lam) focal``, FT exponent ``1 - gamma``."""
    plan = unified_focal_plan(lam=lam, delta=delta, gamma=gamma, asymmetric=asymmetric, eps=eps)
    return _grouped("unified_focal", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def hybrid_focal_margin(input, target, *, m=0.5, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None,
                        eps=1.0, from_logits=True, scope="image", reduction="mean", ignore=None, weight=None,
                        backend="auto", deterministic=True) -> Tensor:
    """Hybrid Focal Margin: ``mean(aFM) + FT`` (seed 000 eq 14, default) or, with
    ``symmetric=True``, ``lam mean(FM) + (1 - lam) FT`` (eq 13, lam default 0.5)."""
    plan = hybrid_focal_margin_plan(m=m, gamma_f=gamma_f, gamma=gamma, delta=delta, symmetric=symmetric, lam=lam, eps=eps)
    return _grouped("hybrid_focal_margin", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


def dibe(input, target, *, theta=0.5, lam=0.75, gamma=2.0, alpha=0.3, eps=1.0, from_logits=True, scope="image",
         reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """DIBE ``theta mean(DIBE_Dis) + (1 - theta) DIBE_Reg`` with shared lam, gamma, alpha, beta = 1 - alpha
    (seed 001 eq 19)."""
    plan = dibe_plan(theta=theta, lam=lam, gamma=gamma, alpha=alpha, eps=eps)
    return _grouped("dibe", plan, input, target, from_logits, scope, reduction, ignore, weight, backend, deterministic)


def holistic(input, target, *, a=1.0, b=1.0, q="exp", beta=1.0, gamma=None, base=10.0, smooth=1.0, eps=1.0,
             from_logits=True, scope="image", reduction="mean", ignore=None, weight=None, backend="auto",
             deterministic=True) -> Tensor:
    """Holistic ``a mean(AdaptiveWCE) + b (1 - Jaccard)`` (seed 002 eq 8-10); ``base`` is eq 6's ``a``."""
    plan = holistic_plan(a=a, b=b, q=q, beta=beta, gamma=gamma, base=base, smooth=smooth, eps=eps)
    return _grouped("holistic", plan, input, target, from_logits, scope, reduction, ignore, weight, backend,
                    deterministic)


# --------------------------------------------------------------------------------------------
# distance losses: distance maps by fastseg.edt on the input's device, once per call (the
# target's map may be passed precomputed as ``distance=``), entering the fused pass as the
# per-pixel ``distance`` (D_FP, D_SQERR) or ``weight`` (the CE quantities) input. The pointwise
# ones (hausdorff_dt, distance_map_ce, shape_aware) take scope "batch" or "global" as the
# pointwise losses do; their maps are per image, so "global" is the loss of the global batch.
# --------------------------------------------------------------------------------------------


def distance_loss_plan(*, alpha=4.0, eps=1.0, eps_dist=1e-6) -> P.Plan:
    alpha = check_number("alpha", alpha, low=0.0)
    eps = _check_eps(eps)
    eps_dist = check_number("eps_dist", eps_dist, low=0.0, low_open=True)
    return P.distance_loss_plan(alpha=alpha, eps=eps, eps_dist=eps_dist, maps=DM.nearness_maps)


def hausdorff_dt_plan(*, alpha=2.0) -> P.Plan:
    return P.hausdorff_dt_plan(maps=DM.hausdorff_maps(check_number("alpha", alpha, low=0.0)))


def distance_map_ce_plan() -> P.Plan:
    return P.weighted_ce_plan(maps=DM.distance_map_ce_maps)


def shape_aware_plan() -> P.Plan:
    return P.weighted_ce_plan(maps=DM.shape_aware_maps)


def hybrid_focal_margin_distance_plan(*, m=0.5, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None, eps=1.0,
                                      alpha=4.0, eps_dist=1e-6) -> P.Plan:
    base = hybrid_focal_margin_plan(m=m, gamma_f=gamma_f, gamma=gamma, delta=delta, symmetric=symmetric, lam=lam,
                                    eps=eps)  # validates the shared parameters
    alpha = check_number("alpha", alpha, low=0.0)
    eps_dist = check_number("eps_dist", eps_dist, low=0.0, low_open=True)
    w_point, w_region = _mix_weights(lam, 0.5 if symmetric else None)
    point = P.ce_plan(g_fg=base.params.g_fg, g_bg=base.params.g_bg, m=base.params.m)
    return P.distance_compound_plan(point, w_point, _focal_tversky_term(gamma, None, None, delta, eps), w_region,
                                    alpha=alpha, eps_dist=eps_dist, maps=DM.nearness_maps)


def distance_loss(input, target, *, alpha=4.0, eps=1.0, eps_dist=1e-6, distance=None, from_logits=True, scope="image",
                  reduction="mean", ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Distance-based loss ``L_Dice (1 + L_Dist (alpha - 1))`` per group (seed 003 eq 1-3, eq 2 read
    as the Dice loss), ``L_Dist = sum(ND p (1-t)) / (sum p (1-t) + eps_dist)``. One fused pass sums
    the confusion sums and ``(1 - ND) p (1-t)`` per image (the factor as ``alpha + (1 - alpha)(1 -
    L_Dist)``, see :func:`fastseg.engine.plans.distance_factor`); backward reads the map once.
    ND = EDT to the nearest crack over its per-image max (1 on crack-free images); ``distance``: precomputed
    ``edt(t > 0.5, to="foreground")`` (raw). ``weight`` must be None (as the reference)."""
    check_scope_and_reduction("distance_loss", scope, reduction)
    check_no_weight(weight, "distance_loss")
    return run_plan(distance_loss_plan(alpha=alpha, eps=eps, eps_dist=eps_dist), input, target, from_logits=from_logits,
                    scope=scope, reduction=reduction, ignore=ignore, backend=backend, deterministic=deterministic,
                    distance=distance)


def hausdorff_dt(input, target, *, alpha=2.0, distance=None, from_logits=True, scope="batch", reduction="mean",
                 ignore=None, weight=None, backend="auto", deterministic=True) -> Tensor:
    """Hausdorff DT loss ``mean((p - t)^2 (d_t^a + d_p^a))`` (Karimi-Salcudean; MONAI's HausdorffDTLoss):
    ``d_t``/``d_p`` the two-sided boundary fields of ``t > 0.5`` and ``p > 0.5``; fused as D_SQERR with
    ``d = w (d_t^a + d_p^a)``. ``distance``: precomputed ``boundary_field(t > 0.5)`` (not raised to
    a; ``valid=~ignore`` with an ignore mask)."""
    check_scope_and_reduction("hausdorff_dt", scope, reduction)
    return run_plan(hausdorff_dt_plan(alpha=alpha), input, target, from_logits=from_logits, scope=scope,
                    reduction=reduction, ignore=ignore, weight=weight, backend=backend, deterministic=deterministic,
                    distance=distance)


def distance_map_ce(input, target, *, distance=None, from_logits=True, scope="batch", reduction="mean", ignore=None,
                    weight=None, backend="auto", deterministic=True) -> Tensor:
    """Distance-map-penalised CE ``mean((1 + Phi) CE)`` (Caliva et al.): Phi the per-class inverted
    boundary distance of the target, fused as the CE weight ``w (1 + Phi)``. ``distance``: precomputed
    ``boundary_field(t > 0.5)`` (raw; ``valid=~ignore`` with an ignore mask)."""
    check_scope_and_reduction("distance_map_ce", scope, reduction)
    return run_plan(distance_map_ce_plan(), input, target, from_logits=from_logits, scope=scope, reduction=reduction,
                    ignore=ignore, weight=weight, backend=backend, deterministic=deterministic, distance=distance)


def shape_aware(input, target, *, distance=None, from_logits=True, scope="batch", reduction="mean", ignore=None,
                weight=None, backend="auto", deterministic=True) -> Tensor:
    """Shape-aware loss ``mean((1 + E) CE)`` (Hayder et al.): E per image the mean distance of the
    predicted boundary pixels to the target's boundary, fused as the CE weight ``w (1 + E)``.
    ``distance``: precomputed ``edt(inner_boundary(t > 0.5), to="foreground")`` (``valid=~ignore``
    in ``inner_boundary`` with an ignore mask)."""
    check_scope_and_reduction("shape_aware", scope, reduction)
    return run_plan(shape_aware_plan(), input, target, from_logits=from_logits, scope=scope, reduction=reduction,
                    ignore=ignore, weight=weight, backend=backend, deterministic=deterministic, distance=distance)


def hybrid_focal_margin_distance(input, target, *, m=0.5, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None,
                                 eps=1.0, alpha=4.0, eps_dist=1e-6, distance=None, from_logits=True, scope="image",
                                 reduction="mean", ignore=None, weight=None, backend="auto",
                                 deterministic=True) -> Tensor:
    """Hybrid Focal Margin with seed 003's distance factor on its region term, in one fused call:
    ``w_p mean(aFM) + w_r FT (1 + L_Dist (alpha - 1))`` per group (see
    :func:`fastseg.reference.hybrid_focal_margin_distance`); ``alpha = 1`` gives
    :func:`hybrid_focal_margin`. ``distance`` as in :func:`distance_loss`."""
    plan = hybrid_focal_margin_distance_plan(m=m, gamma_f=gamma_f, gamma=gamma, delta=delta, symmetric=symmetric,
                                             lam=lam, eps=eps, alpha=alpha, eps_dist=eps_dist)
    check_scope_and_reduction("hybrid_focal_margin_distance", scope, reduction)
    return run_plan(plan, input, target, from_logits=from_logits, scope=scope, reduction=reduction, ignore=ignore,
                    weight=weight, backend=backend, deterministic=deterministic, distance=distance)
