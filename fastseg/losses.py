"""``nn.Module`` losses: one class per loss of :mod:`fastseg.functional`, with the catalog's defaults.

Each class takes the loss's parameters (the keyword arguments of its functional form, same names
and defaults) plus ``from_logits``, ``scope`` (default ``"image"``; pointwise losses: ``"batch"``,
the default, or ``"global"``), ``reduction``, ``backend``, ``deterministic`` and, for
``scope="global"``, ``process_group`` (the ``torch.distributed`` group whose ranks' statistics
are summed, default the default group; see :mod:`fastseg.distributed`) at construction,
validates them all there (the same rules and errors as the functional form), and is then called
as ``loss(input, target, ignore=None, weight=None, distance=None)`` (``distance``: the distance
losses' precomputed map of the target, see their functional forms). ``weight`` (a per-pixel map)
applies to the losses with a pointwise term (pointwise, compound, and the distance losses but
:class:`DistanceLoss`); the others (region losses, :class:`DistanceLoss`) raise ``ValueError``
when given one instead of ignoring it (``reads_weight`` says which). The parameters are fixed at
construction (the fused plan is built once, and rebuilt from them when the module is unpickled):
``params`` is read-only (:class:`FixedParameters`); make a new module to change them. Modules and
their sums pickle (``torch.save``, ``deepcopy``); one with a ``process_group`` deep-copies
(the copy shares the group) but does not pickle (a group belongs to its process).
``repr`` lists every parameter (a pointwise loss's scope only when it is not the default
``"batch"``)::

    >>> HybridFocalMarginLoss(m=1.0)
    HybridFocalMarginLoss(m=1.0, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None, eps=1.0, scope='image', reduction='mean')

:func:`build` makes the same modules, and their sums, from a configuration (names, ``"0.5*focal +
dice"``, mappings, lists). See the functional form (``fastseg.functional.<name>``) and the reference
(``fastseg.reference.<name>``) for the formula, its source and the catalog's decisions.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from torch import Tensor, nn

from . import functional as F
from ._checks import check_choice, check_no_weight, check_number, type_name
from .engine import combine
from .engine.function import BACKENDS

__all__ = [
    "FusedLoss",
    "BinaryCrossEntropyLoss",
    "WeightedBCELoss",
    "BalancedBCELoss",
    "AdaptiveWCELoss",
    "FocalLoss",
    "AsymmetricFocalLoss",
    "AsymmetricMarginLoss",
    "AsymmetricFocalMarginLoss",
    "FocalMarginLoss",
    "ELCrossEntropyLoss",
    "DIBEDisLoss",
    "DiceLoss",
    "SquaredDiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "DIBERegLoss",
    "LogCoshDiceLoss",
    "SensitivitySpecificityLoss",
    "BCEDiceLoss",
    "ComboLoss",
    "ExpLogLoss",
    "HybridFocalLoss",
    "UnifiedFocalLoss",
    "HybridFocalMarginLoss",
    "DIBELoss",
    "HolisticLoss",
    "DistanceLoss",
    "HausdorffDTLoss",
    "DistanceMapCELoss",
    "ShapeAwareLoss",
    "HybridFocalMarginDistanceLoss",
    "CombinedLoss",
    "build",
]

_CALL_ARGS = ("input", "target", "ignore", "weight", "distance")  # distance: the distance losses' call argument
_SETTINGS = ("from_logits", "scope", "reduction", "backend", "deterministic")


def _default_scope(name: str) -> str:
    """``"batch"`` for pointwise losses (the mean over the batch's valid pixels), else ``"image"``."""
    return "batch" if F.kind(name) == "pointwise" else "image"


def _loss_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The loss's own parameters (name -> Parameter) from its functional signature."""
    sig = inspect.signature(getattr(F, name))
    return {n: p for n, p in sig.parameters.items() if n not in _CALL_ARGS + _SETTINGS}


class _Arithmetic:
    """``w * loss``, ``-loss``, ``loss / d`` and ``loss - other`` as a :class:`CombinedLoss` (``+``
    is each class's own)."""

    def __mul__(self, weight) -> CombinedLoss:
        return CombinedLoss([(weight, self)])

    __rmul__ = __mul__

    def __neg__(self) -> CombinedLoss:
        return CombinedLoss([(-1.0, self)])

    def __truediv__(self, divisor) -> CombinedLoss:
        divisor = check_number("divisor", divisor)
        if divisor == 0:
            raise ZeroDivisionError("a fastseg loss divided by zero (divisor must be nonzero)")
        return CombinedLoss([(1.0 / divisor, self)])

    def __sub__(self, other) -> CombinedLoss:
        if not isinstance(other, FusedLoss | CombinedLoss):
            raise TypeError(f"only a fastseg loss can be subtracted from a fastseg loss; got {type_name(other)}")
        return self + (-other)


class _RebuiltOnLoad:
    """Pickling (``torch.save``, ``deepcopy``): the attribute ``_derived`` names holds plans whose
    epilogues are closures, which pickle refuses; it is dropped and rebuilt by ``_derive()``."""

    _derived: ClassVar[str]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop(self._derived, None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        setattr(self, self._derived, self._derive())


class FixedParameters(dict):
    """A loss module's parameters, read-only: the fused plan is built from them once, so a changed
    value would be ignored by the module yet used by its copies and pickles."""

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "a fastseg loss module's parameters are fixed at construction (its fused plan is built from them); "
            "build a new module with the new values, e.g. HybridFocalMarginLoss(m=1.5): under torch.compile that "
            "costs no recompilation per value"
        )

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _refuse

    def __reduce__(self):
        return (FixedParameters, (dict(self),))


def _plain(value):
    """A one-element tensor or a NumPy scalar as the Python number it holds (for ``repr`` and
    pickles; the plan reads them the same)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


class FusedLoss(_RebuiltOnLoad, _Arithmetic, nn.Module):
    """Base class: ``loss_name`` names the functional loss a subclass wraps."""

    loss_name: ClassVar[str]
    _derived = "_plan"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("loss_name")
        if name is None:
            return
        params = list(_loss_parameters(name).values())
        kw = inspect.Parameter.KEYWORD_ONLY
        settings = [
            inspect.Parameter("from_logits", kw, default=True),
            inspect.Parameter("scope", kw, default=_default_scope(name)),
            inspect.Parameter("reduction", kw, default="mean"),
            inspect.Parameter("backend", kw, default="auto"),
            inspect.Parameter("deterministic", kw, default=True),
            inspect.Parameter("process_group", kw, default=None),
        ]
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

        def __init__(self, **kwargs):
            FusedLoss.__init__(self, **kwargs)

        __init__.__signature__ = inspect.Signature([self_param, *params, *settings])  # for help()
        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = __init__
        if not cls.__doc__:
            cls.__doc__ = f"Module form of :func:`fastseg.functional.{name}`.\n\n{getattr(F, name).__doc__}"

    def __init__(self, **kwargs):
        if not hasattr(type(self), "loss_name"):
            raise TypeError(f"{type(self).__name__} is a base class: use one of its loss classes (e.g. DiceLoss), "
                            "or subclass it with a loss_name")
        super().__init__()
        cls = type(self).__name__
        name = self.loss_name
        own = _loss_parameters(name)
        allowed = set(own) | set(_SETTINGS) | {"process_group"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(f"{cls}() got unexpected keyword argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(allowed))}")
        self.params = {n: kwargs.get(n, p.default) for n, p in own.items()}
        self._plan = self._derive()  # validates the loss parameters
        self.params = FixedParameters({n: _plain(v) for n, v in self.params.items()})

        self.from_logits = kwargs.get("from_logits", True)
        if not isinstance(self.from_logits, bool):
            raise TypeError(f"from_logits must be a bool; got {type_name(self.from_logits)}")
        self.scope = kwargs.get("scope", _default_scope(name))
        self.reduction = kwargs.get("reduction", "mean")
        F.check_scope_and_reduction(name, self.scope, self.reduction)
        self.process_group = kwargs.get("process_group")  # scope "global" only (fastseg.distributed)
        if self.process_group is not None and self.scope != "global":
            raise ValueError(f"process_group applies to scope='global' only; got scope={self.scope!r}")
        self.backend = kwargs.get("backend", "auto")
        check_choice("backend", self.backend, BACKENDS)
        self.deterministic = kwargs.get("deterministic", True)
        if not isinstance(self.deterministic, bool):
            raise TypeError(f"deterministic must be a bool; got {type_name(self.deterministic)}")

    def _derive(self):
        return getattr(F, f"{self.loss_name}_plan")(**self.params)

    def __deepcopy__(self, memo):
        """A copy in this process (``copy.deepcopy``, an EMA copy of a model) shares the
        ``process_group``: a group belongs to its process and cannot be copied."""
        if self.process_group is not None:
            memo[id(self.process_group)] = self.process_group
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    def __reduce_ex__(self, protocol):
        if self.__dict__.get("process_group") is not None:
            raise TypeError(
                f"a {type(self).__name__} with a process_group cannot be pickled (a process group belongs to its "
                f"process): save the model's state_dict and build the loss with its group after loading"
            )
        return super().__reduce_ex__(protocol)

    @property
    def reads_weight(self) -> bool:
        """Whether ``weight=`` enters the loss: a per-pixel (cross-entropy) term it weights, or
        distance maps it scales (Hausdorff DT). Otherwise a ``weight`` raises ``ValueError``."""
        return self._plan.reads_weight

    def forward(self, input: Tensor, target: Tensor, ignore=None, weight: Tensor | None = None,
                distance: Tensor | None = None) -> Tensor:
        """``distance``: distance losses only, the target's precomputed map (see the functional form)."""
        if distance is not None and self._plan.maps is None:
            raise TypeError(f"{type(self).__name__} reads no distance map; distance must be None")
        if not self.reads_weight:
            check_no_weight(weight, type(self).__name__)
        F.check_scope_and_reduction(self.loss_name, self.scope, self.reduction)  # settings may change after construction
        return F.run_plan(
            self._plan,
            input,
            target,
            from_logits=self.from_logits,
            scope=self.scope,
            reduction=self.reduction,
            ignore=ignore,
            weight=weight,
            backend=self.backend,
            deterministic=self.deterministic,
            process_group=self.process_group,
            distance=distance,
        )

    # arithmetic: 0.5 * FocalLoss() + DiceLoss() is a CombinedLoss (see _Arithmetic) ----------
    def __add__(self, other) -> CombinedLoss:
        return CombinedLoss([self]) + other

    def __radd__(self, other) -> CombinedLoss:
        return CombinedLoss([self]).__radd__(other)

    def extra_repr(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.params.items()]
        if not self.from_logits:
            parts.append("from_logits=False")
        if self.scope != "batch" or F.kind(self.loss_name) != "pointwise":  # a pointwise loss's default is implied
            parts.append(f"scope={self.scope!r}")
        parts.append(f"reduction={self.reduction!r}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        if not self.deterministic:
            parts.append("deterministic=False")
        return ", ".join(parts)


# pointwise ----------------------------------------------------------------------------------
class BinaryCrossEntropyLoss(FusedLoss):
    loss_name = "bce"


class WeightedBCELoss(FusedLoss):
    loss_name = "weighted_bce"


class BalancedBCELoss(FusedLoss):
    loss_name = "balanced_bce"


class AdaptiveWCELoss(FusedLoss):
    loss_name = "adaptive_wce"


class FocalLoss(FusedLoss):
    loss_name = "focal"


class AsymmetricFocalLoss(FusedLoss):
    loss_name = "asymmetric_focal"


class AsymmetricMarginLoss(FusedLoss):
    loss_name = "asymmetric_margin"


class AsymmetricFocalMarginLoss(FusedLoss):
    loss_name = "asymmetric_focal_margin"


class FocalMarginLoss(FusedLoss):
    loss_name = "focal_margin"


class ELCrossEntropyLoss(FusedLoss):
    loss_name = "el_ce"


class DIBEDisLoss(FusedLoss):
    loss_name = "dibe_dis"


# region -------------------------------------------------------------------------------------
class DiceLoss(FusedLoss):
    loss_name = "dice"


class SquaredDiceLoss(FusedLoss):
    loss_name = "squared_dice"


class JaccardLoss(FusedLoss):
    loss_name = "jaccard"


class TverskyLoss(FusedLoss):
    loss_name = "tversky"


class FocalTverskyLoss(FusedLoss):
    loss_name = "focal_tversky"


class DIBERegLoss(FusedLoss):
    loss_name = "dibe_reg"


class LogCoshDiceLoss(FusedLoss):
    loss_name = "log_cosh_dice"


class SensitivitySpecificityLoss(FusedLoss):
    loss_name = "sensitivity_specificity"


# compound -----------------------------------------------------------------------------------
class BCEDiceLoss(FusedLoss):
    loss_name = "bce_dice"


class ComboLoss(FusedLoss):
    loss_name = "combo"


class ExpLogLoss(FusedLoss):
    loss_name = "exp_log"


class HybridFocalLoss(FusedLoss):
    loss_name = "hybrid_focal"


class UnifiedFocalLoss(FusedLoss):
    loss_name = "unified_focal"


class HybridFocalMarginLoss(FusedLoss):
    loss_name = "hybrid_focal_margin"


class DIBELoss(FusedLoss):
    loss_name = "dibe"


class HolisticLoss(FusedLoss):
    loss_name = "holistic"


# distance (called as loss(input, target, ignore=None, weight=None, distance=None)) ------------
class DistanceLoss(FusedLoss):
    loss_name = "distance_loss"


class HausdorffDTLoss(FusedLoss):
    loss_name = "hausdorff_dt"


class DistanceMapCELoss(FusedLoss):
    loss_name = "distance_map_ce"


class ShapeAwareLoss(FusedLoss):
    loss_name = "shape_aware"


class HybridFocalMarginDistanceLoss(FusedLoss):
    loss_name = "hybrid_focal_margin_distance"


# weighted sums ------------------------------------------------------------------------------
class _Pass:
    """One fused pass of a :class:`CombinedLoss`: the plan of its terms and the shared settings."""

    def __init__(self, members: list[tuple[int, combine.Term]], loss: FusedLoss):
        self.indices = tuple(i for i, _ in members)
        self.plan = combine.fused_plan([term for _, term in members])
        self.from_logits, self.backend, self.deterministic = loss.from_logits, loss.backend, loss.deterministic
        self.scope = combine.GLOBAL if loss.scope == combine.GLOBAL else "image"  # each term re-scopes its view
        self.process_group = loss.process_group


class CombinedLoss(_RebuiltOnLoad, _Arithmetic, nn.Module):
    """A weighted sum ``sum_i w_i L_i`` of fastseg losses, in as few fused passes as the terms allow.

    Built from ``(weight, loss)`` pairs (a bare loss has weight 1), or by arithmetic on the loss
    modules::

        criterion = 0.5 * FocalLoss(gamma=2.0) + DiceLoss() + 0.1 * DistanceLoss()
        criterion = CombinedLoss([(0.5, FocalLoss(gamma=2.0)), DiceLoss()])   # the same
        criterion.passes        # ((0, 1, 2),): one forward and one backward pass for all three

    The value is exactly ``sum_i w_i * L_i(input, target, ignore=ignore, weight=weight)``, each
    term with its own parameters, scope and reduction (``"mean"`` or ``"sum"``: the terms must be
    scalars). Terms share a pass (the union of their per-pixel quantities summed in one read of
    ``input`` and ``target``, the gradient written once) when their settings agree
    (``from_logits``, ``backend``, ``deterministic``, and for ``scope="global"`` the process
    group) and their plans can share one (:mod:`fastseg.engine.combine`: equal values of the
    per-pixel parameters both read, at most one distance loss per pass). Two focal terms with
    different gammas, for instance, need two passes; ``passes`` says which terms share each.

    Called as ``criterion(input, target, ignore=None, weight=None, distance=None)``;
    ``distance`` (a precomputed target map, see the distance losses) is accepted when exactly one
    term reads distance maps. ``weight`` goes to the terms that read it (``reads_weight``: the
    pointwise terms, a compound's pointwise part, the distance-weighted terms); the other terms
    take their unweighted value, and a ``weight`` that no term reads raises ``ValueError``. A
    term's settings changed after construction (``criterion.losses[0].reduction = "sum"``) are
    checked and regroup the passes at the next call; its parameters are fixed. ``*`` scales every
    weight, ``-x`` and ``/ d`` scale them by -1 and 1/d, ``+`` appends terms, ``a - b`` is ``a + (-1) * b``, and ``sum(losses)``
    works.
    """

    _derived = "_passes"

    def __init__(self, terms):
        super().__init__()
        weights, losses = [], []
        for i, item in enumerate(terms):
            weight, loss = item if isinstance(item, tuple) and len(item) == 2 else (1.0, item)
            if isinstance(loss, CombinedLoss):
                weight = check_number(f"weight of term {i}", weight)
                weights += [weight * w for w in loss.weights]
                losses += list(loss.losses)
                continue
            if not isinstance(loss, FusedLoss) or not hasattr(loss, "loss_name"):
                raise TypeError(f"terms[{i}] must be a fastseg loss module (a FusedLoss such as DiceLoss()) or a "
                                f"(weight, loss) pair; got {type_name(loss)}")
            weights.append(check_number(f"weight of term {i}", weight))
            losses.append(loss)
        if not losses:
            raise ValueError("terms must hold at least one loss")
        self.weights = tuple(weights)
        self.losses = nn.ModuleList(losses)
        self._passes = self._derive()

    def _term_settings(self) -> tuple:
        """What the passes were derived from besides the (fixed) parameters: each term's settings."""
        return tuple((loss.from_logits, loss.backend, loss.deterministic, loss.scope, loss.reduction,
                      id(loss.process_group)) for loss in self.losses)

    def _derive(self) -> list[_Pass]:
        """The fused passes: terms that can share one are grouped."""
        for i, loss in enumerate(self.losses):
            F.check_scope_and_reduction(loss.loss_name, loss.scope, loss.reduction)
            if loss.reduction not in ("mean", "sum"):
                raise ValueError(f"terms[{i}] ({type(loss).__name__}) has reduction={loss.reduction!r}; a CombinedLoss "
                                 f"adds scalar losses, so each term's reduction must be 'mean' or 'sum'")
        self._derived_from = self._term_settings()
        by_settings: dict[tuple, list[tuple[int, combine.Term]]] = {}
        for i, (w, loss) in enumerate(zip(self.weights, self.losses)):
            is_global = loss.scope == combine.GLOBAL
            key = (loss.from_logits, loss.backend, loss.deterministic, is_global,
                   id(loss.process_group) if is_global else None)
            by_settings.setdefault(key, []).append((i, combine.Term(w, loss._plan, loss.scope, loss.reduction)))
        passes = []
        for members in by_settings.values():
            index = {id(term): i for i, term in members}
            for group in combine.group_terms([term for _, term in members]):
                first = self.losses[index[id(group[0])]]
                passes.append(_Pass([(index[id(term)], term) for term in group], first))
        return passes

    @property
    def reads_weight(self) -> bool:
        """Whether ``weight=`` enters the sum: some term reads it (see :attr:`FusedLoss.reads_weight`)."""
        return any(loss.reads_weight for loss in self.losses)

    @property
    def passes(self) -> tuple[tuple[int, ...], ...]:
        """The indices of the terms (in ``losses``) that each fused pass evaluates."""
        return tuple(p.indices for p in self._passes)

    def forward(self, input: Tensor, target: Tensor, ignore=None, weight: Tensor | None = None,
                distance: Tensor | None = None) -> Tensor:
        if distance is not None:
            readers = [i for i, loss in enumerate(self.losses) if loss._plan.maps is not None]
            if not readers:
                raise TypeError("no term of this CombinedLoss reads a distance map; distance must be None")
            if len(readers) > 1:
                raise ValueError(f"distance is ambiguous: terms {readers} each read their own distance map; pass "
                                 f"distance=None (each computes its map) or call those losses separately")
        if not self.reads_weight:
            check_no_weight(weight, "this CombinedLoss (none of its terms)")
        if self._term_settings() != self._derived_from:  # a term's setting was changed after construction
            self._passes = self._derive()
        total = None
        for p in self._passes:
            value = F.run_plan(p.plan, input, target, from_logits=p.from_logits, scope=p.scope, reduction="mean",
                               ignore=ignore, weight=weight, backend=p.backend, deterministic=p.deterministic,
                               process_group=p.process_group, distance=distance if p.plan.maps is not None else None)
            total = value if total is None else total + value
        return total

    # arithmetic (see _Arithmetic) -------------------------------------------------------------
    def __add__(self, other) -> CombinedLoss:
        if not isinstance(other, FusedLoss | CombinedLoss):
            raise TypeError(f"a fastseg loss can be added to fastseg losses only; got {type_name(other)}")
        return CombinedLoss([self, other])

    def __radd__(self, other) -> CombinedLoss:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:  # sum() starts from 0
            return self
        return self.__add__(other)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, passes={self.passes}"


# building from a configuration ---------------------------------------------------------------
def _classes_by_name() -> dict[str, type[FusedLoss]]:
    """Every loss class by its functional name (``"dice"``) and by its class name (``"DiceLoss"``)."""
    classes = [cls for cls in map(globals().get, __all__) if isinstance(cls, type) and hasattr(cls, "loss_name")]
    return {**{cls.loss_name: cls for cls in classes}, **{cls.__name__: cls for cls in classes}}


def _term_from_text(text: str, where: str) -> tuple[float, FusedLoss]:
    """``"0.5*focal"`` or ``"focal"`` -> ``(0.5, FocalLoss())``."""
    weight, _, name = text.strip().rpartition("*")
    try:
        w = float(weight) if weight.strip() else 1.0
    except ValueError:
        raise ValueError(f"{where} must be [weight*]name, e.g. '0.5*focal'; got {text.strip()!r}") from None
    return w, _loss_from_name(name.strip(), {}, where)


def _loss_from_name(name: str, params: dict, where: str) -> FusedLoss:
    classes = _classes_by_name()
    if not name:
        raise ValueError(f"{where} names no loss (an empty term)")
    if name not in classes:
        names = ", ".join(cls.loss_name for cls in dict.fromkeys(classes.values()))
        raise ValueError(f"{where}: unknown loss {name!r}; one of {names} (or their class names, e.g. DiceLoss)")
    return classes[name](**params)


def _term_from_mapping(config, where: str) -> tuple[float, FusedLoss]:
    """``{"name": "focal", "weight": 0.5, "gamma": 2.0}`` -> ``(0.5, FocalLoss(gamma=2.0))``."""
    params = dict(config)
    if "name" not in params:
        raise ValueError(f"{where} needs a 'name' key (the loss); got keys {sorted(params)}")
    name = params.pop("name")
    weight = check_number(f"{where}['weight']", params.pop("weight", 1.0))
    if not isinstance(name, str):
        raise TypeError(f"{where}['name'] must be a str; got {type_name(name)}")
    return weight, _loss_from_name(name, params, where)


def build(config) -> FusedLoss | CombinedLoss:
    """A loss module from a configuration (a command line, YAML, Hydra): every loss of this module
    by its functional name (``"hybrid_focal_margin"``) or its class name (``"HybridFocalMarginLoss"``).

    - ``"dice"``: ``DiceLoss()``;
    - ``"0.5*focal + dice"``: ``0.5 * FocalLoss() + DiceLoss()`` (each term with its defaults);
    - ``{"name": "focal", "gamma": 3.0, "scope": "batch"}``: ``FocalLoss(gamma=3.0, scope="batch")``,
      the other keys being the class's keyword arguments; a ``"weight"`` key is the term's weight
      in a sum (``{"name": "dice", "weight": 0.5}`` alone is ``0.5 * DiceLoss()``);
    - a list of names, sums and mappings: their sum, a :class:`CombinedLoss` (fused passes shared
      as usual), e.g. ``[{"name": "hybrid_focal_margin", "m": 1.0}, {"name": "distance_loss",
      "weight": 0.5}]``.

    A single loss of weight 1 is returned as its module, anything else as a :class:`CombinedLoss`.
    Unknown names raise ``ValueError`` listing the names; unknown parameters, the class's
    ``TypeError`` listing the accepted ones.
    """
    if isinstance(config, str):
        parts = re.split(r"(?<![0-9.][eE])\+", config)  # a sum, but not the exponent of a weight: 1e+1*dice
        terms = [_term_from_text(part, "config" if len(parts) == 1 else f"term {i} of {config!r}")
                 for i, part in enumerate(parts)]
    elif isinstance(config, Mapping):
        terms = [_term_from_mapping(config, "config")]
    elif isinstance(config, Sequence) and not isinstance(config, bytes):
        if not config:
            raise ValueError("config is an empty list; give at least one loss")
        terms = []
        for i, item in enumerate(config):
            built = build(item) if isinstance(item, str | Mapping) else None
            if built is None:
                raise TypeError(f"config[{i}] must be a str or a mapping; got {type_name(item)}")
            terms.append((1.0, built))
    else:
        raise TypeError(f"config must be a loss name, a sum such as '0.5*focal + dice', a mapping with a 'name' "
                        f"key or a list of those; got {type_name(config)}")
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return CombinedLoss(terms)
