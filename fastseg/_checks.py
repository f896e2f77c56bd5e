"""Argument checking shared by every public entry point (reference, fused, modules, metrics).

This is the only code the reference and the fused path share: what counts as a valid call.
Every error names the argument and says what was expected.

Conventions fixed here (see README "Conventions"):

- ``input``: floating tensor ``[B, C, *spatial]`` with 1 to 3 spatial dims; logits by default,
  probabilities in [0, 1] with ``from_logits=False``.
- ``target``: bool, integer or floating tensor of the same shape, or ``[B, *spatial]`` when
  C = 1; values in [0, 1] (soft labels allowed) except where ignored by ``ignore_index``.
- ``ignore``: ``None``; a bool/integer tensor of the target's shape (or broadcastable to the
  input's shape), nonzero = ignored pixel; or a number, the ``ignore_index`` value in the target.
- ``weight``: ``None`` or a non-negative floating tensor broadcastable to the input's shape; it
  scales the pointwise terms only.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor

#: Statistics scopes: per image and channel, per channel over the batch, or per channel over the
#: batches of every rank of a torch.distributed group (fastseg.distributed; "batch" on one process).
#: Pointwise losses take "batch" or "global" (their mean is over the valid pixels of the batch).
SCOPES = ("image", "batch", "global")
REDUCTIONS = ("mean", "sum", "none")


def type_name(value) -> str:
    """The type of ``value`` for an error message: ``float`` for builtins, else qualified
    (``numpy.bool``, not a bare ``bool`` that reads as Python's own)."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float after checking it is a finite real number in the given range.

    ``low_open``/``high_open`` make the bound exclusive. Raises ``TypeError`` for non-numbers
    (bools included) and ``ValueError`` for out-of-range or non-finite values.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number; got {type_name(value)}")
    value = float(value)
    if not (value - value == 0):  # finite (inf - inf and NaN - NaN are NaN); traceable on SymFloats
        raise ValueError(f"{name} must be finite; got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}; got {value}")
    return value


def capturing_cuda_graph(x) -> bool:
    """Whether ``x`` is a CUDA tensor of a stream being captured into a CUDA graph: value checks
    read data back to the host, which a capture forbids, so they are skipped then."""
    return isinstance(x, Tensor) and x.is_cuda and torch.cuda.is_current_stream_capturing()


_FALSE = ("0", "false", "no", "off")
_TRUE = ("1", "true", "yes", "on")


def env_flag(name: str, default: bool) -> bool:
    """The environment variable ``name`` as a bool: ``0``/``false``/``no``/``off`` or
    ``1``/``true``/``yes``/``on`` (any case, surrounding spaces ignored); ``default`` when it is
    unset or empty, and, with a warning naming the variable, when it is anything else."""
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    if value:
        warnings.warn(f"{name}={raw!r} is not understood (use 0/false/no/off or 1/true/yes/on); "
                      f"using the default ({default})", RuntimeWarning, stacklevel=2)
    return default


_value_checks = env_flag("FASTSEG_VALUE_CHECKS", True)


def set_value_checks(enabled: bool) -> bool:
    """Turn the fused losses' checks of input *values* on or off; returns the previous setting.

    The checks (targets in [0, 1], probabilities in [0, 1] with ``from_logits=False``,
    non-negative weights, finite non-negative distance maps) read the data, so on CUDA each loss
    call waits for the GPU to catch up (a host synchronisation, which also stops the host from
    queuing the next kernels ahead). They are on by default; ``FASTSEG_VALUE_CHECKS=0`` (or
    ``false``, ``no``, ``off``) in the environment turns them off at import (see :func:`env_flag`).
    Off, a bad value gives a wrong loss instead of a ``ValueError``: turn them off once the data
    pipeline is known to be right. Shape, dtype and device checks always run; torch.compile and
    CUDA-graph capture skip the value checks anyway. The reference losses always check.
    """
    global _value_checks
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool; got {type_name(enabled)}")
    previous, _value_checks = _value_checks, enabled
    return previous


def value_checks_apply(x) -> bool:
    """Whether a fused loss call on ``x`` checks input values now (see :func:`set_value_checks`)."""
    return _value_checks and not torch.compiler.is_compiling() and not capturing_cuda_graph(x)


def _outside_unit_interval(x: Tensor, *, nan_counts: bool = False) -> bool:
    """Whether a value of ``x`` lies outside [0, 1]: one pass, one read-back. NaN counts only with
    ``nan_counts``: a NaN in the data (a target) is an error, a NaN the network computed (an input
    overflow) propagates to the loss, where AMP's GradScaler skips the step."""
    if x.dtype == torch.uint8:
        return bool(x.amax() > 1)
    low, high = torch.aminmax(x)  # NaN propagates to both
    if nan_counts:
        return not bool((low >= 0) & (high <= 1))
    return bool((low < 0) | (high > 1))


def check_probability(name: str, value, *, open_low: bool = False, open_high: bool = False) -> float:
    """A number in [0, 1] (bounds optionally exclusive)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=open_low, high_open=open_high)


def check_scope_reduction(scope: str, reduction: str, *, allow_none: bool = True) -> None:
    check_choice("scope", scope, SCOPES)
    check_choice("reduction", reduction, REDUCTIONS if allow_none else REDUCTIONS[:2])


@dataclass(frozen=True)
class CheckedInputs:
    """The validated, shape-normalised arguments of a loss call.

    ``target`` has the input's shape and is floating (the input's compute dtype), with ignored
    pixels set to 0. ``valid`` is a bool tensor of the input's shape, or ``None`` when every pixel
    counts. ``weight`` is broadcast to the input's shape, or ``None``.
    """

    input: Tensor
    target: Tensor
    valid: Tensor | None
    weight: Tensor | None
    from_logits: bool = True  # whether ``input`` holds logits (else probabilities)


def compute_dtype(input: Tensor) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


class ShapeWarning(UserWarning):
    """A shape fastseg accepts but that is most likely a mistake: a 3-D ``[B, C, L]`` tensor with
    C > 1 (C channels of 1-D signals), which is what a ``[B, H, W]`` batch of images reads as.
    Silence it, for genuine 1-D signals, with
    ``warnings.filterwarnings("ignore", category=fastseg.ShapeWarning)``."""


def warn_if_images_without_channel(tensor: Tensor, name: str, consequence: str = "its own region statistics") -> None:
    """Warn (:class:`ShapeWarning`) when a 3-D tensor with C > 1 is read as ``[B, C, L]``: a batch
    of ``[B, H, W]`` images would silently give each row ``consequence``. The warning points at the
    first caller outside fastseg, so Python's default filter shows it once per line of user code.
    Not under ``torch.compile``, whose ``fullgraph=True`` cannot trace ``warnings.warn``."""
    if tensor.ndim == 3 and tensor.shape[1] > 1 and not torch.compiler.is_compiling():
        warnings.warn(
            f"{name} of shape {tuple(tensor.shape)} is read as [B, C, L] ({tensor.shape[1]} channels of "
            f"1-D signals), which gives each row {consequence}; for a batch of [B, H, W] images pass "
            f"{name}.unsqueeze(1) (for genuine 1-D signals: "
            "warnings.filterwarnings('ignore', category=fastseg.ShapeWarning))",
            ShapeWarning,
            stacklevel=_first_level_outside_package(),
        )


_LIBRARY_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (sys.modules[__package__], torch))


def _first_level_outside_package() -> int:
    """The ``stacklevel`` of :func:`warn_if_images_without_channel`'s first caller outside fastseg
    and torch (``nn.Module.__call__``)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def check_input_tensor(input, *, name: str = "input") -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type_name(input)}")
    if not input.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (logits or probabilities); got dtype {input.dtype}")
    if input.ndim not in (3, 4, 5):
        raise ValueError(
            f"{name} must have shape [B, C, *spatial] with 1 to 3 spatial dims; got shape {tuple(input.shape)}"
        )
    if input.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(input.shape)}); a loss needs at least one pixel")
    return input


def _as_input_shape(tensor: Tensor, input: Tensor, name: str, input_name: str = "input") -> Tensor:
    """Accept the input's shape, or ``[B, *spatial]`` when C = 1; return the input's shape."""
    if tensor.shape == input.shape:
        return tensor
    if input.shape[1] == 1 and tensor.shape == input.shape[:1] + input.shape[2:]:
        return tensor.unsqueeze(1)
    raise ValueError(
        f"{name} must have the shape of {input_name} {tuple(input.shape)}"
        + (f" or {tuple(input.shape[:1] + input.shape[2:])}" if input.shape[1] == 1 else "")
        + f"; got {tuple(tensor.shape)}"
    )


def _check_floating_map(name: str, tensor, input: Tensor, input_name: str = "input") -> None:
    """A per-pixel map argument (``weight``, ``distance``): a floating tensor on the input's device."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be None or a floating tensor; got {type_name(tensor)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got dtype {tensor.dtype}")
    if tensor.device != input.device:
        raise ValueError(f"{name} is on {tensor.device} but {input_name} is on {input.device}")


def check_distance_map(distance, input: Tensor, dtype: torch.dtype, *, check_values: bool = True) -> Tensor | None:
    """A precomputed distance map (a distance loss's ``distance=``) in ``input``'s shape and
    ``dtype``, detached (distance maps carry no gradient); ``None`` passes. ``check_values``:
    finite and non-negative, one pass and one read-back (skipped while torch.compile traces)."""
    if distance is None:
        return None
    _check_floating_map("distance", distance, input)
    distance = _as_input_shape(distance, input, "distance")
    if check_values and not torch.compiler.is_compiling() and distance.numel():
        low, high = torch.aminmax(distance)  # NaN, inf and negatives in one pass
        if not bool((low >= 0) & torch.isfinite(high)):
            raise ValueError("distance must be finite and non-negative")
    return distance.detach().to(dtype)


def check_no_weight(weight, loss: str = "a region loss") -> None:
    """``ValueError`` unless ``weight`` is None: per-pixel weights scale pointwise (cross-entropy)
    terms only, and a loss without one must not take a weight it would silently leave unused."""
    if weight is not None:
        raise ValueError(
            f"weight must be None for {loss}: it has no pointwise term to weight "
            "(per-pixel weights scale cross-entropy terms, never confusion sums)"
        )


def check_no_gradient_expected(name: str, tensor) -> None:
    """``ValueError`` if ``tensor`` (a target or weight of a fused loss) requires grad while grad mode
    is on: the fused passes differentiate with respect to the input only, and a gradient the caller
    asked for must not be dropped silently. :mod:`fastseg.reference` differentiates all of them."""
    if isinstance(tensor, Tensor) and tensor.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name} requires grad, but the fused losses differentiate with respect to input only "
            f"(its gradient would be dropped); pass {name}.detach(), or use fastseg.reference for a "
            f"gradient with respect to {name}"
        )


def check_loss_inputs(
    input,
    target,
    *,
    from_logits: bool = True,
    ignore=None,
    weight=None,
    check_values: bool = True,
    convert_target: bool = True,
    name: str = "input",
    target_name: str = "target",
    zero_ignored: bool = False,
) -> CheckedInputs:
    """Validate a loss call's tensors and bring them to one shape.

    ``check_values`` runs the value checks (targets in [0, 1], probabilities in [0, 1],
    non-negative weights); they read the data, so a CUDA-graph-capturable caller may turn them off,
    and they are skipped while torch.compile traces (a data-dependent branch would break the graph).
    ``convert_target=False`` (the fused path) returns the target in its own dtype, bool, uint8 or
    floating (other integer dtypes become uint8), with ignored pixels left as they are: ``valid``
    says which pixels count, and the values of the valid ones are checked. ``name`` and
    ``target_name`` are what the errors call the two tensors (the metrics' ``pred``, ``targets``).
    ``zero_ignored`` (the reference) returns ``input`` with ignored pixels set to 0: whatever they
    hold (inf or NaN padding) then reaches neither the value nor, through autograd, the gradient.
    """
    input = check_input_tensor(input, name=name)
    warn_if_images_without_channel(input, name)
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool; got {type_name(from_logits)}")
    if not isinstance(target, Tensor):
        raise TypeError(f"{target_name} must be a torch.Tensor; got {type_name(target)}")
    if target.is_complex():
        raise TypeError(f"{target_name} must be bool, integer or floating; got dtype {target.dtype}")
    if target.device != input.device:
        raise ValueError(f"{target_name} is on {target.device} but {name} is on {input.device}")
    target = _as_input_shape(target, input, target_name, name)

    valid = None
    if ignore is not None:
        if isinstance(ignore, Tensor):
            if ignore.is_floating_point() or ignore.is_complex():
                raise TypeError(f"ignore must be a bool or integer mask tensor (nonzero = ignored); got dtype {ignore.dtype}")
            if ignore.ndim == 0:  # ignore=torch.tensor(255) reads as a mask broadcast over every pixel
                raise ValueError(
                    "ignore is a 0-d tensor: pass a mask of the target's shape, or the ignore_index as a "
                    f"number (ignore={ignore.item()!r}, or ignore.item())"
                )
            if ignore.device != input.device:
                raise ValueError(f"ignore is on {ignore.device} but input is on {input.device}")
            try:
                if ignore.ndim == input.ndim - 1:
                    ignore = _as_input_shape(ignore, input, "ignore", name)
                ignored = torch.broadcast_to(ignore, input.shape)
            except RuntimeError:
                raise ValueError(
                    f"ignore must be broadcastable to the shape of {name} {tuple(input.shape)}; got {tuple(ignore.shape)}"
                ) from None
            valid = ~ignored.bool()
        elif isinstance(ignore, Real) and not isinstance(ignore, bool):
            valid = target != ignore
        else:
            raise TypeError(
                f"ignore must be None, a mask tensor or a number (the ignore_index value in target); got {type_name(ignore)}"
            )

    dtype = compute_dtype(input)
    target_f = target.to(dtype) if convert_target else target
    if convert_target and valid is not None:
        target_f = torch.where(valid, target_f, torch.zeros((), dtype=dtype, device=input.device))

    if weight is not None:
        _check_floating_map("weight", weight, input, name)
        if weight.ndim == input.ndim - 1 and input.shape[1] == 1:
            weight = _as_input_shape(weight, input, "weight", name)
        try:
            weight = torch.broadcast_to(weight, input.shape)
        except RuntimeError:
            raise ValueError(
                f"weight must be broadcastable to the shape of {name} {tuple(input.shape)}; got {tuple(weight.shape)}"
            ) from None

    if check_values and not torch.compiler.is_compiling():  # reading data would break a compiled graph
        if target_f.dtype == torch.bool:
            outside = False
        elif valid is None or convert_target:  # ignored pixels hold 0 when converted
            outside = _outside_unit_interval(target_f, nan_counts=True)
        else:
            outside = bool((~((target_f >= 0) & (target_f <= 1)) & valid).any())
        if outside:
            hint = " (pass ignore=<value> to mark an ignore_index)" if not target.is_floating_point() else ""
            raise ValueError(f"{target_name} values must lie in [0, 1] (NaN is no label){hint}")
        if not from_logits:
            scored = input if valid is None else torch.where(valid, input, 0.5)  # ignored pixels may hold anything
            if _outside_unit_interval(scored):
                raise ValueError(
                    "input holds probabilities (from_logits=False) but has values outside [0, 1]; "
                    "pass logits with from_logits=True"
                )
        if weight is not None and not bool(((weight >= 0) & (weight < float("inf"))).all()):
            raise ValueError("weight must be non-negative and finite (no NaN or inf)")
    if not convert_target and not (target_f.dtype in (torch.bool, torch.uint8) or target_f.is_floating_point()):
        # other integer dtypes (an ignore_index of -1 or 255 in int64, say) narrow to uint8, ignored -> 0
        target_f = (target_f if valid is None else torch.where(valid, target_f, 0)).to(torch.uint8)
    if zero_ignored and valid is not None:
        input = torch.where(valid, input, torch.zeros((), dtype=input.dtype, device=input.device))
    return CheckedInputs(input=input, target=target_f, valid=valid, weight=weight, from_logits=from_logits)
