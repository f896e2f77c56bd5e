"""The fused loss as a differentiable op: backend choice, autograd, ``torch.library`` registration.

Two custom ops carry every fused loss (registered with :func:`torch.library.custom_op`, so
``torch.compile(..., fullgraph=True)`` sees each as one opaque node with a fake implementation,
and no graph break):

- ``fastseg::fused_sums(z, t, valid, weight, distance, quantities, params, backend, deterministic)``
  returns ``S [B*C, K]``, the per-group sums of the plan's quantities;
- ``fastseg::fused_grad(z, t, coeffs, valid, weight, distance, quantities, params, backend)`` returns
  ``dL/dz`` from ``coeffs = dL/dS``.

``params`` holds the :class:`TermParams` values as a float64 CPU tensor. For CPU tensors it is
built so that under torch.compile a value that changes between calls stays a graph input (as
floats, Dynamo would specialize: a margin schedule would retrace at every value); for CUDA
tensors (``backend="torch"``, or Triton where ``triton_op`` is missing) it stays a constant of
the graph, because the op reads it on the host and a CUDA graph replays what was read when it
was recorded.

A plain eager call (:func:`plain_eager`: ordinary tensors, nothing tracing or intercepting ops)
runs the same backend functions through :class:`_EagerFusedSums`, a plain
``torch.autograd.Function``, and skips the ops' Python dispatch (about 150 us of host time per
step on CPU; under torch.compile, torch.export, ``torch.jit.trace``, a ``TorchDispatchMode``,
tensor subclasses and ``create_graph=True`` backward the ops run). torch.func transforms are
refused with a ``RuntimeError`` (:func:`group_sums`): neither path has functorch rules.

The autograd formula of ``fused_sums`` (``register_autograd``) is ``fused_grad``; the epilogue
on ``S`` is plain torch code, so autograd itself produces ``coeffs`` (scope "batch" sums ``S``
over the batch there, and autograd expands ``coeffs`` back). Saved for backward: references to
the inputs only, never a per-pixel intermediate. ``fused_grad`` has no derivative: a second
backward raises a ``RuntimeError`` instead of returning a silently wrong second derivative.

On CUDA with ``backend="triton"`` the same pair is registered with ``torch.library.triton_op``
(``fastseg::fused_sums_triton`` / ``fastseg::fused_grad_triton``): the launchers of
``kernels/fused_loss.py`` launch through ``torch.library.wrap_triton``, so torch.compile traces
into the kernels themselves (and the op body is its own fake implementation). On CPU-only
machines the pair is not registered (:func:`register_triton_ops`; tests/test_triton_ops.py does
register it under the interpreter, to run it eagerly on CPU tensors). Its parameters are a
float64 tensor on the logits' device, which the kernels read, and their constexpr forms
(:func:`triton_kernel_params`): under torch.compile the tensor is computed in the graph, so a
schedule of values is one graph, and a CUDA graph replays each call's values.

Backends (``backend=``): ``"torch"`` is :mod:`.torch_path`; ``"inductor"`` (CPU tensors only,
opt-in) is :mod:`.inductor_path`, the same formulas through ``torch.compile``d passes; ``"triton"`` is ``kernels/fused_loss.py``
(imported lazily; on CPU tensors it runs under Triton's interpreter, which needs
``TRITON_INTERPRET=1`` in the environment: :mod:`fastseg._kernels`);
``"auto"`` picks Triton for CUDA tensors; for CPU tensors torch, or Inductor when the call is
traced by the caller's ``torch.compile`` (:func:`resolve_backend`; small logits then get the
Inductor formulas traced into the caller's graph, :class:`_TracedFusedSums`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import check_choice
from .._kernels import kernels_module
from . import inductor_path, torch_path
from .kernel_params import KernelParams, forms_dict
from .scalars import values_tensor
from .spec import TermParams

BACKENDS = ("auto", "triton", "torch", "inductor")

def resolve_backend(backend: str, z: Tensor) -> str:
    """The backend that runs ``backend`` for ``z``. ``"auto"``: Triton for CUDA tensors; for CPU
    tensors the torch path, or Inductor when the call is traced by the caller's ``torch.compile``
    (whose graph then calls the op; a C++ compiler must be found, as for the caller's own
    Inductor graph). The torch path is chunked eager code, 2-3x slower than compiled code.
    ``torch.export`` keeps the torch path: an exported program must not need a compiler."""
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        if z.is_cuda:
            return "triton"
        if z.device.type == "cpu" and _inside_torch_compile() and inductor_path.compiler_available():
            return "inductor"
        return "torch"
    if backend == "torch" and z.device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend='torch' supports CPU and CUDA tensors; got device {z.device}")
    if backend == "inductor" and z.device.type != "cpu":
        raise ValueError(
            f"backend='inductor' supports CPU tensors only; got device {z.device} (use 'auto', 'triton' or 'torch')"
        )
    return backend


def _inside_torch_compile() -> bool:
    """Traced by torch.compile, and not by torch.export."""
    if not torch.compiler.is_compiling():
        return False
    # Dynamo folds torch.compiler.is_exporting() to True under any torch.compile in torch 2.11
    # (the GPU image's); the flag it reads is right under both, in 2.11 and 2.13.
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    if isinstance(flag, bool):
        return not flag
    return not getattr(torch.compiler, "is_exporting", lambda: False)()


def _triton_module(on_cpu: bool):
    """``kernels/fused_loss.py``, imported on first use (:func:`fastseg._kernels.kernels_module`)."""
    return kernels_module("fused_loss", on_cpu=on_cpu)


def _backend_module(backend: str, z: Tensor):
    if backend == "torch":
        return torch_path
    if backend == "inductor":
        return inductor_path
    return _triton_module(not z.is_cuda)


def _params(params: list[float] | Tensor) -> TermParams:
    return TermParams(*(params.tolist() if isinstance(params, Tensor) else params))


def params_list(params: TermParams) -> list[float]:
    return [getattr(params, f) for f in TermParams.__dataclass_fields__]


def _sums_dtype(z: Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# fastseg::fused_sums
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fastseg::fused_sums", mutates_args=())
def fused_sums(
    z: Tensor,
    t: Tensor,
    valid: Optional[Tensor],
    weight: Optional[Tensor],
    distance: Optional[Tensor],
    quantities: list[int],
    params: Tensor,
    backend: str,
    deterministic: bool,
) -> Tensor:
    """``S [B*C, K]``: per-(image, channel) sums of ``quantities`` over ``z, t`` (``[B, C, N]``).

    ``params``: the :class:`TermParams` values as a float64 CPU tensor (see the module docstring:
    for CPU tensors, a graph input under torch.compile, so a margin schedule needs one graph).
    """
    return backend_sums(z, t, valid, weight, distance, tuple(quantities), _params(params), backend, deterministic)


def backend_sums(z, t, valid, weight, distance, quantities: tuple, params: TermParams, backend: str,
                 deterministic: bool) -> Tensor:
    """The body of ``fastseg::fused_sums`` (also run by :class:`_EagerFusedSums`)."""
    return _backend_module(backend, z).fused_loss_forward(
        z, t, quantities=quantities, params=params, valid=valid, weight=weight, distance=distance,
        deterministic=deterministic,
    )


@fused_sums.register_fake
def _(z, t, valid, weight, distance, quantities, params, backend, deterministic):
    return z.new_empty((z.shape[0] * z.shape[1], len(quantities)), dtype=_sums_dtype(z))


# --------------------------------------------------------------------------------------------
# fastseg::fused_grad
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fastseg::fused_grad", mutates_args=())
def fused_grad(
    z: Tensor,
    t: Tensor,
    coeffs: Tensor,
    valid: Optional[Tensor],
    weight: Optional[Tensor],
    distance: Optional[Tensor],
    quantities: list[int],
    params: Tensor,
    backend: str,
) -> Tensor:
    """``dL/dz`` (``[B, C, N]``, z's dtype) from ``coeffs = dL/dS`` (``[B*C, K]``)."""
    return backend_grad(z, t, coeffs, valid, weight, distance, tuple(quantities), _params(params), backend)


def backend_grad(z, t, coeffs, valid, weight, distance, quantities: tuple, params: TermParams, backend: str) -> Tensor:
    """The body of ``fastseg::fused_grad`` (also run by :class:`_EagerFusedSums`)."""
    grad = _backend_module(backend, z).fused_loss_backward(
        z, t, coeffs, quantities=quantities, params=params, valid=valid, weight=weight, distance=distance
    )
    return grad.view(z.shape) if grad.shape != z.shape else grad


@fused_grad.register_fake
def _(z, t, coeffs, valid, weight, distance, quantities, params, backend):
    return z.new_empty(z.shape)


# --------------------------------------------------------------------------------------------
# autograd of fastseg::fused_sums
# --------------------------------------------------------------------------------------------


def _no_double_backward(ctx, grad):
    raise RuntimeError(
        "fastseg fused losses do not support double backward (the gradient of a gradient): the fused backward "
        "pass is not itself differentiable. Use fastseg.reference for higher-order derivatives."
    )


def _setup_grad_context(ctx, inputs, output):
    """Nothing to save: the backward of a gradient op only raises."""


def register_pair_autograd(sums_name: str, grad_name: str, grad_op) -> None:
    """Autograd of an op pair: the sums op ``(z, t, valid, weight, distance, quantities, params,
    mode, deterministic) -> S`` is differentiated by its gradient op ``grad_op(z, t, dL/dS, valid,
    weight, distance, quantities, params, mode) -> dL/dz`` (``mode``: the backend of
    ``fused_sums``, the kernel forms of the triton pair), which refuses a double backward."""

    def setup_context(ctx, inputs, output):
        z, t, valid, weight, distance, quantities, params, mode, _deterministic = inputs
        ctx.save_for_backward(z, t, valid, weight, distance, params)
        ctx.meta = (quantities, mode)

    def backward(ctx, grad_S):
        z, t, valid, weight, distance, params = ctx.saved_tensors
        quantities, mode = ctx.meta
        grad_z = None
        if ctx.needs_input_grad[0]:
            grad_z = grad_op(z, t, grad_S.contiguous(), valid, weight, distance, quantities, params, mode)
        return grad_z, None, None, None, None, None, None, None, None

    torch.library.register_autograd(sums_name, backward, setup_context=setup_context)
    torch.library.register_autograd(grad_name, _no_double_backward, setup_context=_setup_grad_context)


register_pair_autograd("fastseg::fused_sums", "fastseg::fused_grad", fused_grad)


# --------------------------------------------------------------------------------------------
# CUDA + Triton: the same two ops as triton_ops, so torch.compile traces into the kernels
# --------------------------------------------------------------------------------------------

_triton_ops_registered = False


def triton_ops_registered() -> bool:
    """Whether ``fastseg::fused_sums_triton`` / ``fused_grad_triton`` exist in this process."""
    return _triton_ops_registered


def _tag_inductor_cache() -> None:
    """Key Inductor's FX-graph cache on the kernels' source too (it does not hash user Triton code)."""
    config = getattr(torch.compiler, "config", None)
    if config is None or not hasattr(config, "cache_key_tag"):
        return
    from fastseg.kernels._utils import source_hash

    tag = f"fastseg-{source_hash()}"
    if tag not in (config.cache_key_tag or ""):
        config.cache_key_tag = f"{config.cache_key_tag}+{tag}" if config.cache_key_tag else tag


def register_triton_ops() -> None:
    """Register the ``triton_op`` pair (once per process; called at import where CUDA exists).

    Defining a ``triton_op`` imports triton, so on a CPU-only machine it waits for an explicit
    call (:mod:`fastseg._kernels` on ``TRITON_INTERPRET``). tests/test_triton_ops.py calls
    this under the interpreter to run the same ops eagerly on CPU tensors (``wrap_triton`` then
    launches the interpreted kernels directly); tests/trace_triton_ops.py calls it without the
    interpreter to trace torch.compile into the kernels on CPU tensors.
    """
    global _triton_ops_registered
    if _triton_ops_registered:
        return
    _tag_inductor_cache()

    @torch.library.triton_op("fastseg::fused_sums_triton", mutates_args=())
    def fused_sums_triton(
        z: Tensor,
        t: Tensor,
        valid: Optional[Tensor],
        weight: Optional[Tensor],
        distance: Optional[Tensor],
        quantities: list[int],
        params: Tensor,
        forms: list[int],
        deterministic: bool,
    ) -> Tensor:
        """:func:`fused_sums` through ``wrap_triton``-launched kernels; ``params``/``forms``: see
        :func:`triton_kernel_params`."""
        return _triton_module(not z.is_cuda).fused_loss_forward(
            z,
            t,
            quantities=tuple(quantities),
            params=KernelParams(forms_dict(forms), params),
            valid=valid,
            weight=weight,
            distance=distance,
            deterministic=deterministic,
            launch_wrapper=torch.library.wrap_triton,
        )

    @torch.library.triton_op("fastseg::fused_grad_triton", mutates_args=())
    def fused_grad_triton(
        z: Tensor,
        t: Tensor,
        coeffs: Tensor,
        valid: Optional[Tensor],
        weight: Optional[Tensor],
        distance: Optional[Tensor],
        quantities: list[int],
        params: Tensor,
        forms: list[int],
    ) -> Tensor:
        """:func:`fused_grad` through ``wrap_triton``-launched kernels."""
        return _triton_module(not z.is_cuda).fused_loss_backward(
            z,
            t,
            coeffs,
            quantities=tuple(quantities),
            params=KernelParams(forms_dict(forms), params),
            valid=valid,
            weight=weight,
            distance=distance,
            launch_wrapper=torch.library.wrap_triton,
        )

    register_pair_autograd("fastseg::fused_sums_triton", "fastseg::fused_grad_triton", fused_grad_triton)
    _triton_ops_registered = True


HAS_TRITON_OP = hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
if HAS_TRITON_OP and torch.cuda.is_available():
    register_triton_ops()


def triton_kernel_params(quantities: list[int], params: TermParams, z: Tensor) -> tuple[list[int], Tensor]:
    """``(forms, values)`` of the ``triton_op`` pair: the kernels' constexpr forms (comparisons:
    guards, not specialisations, under torch.compile) and the float64 parameter array they read,
    on z's device (:class:`.kernel_params.KernelParams`)."""
    kp = KernelParams.of(quantities, params, z.device)
    return [int(f) for f in kp.forms.values()], kp.values


# --------------------------------------------------------------------------------------------
# plain eager calls: the same pair without the ops' dispatch
# --------------------------------------------------------------------------------------------

_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def plain_eager(*tensors: Tensor | None) -> bool:
    """Is this an ordinary eager call: plain tensors, and nothing that traces or intercepts ops
    (torch.compile, torch.export, ``torch.jit.trace``, a ``TorchDispatchMode`` such as
    ``FakeTensorMode`` or ``make_fx``'s, torch.func transforms)? Those see the registered ops; an
    ordinary call skips their dispatch (:class:`_EagerFusedSums`)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", None)
    transforms = getattr(torch._C, "_are_functorch_transforms_active", None)
    if dispatch_modes is None or transforms is None or dispatch_modes() or transforms():
        return False
    return all(x is None or type(x) in _PLAIN_TENSORS for x in tensors)


class _EagerFusedSums(torch.autograd.Function):
    """``fastseg::fused_sums`` and its backward ``fastseg::fused_grad`` for plain eager calls
    (:func:`plain_eager`): the same backend functions and the same saved inputs, without the
    ``custom_op`` / ``triton_op`` dispatch, which cost about 150 us of a step's host time on CPU
    (a quarter of a 8x1x96x96 Dice step). A backward that builds a graph (``create_graph=True``)
    goes through ``fastseg::fused_grad``, whose own backward refuses with a clear error."""

    @staticmethod
    def forward(ctx, z, t, valid, weight, distance, quantities, params, backend, deterministic):
        ctx.save_for_backward(z, t, valid, weight, distance)
        ctx.meta = (quantities, params, backend)
        return backend_sums(z, t, valid, weight, distance, quantities, params, backend, deterministic)

    @staticmethod
    def backward(ctx, grad_S):
        grad_z = None
        if ctx.needs_input_grad[0]:
            z, t, valid, weight, distance = ctx.saved_tensors
            quantities, params, backend = ctx.meta
            grad_S = grad_S.contiguous()
            if torch.is_grad_enabled():
                values = torch.tensor(params_list(params), dtype=torch.float64)
                grad_z = fused_grad(z, t, grad_S, valid, weight, distance, list(quantities), values, backend)
            else:
                grad_z = backend_grad(z, t, grad_S, valid, weight, distance, quantities, params, backend)
        return grad_z, None, None, None, None, None, None, None, None


#: Logits up to this many elements take :class:`_TracedFusedSums` inside a caller's torch.compile
#: (CPU, Inductor backend); larger ones the opaque op. Measured 2026-12-06 (2 cores, forward +
#: backward of torch.compile(fastseg)): traced, 8x1x96x96 steps take 0.4-0.6 ms instead of
#: 0.7-1.0 (dice, focal, hybrid focal margin, bce_dice) and 8x1x256x256 ones 1.3-2.8 ms instead of
#: 1.6-3.7; at 8x1x512x512 focal took 16.6 ms instead of 8.0, at 8x1x1024x1024 87 instead of
#: 37 ms with two more full-size buffers. In the caller's training graph AOTAutograd's CSE merges
#: the per-use recomputations of ``p``, ``1 - p`` and ``log1p(exp(-|z|))`` (:class:`.inductor_path._Pixels`)
#: into shared nodes, which Inductor then materialises (with ``torch._functorch.config.cse = False``
#: the buffers vanish; that switch is global, the caller's); the separately compiled passes keep
#: them in registers.
TRACED_MAX_ELEMENTS = 1 << 19


class _TracedFusedSums(torch.autograd.Function):
    """The Inductor backend inside a caller's ``torch.compile`` (CPU), for small inputs
    (:data:`TRACED_MAX_ELEMENTS`): the passes' formulas (:mod:`.inductor_path`) traced into the
    caller's graph, forward and backward, instead of an opaque op that calls separately compiled
    passes. Inductor fuses them with the caller's code, and a step saves the op's dispatch and
    the nested compiled calls (their guards and wrappers: about 0.3 ms a step). ``values``: the
    hyperparameters as a float64 tensor (a graph input from their second value on,
    :mod:`.scalars`)."""

    @staticmethod
    def forward(ctx, z, t, valid, weight, distance, values, quantities, params):
        ctx.save_for_backward(z, t, valid, weight, distance, values)
        ctx.meta = (quantities, params)
        return inductor_path.traced_forward(z, t, valid, weight, distance, values, quantities=quantities,
                                            params=params)

    @staticmethod
    def backward(ctx, grad_S):
        z, t, valid, weight, distance, values = ctx.saved_tensors
        quantities, params = ctx.meta
        grad_z = inductor_path.traced_backward(z, t, grad_S, valid, weight, distance, values, quantities=quantities,
                                               params=params)
        return grad_z, None, None, None, None, None, None, None


def group_sums(
    z: Tensor,
    t: Tensor,
    *,
    quantities,
    params: TermParams,
    valid: Tensor | None = None,
    weight: Tensor | None = None,
    distance: Tensor | None = None,
    backend: str = "auto",
    deterministic: bool = True,
) -> Tensor:
    """Differentiable ``S [B*C, K]`` of ``z [B, C, N]`` through the chosen backend."""
    backend = resolve_backend(backend, z)
    quantities = [int(q) for q in quantities]
    transforms = getattr(torch._C, "_are_functorch_transforms_active", None)
    if transforms is not None and transforms():
        raise RuntimeError(
            "fastseg's fused losses do not run under torch.func transforms (grad, vmap, jacrev, ...): their "
            "passes are custom autograd ops without functorch rules. Use torch.autograd (loss.backward(), "
            "torch.autograd.grad), or fastseg.reference (plain PyTorch) for torch.func"
        )
    if plain_eager(z, t, valid, weight, distance):
        return _EagerFusedSums.apply(z, t, valid, weight, distance, tuple(quantities), params, backend,
                                     bool(deterministic))
    if backend == "inductor" and torch.compiler.is_compiling() and quantities and z.numel() <= TRACED_MAX_ELEMENTS:
        values = values_tensor(params_list(params))
        return _TracedFusedSums.apply(z, t, valid, weight, distance, values, tuple(quantities), params)
    if backend == "triton" and _triton_ops_registered:
        forms, values_on_device = triton_kernel_params(quantities, params, z)
        return torch.ops.fastseg.fused_sums_triton(
            z, t, valid, weight, distance, quantities, values_on_device, forms, bool(deterministic)
        )
    # The op reads the values on the host. A CUDA graph (mode="reduce-overhead") would replay
    # what it read when recorded, so on CUDA they stay constants of the compiled graph.
    on_cpu = z.device.type == "cpu"
    values = params_list(params)
    params_tensor = values_tensor(values) if on_cpu else torch.tensor(values, dtype=torch.float64)
    return fused_sums(z, t, valid, weight, distance, quantities, params_tensor, backend, bool(deterministic))
