"""The hyperparameters as the Triton kernels take them: constexpr forms and a float64 array in memory.

A :class:`~fastseg.engine.spec.TermParams` value is never compiled into a kernel: the kernels read
the seven values from a float64 array (``params_ptr``) at run time, and only each value's *form*
(an exponent of 0, 1 or 2 multiplied out, a margin on or off) is a constexpr. This module builds
both without importing triton, so torch.compile traces it into the caller's graph (where the
array is computed from the hyperparameters, graph inputs, and a schedule of values is one graph).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from .._checks import type_name
from .scalars import as_operand
from .spec import TermParams, only_read

FLOAT32_MAX = float(np.finfo(np.float32).max)
NUM_PARAMS = len(TermParams.__dataclass_fields__)


def power_form(g) -> int:
    """The compile-time form of an exponent: 0, 1 and 2 are multiplied out, 3 is any other value.

    Comparisons, not a lookup: on a value that torch.compile traces symbolically they become guards
    (a later value of the same form reuses the graph) instead of pinning the value itself.
    """
    return 0 if g == 0 else 1 if g == 1 else 2 if g == 2 else 3


def _read(quantities: Sequence[int], params: TermParams) -> TermParams:
    if not isinstance(params, TermParams):
        raise TypeError(f"params must be a fastseg.engine.spec.TermParams (or KernelParams); got {type_name(params)}")
    return only_read(quantities, params)


#: The constexprs that the TermParams decide, in the order of :func:`kernel_forms`.
FORM_NAMES = ("G_FG_FORM", "HAS_MARGIN", "G_BG_FORM", "GCE_FORM", "DIBE_G_FORM", "DIBE_A1_FORM", "DIBE_B1_FORM")


def kernel_forms(quantities: Sequence[int], params: TermParams) -> dict[str, int | bool]:
    """The constexprs that the TermParams decide: which exponents are 0, 1 or 2, and whether a margin is on.

    Only the form of a value is compiled in, never the value itself (that is read from memory at
    run time, :func:`parameter_values`), so a margin schedule or an alpha search reuses one
    compiled kernel; parameters of quantities the kernel does not use are reset to their defaults first.
    """
    kept = _read(quantities, params)
    forms = (power_form(kept.g_fg), kept.m != 0, power_form(kept.g_bg), power_form(kept.gce),
             power_form(kept.dibe_g), power_form(1.0 + kept.dibe_alpha), power_form(1.0 + kept.dibe_beta))  # fmt: skip
    return forms_dict(forms)


def forms_dict(forms: Sequence[int | bool]) -> dict[str, int | bool]:
    """``{name: form}`` from the forms in :data:`FORM_NAMES` order (``HAS_MARGIN`` a bool)."""
    return {name: bool(f) if name == "HAS_MARGIN" else int(f) for name, f in zip(FORM_NAMES, forms, strict=True)}


def checked_values(quantities: Sequence[int], params: TermParams) -> list:
    """The TermParams values the kernels read, in field order (unread ones reset to their defaults).

    ``ValueError`` unless each is a finite float32 number (float32 kernels compute with them).
    """
    kept = _read(quantities, params)
    values = [getattr(kept, name) for name in TermParams.__dataclass_fields__]
    for name, value in zip(TermParams.__dataclass_fields__, values):
        if not abs(value) <= FLOAT32_MAX:
            raise ValueError(f"kernel parameters must be finite float32 numbers; got {name}={value!r}")
    return values


_VALUES_ON_DEVICE: dict[tuple, torch.Tensor] = {}
_VALUES_ON_DEVICE_MAX = 4096


def parameter_values(quantities: Sequence[int], params: TermParams, device: torch.device) -> torch.Tensor:
    """The kernels' ``params_ptr``: the values of :func:`checked_values` as a float64 tensor on ``device``.

    Under torch.compile the tensor is computed inside the traced graph from the hyperparameters
    (graph inputs from their second value on, :mod:`.scalars`), so a margin schedule runs one graph
    and a CUDA graph replays each call's values.

    CUDA tensors are cached per device, stream and values (up to 4096, never freed, so a CUDA
    graph that captured one can replay it): a training step copies nothing to the device, and never
    synchronises. The stream is part of the key because the copy is asynchronous: a kernel on
    another stream could read the tensor before the copy, enqueued on the first stream, has
    landed. Inside a stream capture a value not cached yet is written by fill kernels, which the
    graph records with their values (as it would record scalar kernel arguments).
    """
    device = torch.device(device)
    if torch.compiler.is_compiling():  # computed in the graph from its (symbolic) inputs: one graph per schedule
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return torch.stack([as_operand(v, zero) for v in checked_values(quantities, params)])
    values = tuple(float(v) for v in checked_values(quantities, params))
    if device.type != "cuda":
        return torch.tensor(values, dtype=torch.float64, device=device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, torch.cuda.current_stream(device).stream_id, values)
    cached = _VALUES_ON_DEVICE.get(key)
    if cached is not None:
        return cached
    if torch.cuda.is_current_stream_capturing():
        return torch.stack([torch.full((), v, dtype=torch.float64, device=device) for v in values])
    tensor = torch.tensor(values, dtype=torch.float64).to(device, non_blocking=True)
    if len(_VALUES_ON_DEVICE) < _VALUES_ON_DEVICE_MAX:
        _VALUES_ON_DEVICE[key] = tensor
    return tensor


@dataclasses.dataclass(frozen=True)
class KernelParams:
    """The TermParams as the kernels take them: ``forms`` (constexprs, :func:`kernel_forms`) and
    ``values`` (the float64 tensor behind ``params_ptr``, on the logits' device).

    Under torch.compile, ``fastseg.engine.function`` builds ``values`` inside the traced graph
    from the (symbolic) hyperparameters, so a schedule of values runs one graph.
    """

    forms: dict
    values: torch.Tensor

    @classmethod
    def of(cls, quantities: Sequence[int], params: "TermParams | KernelParams", device) -> "KernelParams":
        """``params`` as kernel parameters for ``quantities`` (a :class:`KernelParams` passes through)."""
        if isinstance(params, KernelParams):
            return params
        return cls(kernel_forms(quantities, params), parameter_values(quantities, params, device))
