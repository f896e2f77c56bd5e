"""OII guidance: choose an output-imbalance weight alpha by bisection on the OII (seed 001).

Seed 001, section 3.1.2, Fig. 4 and Appendix B: train and validate a model with alpha
(beta = 1 - alpha) at the middle of a range [a, b]; if the validation OII is above the target
interval (m0, m1), too many cracks are missed, so move alpha up (bisect [alpha, b]); if it is
below, move alpha down (bisect [a, alpha]); stop once the OII is in the interval or after
``max_steps`` trainings. Default target (0.3, 0.4) and range [0.1, 0.9] are the paper's (found for
its THC448 data set; the paper leaves open whether they carry over to other data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from torch import Tensor

from ._checks import check_number, type_name

__all__ = ["GuidanceStep", "GuidanceResult", "oii_guidance"]


@dataclass(frozen=True)
class GuidanceStep:
    """One training run: the alpha tried, the OII it gave, and everything the callable returned
    (``metrics``: the mapping or object itself; an empty dict when it returned a bare number)."""

    alpha: float
    oii: float
    metrics: Any = field(default_factory=dict)


@dataclass(frozen=True)
class GuidanceResult:
    """``alpha``/``oii``: the chosen step; ``converged``: its OII lies in the target interval;
    ``steps``: every run in order."""

    alpha: float
    oii: float
    converged: bool
    steps: list[GuidanceStep]


def _read_oii(result) -> float:
    if isinstance(result, Mapping):
        if "oii" not in result:
            raise ValueError(f"train_and_validate returned a mapping without an 'oii' key (keys: {sorted(map(str, result))})")
        value = result["oii"]
    elif isinstance(result, Real) and not isinstance(result, bool):
        value = result
    elif isinstance(result, Tensor) and result.numel() == 1:  # e.g. Confusion.total().oii()
        value = result
    elif hasattr(result, "oii"):
        value = result.oii
    else:
        raise TypeError(
            "train_and_validate must return the OII (a number), a mapping with an 'oii' key, "
            f"or an object with an 'oii' attribute; got {type_name(result)}"
        )
    return check_number("OII returned by train_and_validate", value, low=-1.0, high=1.0)


def _pair(name: str, value, low: float, high: float) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (low, high); got {value!r}")
    lo = check_number(f"{name}[0]", value[0], low=low, high=high)
    hi = check_number(f"{name}[1]", value[1], low=low, high=high)
    if not lo < hi:
        raise ValueError(f"{name} must satisfy low < high; got {value!r}")
    return lo, hi


def oii_guidance(
    train_and_validate: Callable[[float], Any],
    *,
    target: tuple[float, float] = (0.3, 0.4),
    bounds: tuple[float, float] = (0.1, 0.9),
    max_steps: int = 5,
) -> GuidanceResult:
    """Search alpha by bisection until the validation OII falls in ``target`` (seed 001, Fig. 4).

    ``train_and_validate(alpha)`` trains and validates a model with output-imbalance weight alpha
    (beta = 1 - alpha, as the DIBE_Dis and Tversky losses of seed 001 use them) and returns its
    validation OII (:func:`fastseg.metrics.oii` of the counts pooled over the validation set): a
    number, a mapping with key ``"oii"``, or an object with attribute ``oii`` (other metrics
    travel along in :attr:`GuidanceStep.metrics`).

    Algorithm (seed 001 section 3.1.2 and Appendix B): ``[lo, hi] = bounds``; alpha = (lo+hi)/2;
    run; if ``m0 <= OII <= m1`` stop; if OII > m1, ``lo = alpha`` (raise alpha); if OII < m0,
    ``hi = alpha`` (lower it); repeat with the new midpoint, at most ``max_steps`` runs. So with
    the defaults the first run is alpha = 0.5, the next 0.7 or 0.3, then 0.8/0.6 or 0.4/0.2, ...
    (each run halves the interval: ``max_steps = m`` resolves alpha to (b-a)/2^m).

    Decisions: the target interval counts as closed (an OII equal to m0 or m1 stops the search,
    since neither move rule applies there). Direction: a positive OII means FN > FP, and the
    search assumes that raising alpha penalises missed cracks more, so OII falls as alpha rises
    (seed 001: "alpha is then increased to reduce OII"; Fig. 8, Table 3). That holds for
    DIBE_Dis, where alpha acts on missed foreground (001 eq 16, see LOSSES.md), and for the
    paper's Tversky experiments, although its eq 7 names alpha the FP weight. fastseg's
    ``tversky`` follows eq 7 (alpha weights FP, beta FN), so to steer it pass
    ``lambda a: f(alpha=1 - a, beta=a)`` (alpha here is the FN weight). Without convergence,
    the chosen step is the one whose OII is closest to the interval (the latest on ties).

    Returns a :class:`GuidanceResult` with the chosen alpha, its OII, whether it converged and
    every step.
    """
    if not callable(train_and_validate):
        raise TypeError(f"train_and_validate must be callable (alpha -> OII); got {type_name(train_and_validate)}")
    m0, m1 = _pair("target", target, -1.0, 1.0)
    lo, hi = _pair("bounds", bounds, -math.inf, math.inf)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int):
        raise TypeError(f"max_steps must be an int; got {type_name(max_steps)}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}")

    steps: list[GuidanceStep] = []
    for _ in range(max_steps):
        alpha = (lo + hi) / 2
        result = train_and_validate(alpha)
        value = _read_oii(result)
        steps.append(GuidanceStep(alpha=alpha, oii=value, metrics=result if not isinstance(result, Real) else {}))
        if m0 <= value <= m1:
            return GuidanceResult(alpha=alpha, oii=value, converged=True, steps=steps)
        if value > m1:
            lo = alpha
        else:
            hi = alpha

    def distance(step: GuidanceStep) -> float:
        return max(m0 - step.oii, step.oii - m1, 0.0)

    best = min(reversed(steps), key=distance)
    return GuidanceResult(alpha=best.alpha, oii=best.oii, converged=False, steps=steps)
