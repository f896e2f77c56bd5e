"""The Inductor backend of the fused engine (CPU): :mod:`.torch_path`'s formulas, compiled.

Opt-in in eager code (``backend="inductor"``); ``backend="auto"`` takes it for the calls a
caller's ``torch.compile`` traces (a model compiled with its loss gets compiled loss passes, not
chunked eager code): for small logits the formulas themselves are traced into the caller's graph
(:func:`traced_forward`, :func:`traced_backward`, through ``engine.function._TracedFusedSums``),
for larger ones its graph calls the fused op, and the op runs these passes. Same
interface as :mod:`.torch_path`::

    fused_loss_forward(z, t, *, quantities, params, valid, weight, distance, deterministic) -> S [B*C, K]
    fused_loss_backward(z, t, coeffs, *, quantities, params, valid, weight, distance) -> dL/dz like z

Instead of visiting cache-sized chunks with eager ops, each pass applies torch_path's per-pixel
primitives and quantities (``_Chunk``, ``_chunk_sums``, ``_chunk_grad``: the same code, called
on the whole ``[B*C, N]`` tensors) inside a ``torch.compile``d function, so Inductor's C++
codegen fuses the pass into one loop over the pixels (vectorised, on torch's OpenMP threads).
The primitives are recomputed at each use (:class:`_Pixels`) so that Inductor keeps them in
registers instead of full-size buffers; the DIBE quantities still materialise two (their
``1 - p^(1+a)`` is reused by several terms). One compiled function per (pass, quantities, forms of the params
(:func:`.torch_path.param_forms`: which special cases such as a zero margin or a squared focal
term the formulas take), which optional maps are given, dtypes), cached for the life of the
process; the parameter values are an input tensor of the compiled pass, so a margin schedule or
an alpha search compiles once; each gets its own
code object so the variants do not share Dynamo's per-function recompile limit. The first call
of a variant compiles it (seconds; Inductor's on-disk cache makes later processes faster).

Numerics: compute dtype as torch_path (float64 for float64 logits, float32 otherwise). The
forward sums each row in equal blocks of at most :data:`BLOCK` pixels (views of the row, plus a
tail of fewer pixels than blocks, summed apart) in the compute dtype, then adds the block sums in
float64 (as torch_path adds its chunk sums), so long rows lose no accuracy. Inductor's
reductions run in a fixed order for a given thread count, so results are reproducible run to
run (``deterministic`` is accepted for interface parity) but may differ in the last bits between
thread counts. Empty inputs, and calls made while a Python dispatch mode is active (where
torch.compile cannot run: profilers, ``FlopCounterMode``, ...), go to :mod:`.torch_path`.
"""

from __future__ import annotations

import contextlib
import itertools
import types

import torch
from torch import Tensor
from torch.utils import _python_dispatch

from . import torch_path as tp
from .spec import TermParams

#: Pixels per partial sum in the forward pass (added in float64 afterwards).
BLOCK = 1 << 14

_CACHE: dict = {}
_SERIAL = itertools.count()


def with_own_code(fn):
    """A copy of ``fn`` with its own code object (Dynamo caches compiled variants per code object)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_SERIAL)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


class _Pixels(tp._Chunk):
    """torch_path's ``_Chunk`` with every cached primitive recomputed at each use instead.

    Inductor's CPU lowering always materialises a reused result of an ``exp``/``log``/``sigmoid``
    (a full-size buffer per primitive: ``p``, ``1 - p``, ``log1p(exp(-|z|))``, ...). Recomputed,
    each use is a fresh single-use expression, and the generated loop computes it once anyway
    (common subexpressions are shared within a kernel): no per-pixel buffer.
    """


for _name, _attr in vars(tp._Chunk).items():
    if isinstance(_attr, tp.cached_property):
        setattr(_Pixels, _name, property(_attr.fn))


def _forward_fn(qs, params: TermParams, dtype: torch.dtype):
    def forward(z, t, valid, weight, distance, values):
        B, C, N = z.shape
        G = B * C
        nb = -(-N // BLOCK) if N > BLOCK else 1
        L = N // nb
        body = nb * L  # whole blocks of L pixels; the tail (fewer than nb pixels) is summed apart
        values = TermParams(*values.unbind(0))

        def sums(piece) -> Tensor:
            part = lambda x: None if x is None else piece(x.reshape(G, N))  # noqa: E731
            c = _Pixels(part(z), part(t), part(valid), part(weight), part(distance), params, dtype, values)
            return torch.stack(tp._chunk_sums(c, qs), dim=-1).to(torch.float64)

        # [G, nb, L] views of the rows (affine indexing: Inductor vectorises the block sums; padding
        # the rows to nb blocks instead gave index arithmetic per element, a scalar loop, 10x slower)
        S = sums(lambda x: x[:, :body].unflatten(1, (nb, L))).sum(dim=1)
        if body < N:
            S = S + sums(lambda x: x[:, body:])
        return S.to(dtype)

    return forward


def _backward_fn(qs, params: TermParams, dtype: torch.dtype, live):
    def backward(z, t, coeffs, valid, weight, distance, values):
        B, C, N = z.shape
        G = B * C
        rows = lambda x: None if x is None else x.reshape(G, N)  # noqa: E731
        c = _Pixels(rows(z), rows(t), rows(valid), rows(weight), rows(distance), params, dtype,
                    TermParams(*values.unbind(0)))
        coeffs = coeffs.to(dtype)
        coef: dict = {}
        for i in live:
            col = coeffs[:, i : i + 1]
            coef[qs[i]] = col if qs[i] not in coef else coef[qs[i]] + col
        return tp._chunk_grad(c, qs, coef).to(z.dtype).reshape(B, C, N)

    return backward


def traced_forward(z, t, valid, weight, distance, values, *, quantities, params: TermParams) -> Tensor:
    """The forward pass's formulas as traced code (for a caller's torch.compile): ``S [B*C, K]``;
    ``values``: the parameter values as a tensor."""
    qs = tp._check_args(z, t, quantities, valid, weight, distance)
    dtype = tp.compute_dtype(z)
    return _forward_fn(qs, params, dtype)(z, t, valid, weight, distance, values.to(dtype))


def traced_backward(z, t, coeffs, valid, weight, distance, values, *, quantities, params: TermParams) -> Tensor:
    """The backward pass's formulas as traced code: ``dL/dz`` like ``z``."""
    qs = tp._check_args(z, t, quantities, valid, weight, distance)
    live = tp.live_columns(qs)
    if not live:
        return torch.zeros_like(z)
    dtype = tp.compute_dtype(z)
    return _backward_fn(qs, params, dtype, live)(z, t, coeffs, valid, weight, distance, values.to(dtype))


def _compiled(kind: str, key: tuple, make):
    fn = _CACHE.get((kind,) + key)
    if fn is None:
        fn = torch.compile(with_own_code(make()), fullgraph=True)
        _CACHE[(kind,) + key] = fn
    return fn


def _key(qs, params, z, t, valid, weight, distance) -> tuple:
    dt = lambda x: None if x is None else x.dtype  # noqa: E731
    return (qs, tp.param_forms(params), z.dtype, t.dtype, dt(valid), dt(weight), dt(distance))


def _values(params: TermParams, dtype: torch.dtype) -> Tensor:
    """The parameters as one tensor, an input of the compiled pass (so a new value is not a recompile)."""
    return torch.tensor([getattr(params, f) for f in TermParams.__dataclass_fields__], dtype=dtype)


def _under_dispatch_mode() -> bool:
    """A Python dispatch mode is active (a profiler, FlopCounterMode, ...): torch.compile refuses to
    run there and would mark the function as not compilable for good, so the call goes eager."""
    return bool(_python_dispatch._get_current_dispatch_mode_stack())


_COMPILER_AVAILABLE: bool | None = None


@torch._dynamo.assume_constant_result
def compiler_available() -> bool:
    """Whether Inductor finds a C++ compiler here (asked once; a constant for torch.compile)."""
    global _COMPILER_AVAILABLE
    if _COMPILER_AVAILABLE is None:
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
            _COMPILER_AVAILABLE = True
        except Exception:  # no compiler, or a torch without this (private) helper
            _COMPILER_AVAILABLE = False
    return _COMPILER_AVAILABLE


def _below_autograd():
    """The dispatch state of an op called through autograd, whoever calls the op.

    Dynamo guards on the inputs' dispatch keys as the thread sees them, and on their
    ``requires_grad``: below the autograd kernel of the op (an eager call) ``ADInplaceOrView`` is
    excluded and the saved logits require grad, in a compiled caller's graph neither, so each
    pass would compile twice (0.1-0.5 s) for a process that calls the loss both ways, or for
    the first and later calls of a caller's new graph. With this and :func:`_plain` they match.
    """
    below = getattr(torch._C, "_AutoDispatchBelowADInplaceOrView", None)
    return below() if below is not None else contextlib.nullcontext()


def _plain(*tensors):
    return tuple(None if x is None else x.detach() for x in tensors)


def _check_device(z: Tensor) -> None:
    if z.device.type != "cpu":
        raise ValueError(f"backend='inductor' supports CPU tensors only; got device {z.device}")


def fused_loss_forward(
    z: Tensor,
    t: Tensor,
    *,
    quantities,
    params: TermParams,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    distance: Tensor | None = None,
    deterministic: bool = True,
) -> Tensor:
    """Per (image, channel) sums ``S [B*C, K]`` of the requested quantities, in that order."""
    _check_device(z)
    qs = tp._check_args(z, t, quantities, valid, weight, distance)
    if not qs or z.numel() == 0 or _under_dispatch_mode():
        return tp.fused_loss_forward(z, t, quantities=qs, params=params, valid=valid, weight=weight,
                                     distance=distance, deterministic=deterministic)
    dtype = tp.compute_dtype(z)
    fn = _compiled("fwd", _key(qs, params, z, t, valid, weight, distance), lambda: _forward_fn(qs, params, dtype))
    with _below_autograd():
        return fn(*_plain(z, t, valid, weight, distance), _values(params, dtype))


def fused_loss_backward(
    z: Tensor,
    t: Tensor,
    coeffs: Tensor,
    *,
    quantities,
    params: TermParams,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    distance: Tensor | None = None,
) -> Tensor:
    """``dL/dz = sum_k coeffs[g, k] * ds_k/dz`` per pixel, as a tensor like ``z`` (its dtype)."""
    _check_device(z)
    qs = tp._check_args(z, t, quantities, valid, weight, distance)
    B, C, N = z.shape
    if coeffs.shape != (B * C, len(qs)):
        raise ValueError(f"coeffs must be [B*C, K] = {(B * C, len(qs))}; got {tuple(coeffs.shape)}")
    live = tp.live_columns(qs)
    if not live or z.numel() == 0 or _under_dispatch_mode():
        return tp.fused_loss_backward(z, t, coeffs, quantities=qs, params=params, valid=valid, weight=weight,
                                      distance=distance)
    dtype = tp.compute_dtype(z)
    key = _key(qs, params, z, t, valid, weight, distance) + (coeffs.dtype,)
    fn = _compiled("bwd", key, lambda: _backward_fn(qs, params, dtype, live))
    with _below_autograd():
        return fn(*_plain(z, t, coeffs, valid, weight, distance), _values(params, dtype))
