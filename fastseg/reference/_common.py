"""Building blocks of the reference losses: probabilities, masked means and group sums.

Plain autograd code, written for clarity, not speed. Every reference loss is built from these:

- :func:`log_probs` gives ``p``, ``log p`` and ``log(1-p)`` from logits (``logsigmoid`` forms) or
  from probabilities (logs clamped at -100 as ``torch.nn.BCELoss`` does, with a finite
  gradient at p = 0 and p = 1).
- :func:`reduce_pointwise` averages a per-pixel term over the valid pixels of the whole batch
  (``reduction="mean"``), sums it, or returns it per pixel (``"none"``, ignored pixels 0).
- :func:`group_sum` sums a per-pixel quantity over a reduction group: per image and channel
  (``scope="image"``, shape ``[B, C]``) or per channel over the batch (``"batch"``, ``[C]``;
  ``"global"`` is the same on a single process).
- :func:`reduce_groups` averages or sums per-group region losses (optionally over the groups
  :func:`group_present` marks as holding a valid pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import CheckedInputs, compute_dtype

LOG_CLAMP = -100.0


def as_compute(x: Tensor) -> Tensor:
    """The input in its compute dtype (float64 stays, everything else becomes float32)."""
    return x.to(compute_dtype(x))


def log_probs(x: Tensor, from_logits: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(p, log p, log(1-p))`` for logits or probabilities ``x``."""
    x = as_compute(x)
    if from_logits:
        return torch.sigmoid(x), F.logsigmoid(x), F.logsigmoid(-x)
    return x, _clamped_log(x), _clamped_log1m(x)


def _clamped_log(x: Tensor) -> Tensor:
    """``log x`` clamped at -100 as ``torch.nn.BCELoss`` does, so ``log 0 = -100`` in every dtype;
    a positive ``x`` below the smallest normal float is read as that float (float32: -87.3), which
    keeps the gradient finite. NaN stays NaN (a NaN probability gives a NaN loss, as a NaN logit does)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(x <= 0, LOG_CLAMP, torch.log(x.clamp_min(tiny))).clamp_min(LOG_CLAMP)


def _clamped_log1m(x: Tensor) -> Tensor:
    """``log(1 - x)`` as ``log1p(-x)``, which keeps a small ``x`` that ``1 - x`` rounds away (below
    2^-53 in float64, 2^-24 in float32: ``(-log(1 - p))^0.25`` of p = 1e-17 is 8e-5, not 0), with
    ``log 0 = -100`` at x = 1 as :func:`_clamped_log` (the inner ``where`` keeps that pixel's
    gradient finite); NaN stays NaN."""
    at_one = x >= 1
    return torch.where(at_one, LOG_CLAMP, torch.log1p(-torch.where(at_one, 0.0, x))).clamp_min(LOG_CLAMP)


def logits_of(x: Tensor, from_logits: bool) -> Tensor:
    """The logit ``z`` of ``x``; probabilities are mapped by ``log p - log(1-p)`` (clamped logs)."""
    if from_logits:
        return as_compute(x)
    _, log_p, log_1mp = log_probs(x, from_logits=False)
    return log_p - log_1mp


def pow_base(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for base >= 0 with ``0 ** 0 = 1`` and a finite gradient at 0."""
    if exponent == 0:
        return torch.ones_like(base)
    return base.clamp_min(0) ** exponent


def masked(x: Tensor, checked: CheckedInputs) -> Tensor:
    """``x`` with ignored pixels set to 0 (gradient 0 there too)."""
    if checked.valid is None:
        return x
    return torch.where(checked.valid, x, torch.zeros((), dtype=x.dtype, device=x.device))


def valid_count(checked: CheckedInputs, dtype: torch.dtype) -> Tensor:
    if checked.valid is None:
        return torch.tensor(float(checked.input.numel()), dtype=dtype, device=checked.input.device)
    return checked.valid.sum().to(dtype)


def reduce_pointwise(per_pixel: Tensor, checked: CheckedInputs, reduction: str) -> Tensor:
    """Reduce a per-pixel loss: weight it, drop ignored pixels, then mean/sum/none.

    ``mean`` divides by the number of valid pixels in the batch (not by the sum of weights, as
    ``torch.nn.functional.binary_cross_entropy`` does); a batch with no valid pixel gives 0.
    """
    if checked.weight is not None:
        per_pixel = per_pixel * checked.weight.to(per_pixel.dtype)
    per_pixel = masked(per_pixel, checked)
    if reduction == "none":
        return per_pixel
    total = per_pixel.sum()
    if reduction == "sum":
        return total
    return total / valid_count(checked, per_pixel.dtype).clamp_min(1)


def group_sum(x: Tensor, checked: CheckedInputs, scope: str) -> Tensor:
    """Sum ``x`` over the valid pixels of each group: ``[B, C]`` for "image", ``[C]`` for "batch".

    ``"global"`` (statistics over every rank, :mod:`fastseg.distributed`) is "batch" here: the
    reference is a single-process oracle and never communicates, so with a process group of more
    than one rank it raises instead of silently computing per-rank statistics.
    """
    if scope == "global" and _multi_rank():
        raise ValueError(
            "scope='global' in fastseg.reference is the single-process batch scope; under a torch.distributed "
            "process group of several ranks use the fused losses (fastseg.functional / fastseg.losses), which "
            "all-reduce the statistics"
        )
    x = masked(x, checked)
    spatial = tuple(range(2, x.ndim))
    per_image = x.sum(dim=spatial) if spatial else x
    return per_image if scope == "image" else per_image.sum(dim=0)


def _multi_rank() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def reduce_groups(per_group: Tensor, reduction: str, present: Tensor | None = None) -> Tensor:
    """Average (``mean``), add (``sum``) or return (``none``) per-group region losses.

    ``present`` (optional, bool, the shape of ``per_group``; see :func:`group_present`) marks the
    groups holding at least one valid pixel: the others are set to 0 and left out of the mean (a
    fully ignored image counts nowhere); with no group present the mean is 0.
    """
    if present is not None:
        per_group = torch.where(present, per_group, torch.zeros((), dtype=per_group.dtype, device=per_group.device))
    if reduction == "none":
        return per_group
    if reduction == "sum":
        return per_group.sum()
    if present is None:
        return per_group.mean()
    return per_group.sum() / present.sum().clamp_min(1).to(per_group.dtype)


def group_present(checked: CheckedInputs, scope: str) -> Tensor | None:
    """Bool per group (``[B, C]`` or ``[C]``): does it hold a valid pixel? ``None`` when all do."""
    if checked.valid is None:
        return None
    spatial = tuple(range(2, checked.valid.ndim))
    per_image = checked.valid.any(dim=spatial) if spatial else checked.valid
    return per_image if scope == "image" else per_image.any(dim=0)


def complement(checked: CheckedInputs) -> Tensor:
    """``1 - p`` of the call's input: ``sigmoid(-z)`` for logits, which keeps the digits that
    ``1 - sigmoid(z)`` loses on confident pixels (all of them from z = 17 on in float32). Its
    autograd derivative ``q (1 - q)`` is exact while q is the small one; where q rounds to 1
    (z < -37 in float64) it is 0 instead of ``e^z``, as ``sigmoid(z)``'s is for z > 37. (A
    ``torch.where`` between the two forms would keep those gradients below 1e-16, but it doubled the
    eager reference's time: torch's CPU ``where`` is unvectorised.)"""
    x = as_compute(checked.input)
    return torch.sigmoid(-x) if checked.from_logits else 1 - x


def prediction_error(p: Tensor, checked: CheckedInputs) -> Tensor:
    """``p - t`` as ``p (1 - t) - (1 - p) t``: on a crack pixel ``-(1 - p)`` (:func:`complement`)
    keeps the digits of a confident prediction's small miss that ``p - 1`` loses, on a background
    pixel it is ``p``, and for soft labels the same difference."""
    t = checked.target
    return p * (1 - t) - complement(checked) * t


def soft_confusion(p: Tensor, checked: CheckedInputs, scope: str) -> tuple[Tensor, Tensor, Tensor]:
    """Soft ``(TP, FP, FN)`` per group: ``sum p t``, ``sum p (1-t)``, ``sum (1-p) t`` (``p`` the
    probabilities of ``checked.input``; ``1 - p`` by :func:`complement`)."""
    t = checked.target
    return (
        group_sum(p * t, checked, scope),
        group_sum(p * (1 - t), checked, scope),
        group_sum(complement(checked) * t, checked, scope),
    )
