"""``nn.Module`` losses: one class per loss of :mod:`fastseg.functional`, with the catalog's defaults.

Each class takes the loss's parameters (the keyword arguments of its functional form, same names
and defaults) plus ``from_logits``, ``scope`` (default ``"image"``; pointwise losses: ``"batch"``,
the default, or ``"global"``), ``reduction``, ``backend``, ``deterministic`` and, for
``scope="global"``, ``process_group`` (the ``torch.distributed`` group whose ranks' statistics
are summed, default the default group; see :mod:`fastseg.distributed`) at construction,
validates them all there (the same rules and errors as the functional form), and is then called
as ``loss(input, target, ignore=None, weight=None)``. The parameters are fixed at construction
(the fused plan is built once): make a new module to change them. ``repr`` lists every
parameter (a pointwise loss's scope only when it is not the default ``"batch"``)::

    >>> HybridFocalMarginLoss(m=1.0)
    HybridFocalMarginLoss(m=1.0, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None, eps=1.0, scope='image', reduction='mean')

See the functional form (``fastseg.functional.<name>``) and the reference
(``fastseg.reference.<name>``) for the formula, its source and the catalog's decisions.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

from torch import Tensor, nn

from . import functional as F
from ._checks import check_choice
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


class FusedLoss(nn.Module):
    """Base class: ``loss_name`` names the functional loss a subclass wraps."""

    loss_name: ClassVar[str]

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
        super().__init__()
        cls = type(self).__name__
        name = self.loss_name
        own = _loss_parameters(name)
        allowed = set(own) | set(_SETTINGS) | {"process_group"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(f"{cls}() got unexpected keyword argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(allowed))}")
        self.params = {n: kwargs.get(n, p.default) for n, p in own.items()}
        self._plan = getattr(F, f"{name}_plan")(**self.params)  # validates the loss parameters

        self.from_logits = kwargs.get("from_logits", True)
        if not isinstance(self.from_logits, bool):
            raise TypeError(f"from_logits must be a bool; got {type(self.from_logits).__name__}")
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
            raise TypeError(f"deterministic must be a bool; got {type(self.deterministic).__name__}")

    def forward(self, input: Tensor, target: Tensor, ignore=None, weight: Tensor | None = None,
                distance: Tensor | None = None) -> Tensor:
        """``distance``: distance losses only, the target's precomputed map (see the functional form)."""
        if distance is not None and self._plan.maps is None:
            raise TypeError(f"{type(self).__name__} reads no distance map; distance must be None")
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
