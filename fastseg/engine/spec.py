"""The contract between the fused loss plans and the kernels that evaluate them.

Every loss of the catalog (except the EDT itself) is

    L = epilogue(S),   S[g, k] = sum over the valid pixels i of group g of  s_k(z_i, t_i, d_i, w_i)

where the per-pixel quantities ``s_k`` are the fixed library below and the epilogue is a few
differentiable torch ops on the tiny ``[G, K]`` tensor ``S`` (pointwise means are ``S / N``).
Backward: ``c = dL/dS`` (autograd on the epilogue, tiny) and, per pixel,
``dL/dz_i = sum_k c[g(i), k] * ds_k/dz_i``. So the forward pass reads (z, t, d, w, ignore) once
and writes ``[G, tiles, K]`` partial sums; the backward pass reads them again and writes dL/dz.

Per-pixel notation: ``p = sigmoid(z)``, ``lp = logsigmoid(z) = log p``,
``lq = logsigmoid(-z) = log(1-p)``, ``pm = sigmoid(z - m)``, ``lpm = logsigmoid(z - m)``,
``yhat = [p >= 0.5]`` (no gradient), ``t`` target in [0, 1], ``d`` a per-pixel distance input,
``w`` the per-pixel weight (1 when absent). Every quantity is multiplied by the valid mask.

| id | name     | s_k                                                        | ds_k/dz                                   |
|----|----------|------------------------------------------------------------|-------------------------------------------|
| 0  | TP       | p t                                                        | t p(1-p)                                  |
| 1  | SUM_P    | p                                                          | p(1-p)                                    |
| 2  | SUM_T    | t                                                          | 0                                         |
| 3  | SUM_PP   | p^2                                                        | 2 p^2 (1-p)                               |
| 4  | SUM_TT   | t^2                                                        | 0                                         |
| 5  | COUNT    | 1                                                          | 0                                         |
| 6  | FG_CE    | w t (1-p)^g_fg (-lpm)                                      | w t (1-p)^g_fg (pm - 1 - g_fg p (-lpm))   |
| 7  | BG_CE    | w (1-t) p^g_bg (-lq)                                       | w (1-t) p^g_bg (p + g_bg (1-p)(-lq))      |
| 8  | EL_FG    | w t (-lp)^gce                                              | w t gce (-lp)^(gce-1) (p - 1)             |
| 9  | EL_BG    | w (1-t) (-lq)^gce                                          | w (1-t) gce (-lq)^(gce-1) p               |
| 10 | DIBE_FG  | w t [yhat: (1-p)^g (-lp); else (1-p^(1+a))^g (1+a)(-lp)]   | derivative of the active branch           |
| 11 | DIBE_BG  | w (1-t) [!yhat: p^g (-lq); else (1-(1-p)^(1+b))^g (1+b)(-lq)] | derivative of the active branch        |
| 12 | SS_FG    | (t-p)^2 t                                                  | 2 (p-t) t p(1-p)                          |
| 13 | SS_BG    | (t-p)^2 (1-t)                                              | 2 (p-t) (1-t) p(1-p)                      |
| 14 | D_FP     | d p (1-t)                                                  | d (1-t) p(1-p)                            |
| 15 | D_SQERR  | d (p-t)^2                                                  | 2 d (p-t) p(1-p)                          |
| 16 | FP       | p (1-t)                                                    | (1-t) p(1-p)                              |
| 17 | FN       | (1-p) t                                                    | -t p(1-p)                                 |
| 18 | TN       | (1-p) (1-t)                                                | -(1-t) p(1-p)                             |

Everything else is an epilogue expression: Dice, Jaccard and Tversky from ``TP, FP, FN``, the
background class of Unified Focal from ``TN, FN, FP``, class weights from ``SUM_T / COUNT`` over
the batch, pointwise means ``FG_CE / COUNT``, ... The confusion sums are each summed directly
(``1 - p`` as ``sigmoid(-z)``), never rebuilt by subtraction: ``FN = SUM_T - TP`` or
``TN = COUNT - SUM_P - SUM_T + TP`` of float32 sums keep only the digits that survive the
cancellation, which is all of them on the images where they matter: an all-crack image predicted
confidently has ``TN = 0`` and ``FN`` a millionth of ``SUM_T`` (Unified Focal's background index
``(TN + eps)/(TN + ... + eps)`` with ``eps = 1e-7`` read the round-off and gave 0.0003 instead of
0.25), and seed 003's L_Dist divides by a FP a thousand times smaller than ``SUM_P`` when a few
weak false alarms sit beside confident cracks.

Numerics the implementations must keep: ``x ** g`` as ``exp2(g * log2(x))`` with ``x = 0`` mapped
to ``0`` (``g > 0``) or ``1`` (``g = 0``); ``(-lp) ** gce`` (gce not 1 or 2) through ``log(-lp)``,
taken as ``-|z|`` where ``-lp`` is below the smallest normal float (a confident pixel keeps
``e^(-gce |z|)``), and its derivative as ``gce (-lp)^gce (q / -lp)`` with that ratio 1 there, so
gce < 1 stays finite; softplus forms only (no ``log(sigmoid)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Quantity(IntEnum):
    TP = 0
    SUM_P = 1
    SUM_T = 2
    SUM_PP = 3
    SUM_TT = 4
    COUNT = 5
    FG_CE = 6
    BG_CE = 7
    EL_FG = 8
    EL_BG = 9
    DIBE_FG = 10
    DIBE_BG = 11
    SS_FG = 12
    SS_BG = 13
    D_FP = 14
    D_SQERR = 15
    FP = 16
    FN = 17
    TN = 18


NUM_QUANTITIES = len(Quantity)


@dataclass(frozen=True)
class TermParams:
    """Scalar parameters of the per-pixel quantities (runtime arguments of the Triton kernels and of
    the compiled Inductor passes; only their form, such as an exponent of 0, 1 or 2 or a zero
    margin, is compiled in).

    ``g_fg``/``m``: FG_CE focal exponent and margin; ``g_bg``: BG_CE focal exponent; ``gce``: EL
    exponent; ``dibe_g``/``dibe_alpha``/``dibe_beta``: DIBE_Dis exponent and regulators.
    """

    g_fg: float = 0.0
    m: float = 0.0
    g_bg: float = 0.0
    gce: float = 1.0
    dibe_g: float = 0.0
    dibe_alpha: float = 0.0
    dibe_beta: float = 0.0


#: The quantities multiplied by the per-pixel weight ``w`` (the cross-entropy terms).
WEIGHTED = frozenset({Quantity.FG_CE, Quantity.BG_CE, Quantity.EL_FG, Quantity.EL_BG, Quantity.DIBE_FG,
                      Quantity.DIBE_BG})


def reads_weight(quantities) -> bool:
    """Does any of ``quantities`` read the per-pixel weight input?"""
    return any(Quantity(int(q)) in WEIGHTED for q in quantities)


#: The :class:`TermParams` fields each quantity reads (the others read none).
PARAMETERS_OF: dict[Quantity, tuple[str, ...]] = {
    Quantity.FG_CE: ("g_fg", "m"),
    Quantity.BG_CE: ("g_bg",),
    Quantity.EL_FG: ("gce",),
    Quantity.EL_BG: ("gce",),
    Quantity.DIBE_FG: ("dibe_g", "dibe_alpha"),
    Quantity.DIBE_BG: ("dibe_g", "dibe_beta"),
}


def parameters_read(quantities, params: TermParams) -> dict[str, float]:
    """``{field: value}`` of the :class:`TermParams` fields that ``quantities`` read."""
    return {name: getattr(params, name) for q in quantities for name in PARAMETERS_OF.get(Quantity(int(q)), ())}


def only_read(quantities, params: TermParams) -> TermParams:
    """``params`` with the fields ``quantities`` do not read reset to their defaults."""
    return TermParams(**parameters_read(quantities, params))
