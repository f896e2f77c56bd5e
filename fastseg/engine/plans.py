"""One plan per loss of the catalog: which per-pixel quantities to sum, their scalar parameters,
and the epilogue that turns the sums into the loss.

A :class:`Plan` is ``(quantities, params, epilogue)``; the engine (:mod:`.function`) asks a
backend for ``S[g, k]`` (the sums of ``quantities`` per group) and calls ``epilogue(stats,
reduction)`` with a :class:`Stats` view of ``S``. The epilogue is ordinary differentiable torch
code on tiny tensors: autograd turns it into ``c = dL/dS`` for the backward pass.

Group layout. The backend sees ``[B, C, N]`` logits and returns one row per (image, channel),
except for ``reduction="none"`` of a pointwise loss, where every pixel is its own group (``N``
moved into the group axis), so the per-pixel map comes out of the same machinery. :class:`Stats`
hides the difference: ``pixel(k)`` is ``[B, C, P]`` (``P = 1`` or ``N``), ``channel(k)`` sums over
the batch and the pixels, ``group(k)`` gives the region statistics of the scope.

The formulas and every decision are those of the reference (:mod:`fastseg.reference`, whose
docstrings cite the seeds and ``LOSSES.md``); the parameters arrive here already validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .scalars import as_operand
from .spec import Quantity as Q
from .spec import TermParams, reads_weight

#: Below this, ``x ** k`` continues linearly (the reference's ``power_near_zero`` decision).
POWER_FLOOR = 1e-6


@dataclass(frozen=True)
class Plan:
    quantities: tuple[Q, ...]
    params: TermParams
    epilogue: Callable[["Stats", str], Tensor]
    pointwise: bool = False  # per-pixel loss only: reduction="none" gives a per-pixel map
    # Distance losses only: ``maps(checked, from_logits, distance) -> (weight, distance)``, the
    # per-pixel weight and distance inputs of the call, computed on the input's device (see
    # :mod:`.distance_maps`); ``distance`` is the caller's precomputed map or None.
    maps: Callable | None = None
    # ``maps`` returns the weight of the CE quantities itself (a distance-weighted CE), instead of
    # passing the caller's ``weight`` through: no other term's CE may share the call.
    maps_weight: bool = False
    # ``maps`` scales its distance input by the caller's ``weight`` (Hausdorff DT: ``d = w (...)``).
    maps_read_weight: bool = False

    @property
    def reads_weight(self) -> bool:
        """Whether the caller's per-pixel ``weight`` enters the loss: a weighted (cross-entropy)
        quantity, or distance maps scaled by it."""
        return reads_weight(self.quantities) or self.maps_read_weight


class Stats:
    """A view of the backend's sums ``S [B*C*P, K]`` by quantity name.

    ``scope`` picks the region groups (``"image"``: ``[B, C]``, ``"batch"``: ``[C]``);
    ``masked`` says whether some pixels were ignored (then groups without a valid pixel are left
    out of region means, as the reference does).
    """

    def __init__(self, S: Tensor, quantities, B: int, C: int, P: int, scope: str, masked: bool):
        self.S = S.view(B, C, P, len(quantities))
        # One unbind rather than a select per quantity: in backward one node stacks the columns'
        # gradients (a select's backward writes a zero-filled S each).
        self.columns = self.S.unbind(-1)
        self.index = {q: i for i, q in enumerate(quantities)}
        self.scope = scope
        self.masked = masked

    def rescoped(self, scope: str) -> "Stats":
        """The same sums viewed with another region scope (a term of a combined loss)."""
        if scope == self.scope:
            return self
        B, C, P, _ = self.S.shape
        return Stats(self.S, list(self.index), B, C, P, scope, self.masked)  # copy.copy: torch 2.11's Dynamo skips it

    def pixel(self, q: Q) -> Tensor:
        """``[B, C, P]``: the sum per (image, channel) (``P = 1``) or the value per pixel."""
        return self.columns[self.index[q]]

    def channel(self, q: Q) -> Tensor:
        """``[1, C, 1]``: the sum over the batch and every pixel, per channel."""
        return self.pixel(q).sum(dim=(0, 2), keepdim=True)

    def total(self, q: Q) -> Tensor:
        return self.pixel(q).sum()

    def group(self, q: Q) -> Tensor:
        """Region statistic per group: ``[B, C]`` (scope "image") or ``[C]`` ("batch")."""
        values = self.pixel(q)
        per_image = values.squeeze(2) if values.shape[2] == 1 else values.sum(dim=2)
        return per_image if self.scope == "image" else per_image.sum(dim=0)

    # reductions --------------------------------------------------------------------------
    def reduce_pointwise(self, per_pixel: Tensor, reduction: str) -> Tensor:
        """Mean over the valid pixels of the batch (0 when none), sum, or the per-pixel map."""
        if reduction == "none":
            return per_pixel
        total = per_pixel.sum()
        if reduction == "sum":
            return total
        return total / self.total(Q.COUNT).clamp_min(1)

    def reduce_groups(self, per_group: Tensor, reduction: str) -> Tensor:
        """Mean over groups holding a valid pixel (0 when none), sum, or the per-group values."""
        present = self.group(Q.COUNT) > 0 if self.masked else None
        if present is not None:
            per_group = torch.where(present, per_group, torch.zeros((), dtype=per_group.dtype, device=per_group.device))
        if reduction == "none":
            return per_group
        if reduction == "sum":
            return per_group.sum()
        if present is None:
            return per_group.mean()
        return per_group.sum() / present.sum().clamp_min(1).to(per_group.dtype)


# --------------------------------------------------------------------------------------------
# scalar helpers of the epilogues
# --------------------------------------------------------------------------------------------


def power_near_zero(x: Tensor, k: float) -> Tensor:
    """``x ** k`` for ``x >= 0``: exact above :data:`POWER_FLOOR`, linear below (finite slope at 0).

    The two pieces are selected, not multiplied: as ``safe**k * (x / safe)`` (an earlier form)
    autograd added ``safe**k (1/safe - x/safe**2)``, a zero that float32 rounds to about
    ``1e-7 / x``, and for a small exponent (focal Tversky at gamma = 1e-6) that error was 2 % of
    the whole gradient, ``k x**(k-1)`` being that small."""
    if k == 0:
        return x**0.0  # 1, still a function of x (zero gradient): a loss of it can be backpropagated
    x = x.clamp_min(0)
    exponent = as_operand(k, x)
    if k >= 1:
        return x**exponent
    linear = x * POWER_FLOOR ** (exponent - 1)
    return torch.where(x >= POWER_FLOOR, x.clamp_min(POWER_FLOOR) ** exponent, linear)


def miss_ratio(hits: Tensor, misses: Tensor, eps: float) -> Tensor:
    """``1 - (hits + eps)/(hits + misses + eps)`` as ``misses/(hits + misses + eps)``: the same number
    without the cancellation of ``1 - index`` for an index near 1 (a nearly perfect prediction, a
    crack-free image predicted clean). Its gradient is :class:`_MissRatio`'s, each partial one
    term: autograd's quotient rule would take ``d/d misses`` as ``1/D - misses/D^2``, which cancels
    where ``hits + eps`` is small against ``misses`` (a crack-free image: in float32 Dice's
    gradient lost 4 of its 7 digits on 2x1x37x53 random logits)."""
    return _MissRatio.apply(hits, misses, eps)


class _MissRatio(torch.autograd.Function):
    """``misses / D``, ``D = hits + misses + eps``, with ``d/d hits = -misses / D^2`` and
    ``d/d misses = (hits + eps) / D^2``."""

    @staticmethod
    def forward(ctx, hits: Tensor, misses: Tensor, eps) -> Tensor:
        # (forward with ctx, not setup_context: Function.apply then skips an inspect.signature)
        ctx.save_for_backward(hits, misses)
        ctx.eps = eps
        return misses / (hits + misses + eps)

    @staticmethod
    def backward(ctx, grad: Tensor):
        hits, misses = ctx.saved_tensors
        hits_eps = hits + ctx.eps
        scaled = grad / (hits_eps + misses) ** 2
        return -misses * scaled, hits_eps * scaled, None


def neg_log_index(hits: Tensor, misses: Tensor, eps: float) -> Tensor:
    """``-log((hits + eps)/(hits + misses + eps))`` as ``log1p(misses/(hits + eps))`` (no cancellation)."""
    return torch.log1p(misses / (hits + eps))


def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh x)`` as ``log1p(2 sinh(x/2)^2)`` (``cosh x`` rounds to 1 for small x)."""
    return torch.log1p(2 * torch.sinh(x / 2) ** 2)


def class_counts(st: Stats) -> tuple[Tensor, Tensor]:
    """``(n_pos, n_neg)`` per channel over the valid pixels of the batch, ``[1, C, 1]``."""
    n_pos = st.channel(Q.SUM_T)
    n_neg = (st.channel(Q.COUNT) - n_pos).clamp_min(0)
    return n_pos, n_neg


def confusion(st: Stats) -> tuple[Tensor, Tensor, Tensor]:
    """Per group ``(TP, FP, FN)``, each summed directly (see :mod:`.spec`)."""
    return st.group(Q.TP), st.group(Q.FP), st.group(Q.FN)


def tversky_parts(st: Stats, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """``(hits, misses)`` of the Tversky index ``(TP + eps)/(TP + alpha FP + beta FN + eps)``."""
    tp, fp, fn = confusion(st)
    return tp, alpha * fp + beta * fn


def dice_parts(st: Stats) -> tuple[Tensor, Tensor]:
    """``(hits, misses)`` of the Dice coefficient ``(2TP + eps)/(2TP + FP + FN + eps)``."""
    tp, fp, fn = confusion(st)
    return 2 * tp, fp + fn


def jaccard_parts(st: Stats) -> tuple[Tensor, Tensor]:
    """``(hits, misses)`` of the Jaccard index ``(TP + eps)/(TP + FP + FN + eps)``."""
    tp, fp, fn = confusion(st)
    return tp, fp + fn


def adaptive_q(q: str, n_pos: Tensor, n_neg: Tensor, beta: float, gamma: float | None, a: float, smooth: float) -> Tensor:
    """Seed 002 eq 3-7 with the reference's smoothing: ``alpha = (N_neg + s)/(N + 2 s)``; with
    ``s = 0`` a count below one pixel counts as one (the reference's decision)."""
    n_pos, n_neg = n_pos + smooth, n_neg + smooth
    if smooth == 0:
        n_pos, n_neg = n_pos.clamp_min(1), n_neg.clamp_min(1)
    alpha = n_neg / (n_neg + n_pos)
    odds = n_neg / n_pos
    if q == "xie":
        return odds
    if q == "power":
        return beta * odds ** as_operand(gamma, odds)
    if q == "log":
        return beta * torch.log(odds).clamp_min(0)
    return beta * as_operand(a, alpha) ** (gamma * (2 * alpha - 1))


# --------------------------------------------------------------------------------------------
# pointwise plans: lam_fg * FG + lam_bg * BG (per pixel), mean over the valid pixels
# --------------------------------------------------------------------------------------------

_CE = (Q.FG_CE, Q.BG_CE, Q.COUNT)


def _two_term(qs, params, w_fg, w_bg, fg=Q.FG_CE, bg=Q.BG_CE) -> Plan:
    def epilogue(st: Stats, reduction: str) -> Tensor:
        return st.reduce_pointwise(w_fg * st.pixel(fg) + w_bg * st.pixel(bg), reduction)

    return Plan(qs, params, epilogue, pointwise=True)


def ce_plan(*, w_fg=1.0, w_bg=1.0, g_fg=0.0, g_bg=0.0, m=0.0) -> Plan:
    """``-[w_fg (1-p)^g_fg t log sigmoid(z-m) + w_bg p^g_bg (1-t) log(1-p)]``: BCE, weighted
    BCE, focal, asymmetric focal, asymmetric margin, asymmetric focal margin, focal margin."""
    return _two_term(_CE, TermParams(g_fg=g_fg, m=m, g_bg=g_bg), w_fg, w_bg)


def balanced_bce_plan() -> Plan:
    def epilogue(st: Stats, reduction: str) -> Tensor:
        n_pos, n_neg = class_counts(st)
        beta = n_neg / (n_pos + n_neg).clamp_min(1)
        return st.reduce_pointwise(beta * st.pixel(Q.FG_CE) + (1 - beta) * st.pixel(Q.BG_CE), reduction)

    return Plan(_CE + (Q.SUM_T,), TermParams(), epilogue, pointwise=True)


def adaptive_wce_plan(*, q, beta, gamma, a, smooth) -> Plan:
    def epilogue(st: Stats, reduction: str) -> Tensor:
        return st.reduce_pointwise(_adaptive_wce_pixels(st, q, beta, gamma, a, smooth), reduction)

    return Plan(_CE + (Q.SUM_T,), TermParams(), epilogue, pointwise=True)


def _adaptive_wce_pixels(st, q, beta, gamma, a, smooth) -> Tensor:
    n_pos, n_neg = class_counts(st)
    q_alpha = adaptive_q(q, n_pos, n_neg, beta, gamma, a, smooth)
    return q_alpha * st.pixel(Q.FG_CE) + st.pixel(Q.BG_CE)


def el_ce_plan(*, w_fg, w_bg, gce) -> Plan:
    return _two_term((Q.EL_FG, Q.EL_BG, Q.COUNT), TermParams(gce=gce), w_fg, w_bg, Q.EL_FG, Q.EL_BG)


def dibe_dis_plan(*, w_fg, w_bg, gamma, alpha, beta) -> Plan:
    params = TermParams(dibe_g=gamma, dibe_alpha=alpha, dibe_beta=beta)
    return _two_term((Q.DIBE_FG, Q.DIBE_BG, Q.COUNT), params, w_fg, w_bg, Q.DIBE_FG, Q.DIBE_BG)


# --------------------------------------------------------------------------------------------
# region plans: a function of per-group sums, reduced over the groups
# --------------------------------------------------------------------------------------------

#: What the confusion-based region terms read (COUNT tells which groups have a valid pixel).
CONFUSION = (Q.TP, Q.FP, Q.FN, Q.COUNT)


def region_plan(per_group: Callable[[Stats], Tensor], quantities=CONFUSION) -> Plan:
    def epilogue(st: Stats, reduction: str) -> Tensor:
        return st.reduce_groups(per_group(st), reduction)

    return Plan(tuple(quantities), TermParams(), epilogue)


def dice_plan(*, eps) -> Plan:
    return region_plan(lambda st: miss_ratio(*dice_parts(st), eps))


def squared_dice_plan(*, eps) -> Plan:
    """``sum (p - t)^2 / (2 sum p t + sum (p - t)^2 + eps)``: the squared Dice loss
    ``1 - (2 TP + eps)/(sum p^2 + sum t^2 + eps)`` with ``sum p^2 + sum t^2 - 2 TP`` summed per pixel
    as ``SS_FG + SS_BG`` instead of rebuilt by subtraction (see :func:`miss_ratio`)."""
    def per_group(st: Stats) -> Tensor:
        return miss_ratio(2 * st.group(Q.TP), st.group(Q.SS_FG) + st.group(Q.SS_BG), eps)

    return region_plan(per_group, (Q.TP, Q.SS_FG, Q.SS_BG, Q.COUNT))


def jaccard_plan(*, eps) -> Plan:
    return region_plan(lambda st: miss_ratio(*jaccard_parts(st), eps))


def tversky_plan(*, alpha, beta, eps) -> Plan:
    return region_plan(lambda st: miss_ratio(*tversky_parts(st, alpha, beta), eps))


def focal_tversky_plan(*, gamma, alpha, beta, eps) -> Plan:
    return region_plan(lambda st: power_near_zero(miss_ratio(*tversky_parts(st, alpha, beta), eps), gamma))


def dibe_reg_plan(*, gamma, alpha, beta, eps) -> Plan:
    return region_plan(lambda st: power_near_zero(neg_log_index(*tversky_parts(st, alpha, beta), eps), 1.0 / gamma))


def log_cosh_dice_plan(*, eps) -> Plan:
    return region_plan(lambda st: log_cosh(miss_ratio(*dice_parts(st), eps)))


def sensitivity_specificity_plan(*, w, eps) -> Plan:
    def per_group(st):
        sum_t = st.group(Q.SUM_T)
        sens = st.group(Q.SS_FG) / (sum_t + eps)
        spec = st.group(Q.SS_BG) / (st.group(Q.COUNT) - sum_t + eps)
        return w * sens + (1 - w) * spec

    return region_plan(per_group, (Q.SS_FG, Q.SS_BG, Q.SUM_T, Q.COUNT))


# --------------------------------------------------------------------------------------------
# compound plans: a pointwise plan + a region term
# --------------------------------------------------------------------------------------------


def compound_plan(pointwise: Plan, w_point: float, region: Callable[[Stats], Tensor], w_region: float, region_qs=CONFUSION) -> Plan:
    """``w_point * pointwise + w_region * reduce_groups(region)`` ("mean" or "sum" only)."""
    qs = tuple(dict.fromkeys(pointwise.quantities + tuple(region_qs)))

    def epilogue(st: Stats, reduction: str) -> Tensor:
        return w_point * pointwise.epilogue(st, reduction) + w_region * st.reduce_groups(region(st), reduction)

    return Plan(qs, pointwise.params, epilogue)


# --------------------------------------------------------------------------------------------
# distance plans (fastseg.reference.distance): the per-pixel maps come from Plan.maps
# --------------------------------------------------------------------------------------------


#: The confusion sums and seed 003's distance-weighted false positives.
_DISTANCE_CONF = CONFUSION + (Q.D_FP,)


def distance_factor(st: Stats, alpha: float, eps_dist: float) -> Tensor:
    """Seed 003 eq 1/3 per group: ``1 + L_Dist (alpha - 1)``, ``L_Dist = sum(ND FP) / (FP + eps_dist)``,
    evaluated as ``alpha + (1 - alpha)(1 - L_Dist)`` with
    ``1 - L_Dist = (sum((1 - ND) FP) + eps_dist) / (FP + eps_dist)``: ``D_FP`` sums ``1 - ND``
    (:func:`.distance_maps.nearness_maps`).

    Summing ND instead loses digits in two places: the value ``1 - (1 - alpha) L_Dist`` cancels
    for alpha near 0 when the false positives are far (L_Dist near 1), and the gradient of every
    pixel adds ``d/dFP`` and ``ND d/dD_FP``, which cancel where ND is 1: on a crack-free image the
    float32 gradient of the default loss (alpha = 4) lost 4 of its 7 digits. With ``1 - ND`` the
    value adds two terms of one sign for alpha <= 1, and above 1 subtracts at most alpha - 1 from
    alpha (a result >= 1: no cancellation); a crack-free image reads 0, so each of its pixels'
    gradients is one term. FP is summed directly, not as ``SUM_P - TP``: a few
    weak false alarms beside confident cracks would lose most of its float32 digits in that
    subtraction (see :mod:`.spec`).
    """
    return alpha + (1 - alpha) * (st.group(Q.D_FP) + eps_dist) / (st.group(Q.FP) + eps_dist)


def distance_loss_plan(*, alpha, eps, eps_dist, maps) -> Plan:
    """``L_Dice (1 + L_Dist (alpha - 1))`` per group (seed 003 eq 1-3, Dice loss corrected)."""
    def epilogue(st: Stats, reduction: str) -> Tensor:
        dice_loss = miss_ratio(*dice_parts(st), eps)
        return st.reduce_groups(dice_loss * distance_factor(st, alpha, eps_dist), reduction)

    return Plan(_DISTANCE_CONF, TermParams(), epilogue, maps=maps)


def hausdorff_dt_plan(*, maps) -> Plan:
    """``mean((p - t)^2 d)`` with ``d = w (d_t^a + d_p^a)`` from ``maps``."""
    def epilogue(st: Stats, reduction: str) -> Tensor:
        return st.reduce_pointwise(st.pixel(Q.D_SQERR), reduction)

    return Plan((Q.D_SQERR, Q.COUNT), TermParams(), epilogue, pointwise=True, maps=maps, maps_read_weight=True)


def weighted_ce_plan(*, maps) -> Plan:
    """``mean(w CE)`` where ``maps`` supplies the weight map (distance-map CE, shape-aware)."""
    plan = ce_plan()
    return Plan(plan.quantities, plan.params, plan.epilogue, pointwise=True, maps=maps, maps_weight=True)


def distance_compound_plan(pointwise: Plan, w_point: float, region: Callable[[Stats], Tensor], w_region: float, *,
                           alpha: float, eps_dist: float, maps) -> Plan:
    """``w_point * pointwise + w_region * reduce_groups(region * (1 + L_Dist (alpha - 1)))``."""
    qs = tuple(dict.fromkeys(pointwise.quantities + _DISTANCE_CONF))

    def epilogue(st: Stats, reduction: str) -> Tensor:
        per_group = region(st) * distance_factor(st, alpha, eps_dist)
        return w_point * pointwise.epilogue(st, reduction) + w_region * st.reduce_groups(per_group, reduction)

    return Plan(qs, pointwise.params, epilogue, maps=maps)
