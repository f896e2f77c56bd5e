"""The per-pixel maps the fused distance losses read, computed on the input's device per call.

Each ``*_maps`` function has the signature of :attr:`fastseg.engine.plans.Plan.maps`::

    maps(checked, from_logits, distance) -> (weight, distance)

and returns the engine's per-pixel ``weight`` (the CE quantities' ``w``) and ``distance`` (the
``d`` of ``D_FP`` / ``D_SQERR``) for one call: distance maps by :func:`fastseg.edt.edt` (SciPy or
the native CPU transform for CPU tensors, the Triton kernel for CUDA tensors), per-image
normalisers as torch reductions on the device (no host synchronisation). The definitions are
those of :mod:`fastseg.reference.distance` (its docstrings cite the sources and decisions),
written again here so the reference stays an independent oracle:

- crack pixels are ``t > 0.5`` at valid pixels, the predicted mask ``p > 0.5`` at valid pixels
  (``p = sigmoid(z)`` in the compute dtype, as the reference thresholds it); ignored pixels
  belong to neither class of a boundary field or an inner boundary (``valid=``);
- seed 003's loss reads ``1 - ND`` (:func:`nearness_maps`), ND the EDT to the nearest crack over
  its per-image maximum over valid pixels, 1 on crack-free images (so ``1 - ND`` is 0 there);
- Hausdorff DT: ``w (d_t^a + d_p^a)`` with two-sided boundary fields;
- distance-map CE: ``w (1 + Phi)``, Phi the per-class inverted boundary distance;
- shape-aware: ``w (1 + E)``, E the mean distance of predicted boundary pixels to the target's.

No map carries a gradient. A precomputed target map (``distance=``) is checked for shape, dtype
and device (its values too, unless under ``torch.compile`` or a CUDA graph capture) and replaces
the EDT of the target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import CheckedInputs, check_distance_map, compute_dtype, value_checks_apply
from ..edt import boundary_field_of_mask, edt_of_mask, inner_boundary_of_mask
from .scalars import as_operand


def _spatial(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _zero(x: Tensor) -> Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


def _valid(checked: CheckedInputs) -> Tensor | None:
    return checked.valid


def _and_valid(mask: Tensor, checked: CheckedInputs) -> Tensor:
    return mask if checked.valid is None else mask & checked.valid


def crack_mask(checked: CheckedInputs) -> Tensor:
    """``t > 0.5`` at the valid pixels (bool, the input's shape); for integer targets ``t > 0``, the
    same set without converting the whole target to float first."""
    t = checked.target
    if t.dtype == torch.bool:
        crack = t
    else:
        crack = t > 0.5 if t.is_floating_point() else t > 0
    return _and_valid(crack, checked)


def predicted_mask(checked: CheckedInputs, from_logits: bool) -> Tensor:
    """``p > 0.5`` at the valid pixels, ``p`` in the compute dtype (the reference's threshold)."""
    x = checked.input.detach()
    x = x.to(compute_dtype(x))
    pred = torch.sigmoid(x) > 0.5 if from_logits else x > 0.5
    return _and_valid(pred, checked)


def user_distance(distance, checked: CheckedInputs, dtype: torch.dtype) -> Tensor | None:
    """A precomputed target map in the input's shape and ``dtype``, detached; ``None`` passes.
    Its values are checked where the fused call checks values (:func:`value_checks_apply`: not
    under ``torch.compile`` nor during a CUDA graph capture, which a read-back would break)."""
    return check_distance_map(distance, checked.input, dtype, check_values=value_checks_apply(checked.input))


def _group_max(x: Tensor, where: Tensor | None) -> Tensor:
    """Per-(image, channel) max of ``x >= 0`` over ``where`` (all pixels if None), 0 if empty."""
    if where is not None:
        x = torch.where(where, x, _zero(x))
    return x.amax(dim=_spatial(x), keepdim=True)


def _divisor(top: Tensor, zero_where: Tensor) -> Tensor:
    """Per-group divisor of a map normalised by its max ``top``: ``top`` clamped to the smallest
    normal number (as in the reference), and ``inf`` where the map must be 0 (``top == 0`` or
    ``zero_where``): the maps divided are finite, so their quotient by ``inf`` is 0."""
    return top.clamp_min(torch.finfo(top.dtype).tiny).masked_fill_((top == 0) | zero_where, math.inf)


def _times_weight(x: Tensor, checked: CheckedInputs) -> Tensor:
    return x if checked.weight is None else x * checked.weight.to(x.dtype)


# ------------------------------------------------------------------------------------ the maps


def nearness(d: Tensor, crack: Tensor, valid: Tensor | None) -> Tensor:
    """``1 - ND`` without rounding ND first: ``(top - d) / top`` per image, ``top`` the max of ``d``
    over its valid pixels; 0 on crack-free images (ND = 1), 1 where ``top`` is 0 (every valid pixel
    a crack: ND = 0, as in the reference; soft labels there still have false positives
    ``p (1 - t)`` for the map to weight)."""
    top = _group_max(d, valid)
    crack_free = ~crack.any(dim=_spatial(crack), keepdim=True)
    return torch.div(top - d, _divisor(top, crack_free)).masked_fill_((top == 0) & ~crack_free, 1.0)


def nearness_maps(checked: CheckedInputs, from_logits: bool, distance) -> tuple[Tensor | None, Tensor]:
    """``(w, 1 - ND)``: the caller's weight unchanged (a compound's pointwise term reads it) and the
    map of seed 003's loss (:func:`nearness`, :func:`fastseg.engine.plans.distance_factor`) from
    the EDT to the nearest crack (``distance``: that EDT precomputed, raw)."""
    dtype = compute_dtype(checked.input)
    crack = crack_mask(checked)
    with torch.no_grad():
        d = user_distance(distance, checked, dtype)
        if d is None:
            d = edt_of_mask(crack, to="foreground", dtype=dtype)
        return checked.weight, nearness(d, crack, _valid(checked))


def hausdorff_maps(alpha: float):
    """Maps of the Hausdorff DT loss: ``(None, w (d_t^alpha + d_p^alpha))`` (``distance`` = d_t)."""

    def maps(checked: CheckedInputs, from_logits: bool, distance) -> tuple[None, Tensor]:
        dtype = compute_dtype(checked.input)
        with torch.no_grad():
            d_t = user_distance(distance, checked, dtype)
            if alpha == 2:  # the squared fields directly (exact integers, no square root and power)
                valid = _valid(checked)
                sq_t = (boundary_field_of_mask(crack_mask(checked), dtype=dtype, squared=True, valid=valid)
                        if d_t is None else d_t * d_t)
                sq_p = boundary_field_of_mask(predicted_mask(checked, from_logits), dtype=dtype, squared=True, valid=valid)
                return None, _times_weight(sq_t.add_(sq_p), checked)
            if d_t is None:
                d_t = boundary_field_of_mask(crack_mask(checked), dtype=dtype, valid=_valid(checked))
            d_p = boundary_field_of_mask(predicted_mask(checked, from_logits), dtype=dtype, valid=_valid(checked))
            exponent = as_operand(alpha, d_t)
            return None, _times_weight(d_t**exponent + d_p**exponent, checked)

    return maps


def inverted_boundary(field: Tensor, crack: Tensor, valid: Tensor | None) -> Tensor:
    """Phi: ``(M - field) / M`` per class, ``M`` the class's max field; 0 for single-class images."""
    bg = ~crack if valid is None else ~crack & valid
    top_fg, top_bg = _group_max(field, crack), _group_max(field, bg)
    spatial = _spatial(field)
    single_class = ~(crack.any(dim=spatial, keepdim=True) & bg.any(dim=spatial, keepdim=True))
    divisor = torch.where(crack, _divisor(top_fg, single_class), _divisor(top_bg, single_class))
    return torch.where(crack, top_fg, top_bg).sub_(field).div_(divisor).clamp_(0, 1)


def distance_map_ce_maps(checked: CheckedInputs, from_logits: bool, distance) -> tuple[Tensor, None]:
    """``(w (1 + Phi), None)`` (``distance`` = the target's raw boundary field)."""
    dtype = compute_dtype(checked.input)
    crack = crack_mask(checked)
    with torch.no_grad():
        field = user_distance(distance, checked, dtype)
        if field is None:
            field = boundary_field_of_mask(crack, dtype=dtype, valid=_valid(checked))
        return _times_weight(1 + inverted_boundary(field, crack, _valid(checked)), checked), None


def shape_aware_maps(checked: CheckedInputs, from_logits: bool, distance) -> tuple[Tensor, None]:
    """``(w (1 + E), None)``, E per image (``distance`` = EDT to the target's inner boundary)."""
    dtype = compute_dtype(checked.input)
    with torch.no_grad():
        d = user_distance(distance, checked, dtype)
        if d is None:
            d = edt_of_mask(inner_boundary_of_mask(crack_mask(checked), valid=_valid(checked)), to="foreground", dtype=dtype)
        pred_boundary = inner_boundary_of_mask(predicted_mask(checked, from_logits), valid=_valid(checked))
        spatial = _spatial(d)
        count = pred_boundary.sum(dim=spatial, keepdim=True).to(dtype)
        e = torch.where(pred_boundary, d, _zero(d)).sum(dim=spatial, keepdim=True) / count.clamp_min(1)
        return _times_weight((1 + e).expand(d.shape).contiguous(), checked), None
