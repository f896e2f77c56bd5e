"""Weighted sums of plans: which terms of a combined loss can share one fused pass, and the plan
that evaluates them together.

A combined loss ``L = sum_i w_i L_i`` of catalog losses needs, for each term, the sums ``S`` of
its plan's quantities. Terms whose plans agree on everything a pass reads share one pass: the
union of their quantities is summed once (``z`` and ``t`` read once forward, ``dL/dz`` written
once backward) and each term's epilogue reads its columns. Two plans can share a pass when

- every scalar parameter both read has the same value (``focal(gamma=2)`` and ``focal(gamma=1)``
  both read FG_CE, with different exponents: two passes);
- at most one of them reads distance maps (each distance loss builds its own ``weight`` /
  ``distance`` inputs), and a plan whose maps replace the CE weight (distance-map CE,
  shape-aware) shares its pass with no other plan that reads a CE weight.

Whether the settings of the terms agree (``from_logits``, backend, the process group of
``scope="global"``) is the caller's part (:class:`fastseg.losses.CombinedLoss`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..distributed import GLOBAL
from .plans import Plan, Stats
from .spec import TermParams, parameters_read, reads_weight


@dataclass(frozen=True)
class Term:
    """``weight * epilogue(stats seen with scope, reduction)`` of ``plan``."""

    weight: float
    plan: Plan
    scope: str
    reduction: str


def can_share(a: Plan, b: Plan) -> bool:
    """Can ``a`` and ``b`` be evaluated by one fused pass (see the module docstring)?"""
    pa, pb = parameters_read(a.quantities, a.params), parameters_read(b.quantities, b.params)
    if any(pa[name] != pb[name] for name in pa.keys() & pb.keys()):
        return False
    if a.maps is not None and b.maps is not None:
        return False
    for mapped, other in ((a, b), (b, a)):
        if mapped.maps_weight and reads_weight(other.quantities):
            return False
    return True


def group_terms(terms: list[Term]) -> list[list[Term]]:
    """Terms in passes: each term joins the first pass whose plans it can share, else opens one."""
    passes: list[list[Term]] = []
    for term in terms:
        for members in passes:
            if all(can_share(term.plan, m.plan) for m in members):
                members.append(term)
                break
        else:
            passes.append([term])
    return passes


def fused_plan(terms: list[Term]) -> Plan:
    """One plan for terms that can share a pass: the union of their quantities, their parameters,
    their maps (if one reads maps), and an epilogue summing ``weight * epilogue`` of each term,
    which sees the sums with its own scope and applies its own reduction (the ``reduction``
    passed to the fused epilogue is not used)."""
    quantities = tuple(dict.fromkeys(q for t in terms for q in t.plan.quantities))
    read: dict[str, float] = {}
    for t in terms:
        read.update(parameters_read(t.plan.quantities, t.plan.params))
    mapped = next((t.plan for t in terms if t.plan.maps is not None), None)

    def epilogue(st: Stats, reduction: str) -> Tensor:
        total = None
        for t in terms:
            view = st if t.scope == GLOBAL else st.rescoped(t.scope)
            value = t.weight * t.plan.epilogue(view, t.reduction)
            total = value if total is None else total + value
        return total

    maps = None
    if mapped is not None:
        def maps(checked, from_logits, distance):
            weight, dist = mapped.maps(checked, from_logits, distance)
            return (weight if mapped.maps_weight else checked.weight), dist

    return Plan(quantities, TermParams(**read), epilogue, maps=maps, maps_weight=mapped is not None and mapped.maps_weight)
