"""The fused loss engine in Triton: one forward pass of per-group sums, one backward pass of dL/dz.

The contract is :mod:`fastseg.engine.spec`: a loss is ``epilogue(S)`` with
``S[g, k] = sum_i valid_i * s_k(z_i, t_i, d_i, w_i)`` over the pixels of group ``g = b*C + c``,
and its gradient is ``dL/dz_i = sum_k c[g, k] ds_k/dz_i`` with ``c = dL/dS``. This module holds,
in order, the ``@triton.jit`` helpers (one per quantity, each returning the value and its
derivative), the two kernels, the second-stage reduction kernel, and the launchers
:func:`fused_loss_forward` / :func:`fused_loss_backward` (the torch path,
``fastseg.engine.torch_path``, implements the same two functions for CPU tensors).

Kernel design:

- Forward: a 1-D grid of ``groups x tiles`` programs (program ``pid`` is tile ``pid % tiles`` of
  group ``pid // tiles``: no 65535 limit on either count), a fixed ``BLOCK`` of 128-1024 lanes.
  Each program reads its tile of z, t (and valid, weight, distance) once, computes ``p`` and the
  softplus forms once, and only the enabled quantities (one ``COL_<NAME>`` constexpr per
  quantity: its output column, or -1 when the loss does not use it, so each compiled kernel holds
  only its loss's terms). Per-tile fp32 partial sums go to a ``[G, tiles, K]`` buffer, reduced in
  a fixed order by a second kernel (bitwise deterministic); ``deterministic=False`` instead adds
  them atomically into ``[G, K]``.
- Backward: the same grid, recomputing ``p`` from ``z``, reading ``c[g, :]`` (any strides) and
  writing ``dL/dz`` once, in z's dtype. Quantities with a zero derivative (SUM_T, SUM_TT, COUNT)
  are not compiled into it.
- The scalar parameters (:class:`~fastseg.engine.spec.TermParams`) are read by the kernels from
  a float64 array in device memory (``params_ptr``, :class:`KernelParams`), so a margin schedule
  or an OII alpha search runs one compiled kernel for every value, and under torch.compile one
  graph: the array is computed inside the traced graph from the hyperparameters, which stay
  graph inputs (a scalar kernel argument would be a graph constant, one graph per value). Only
  their *form* is a constexpr (exponents 0, 1 and 2 multiplied out, margin on or off). Eager
  calls read a cached device copy of each set of values: no copy, no synchronisation per step.
  Parameters of quantities a loss does not use are reset to their defaults.
- Numerics: arithmetic in fp32 (fp64 for fp64 logits); ``-log p = softplus(-z)`` and
  ``-log(1-p) = softplus(z)`` with ``softplus(x) = max(x, 0) + log1p(exp(-|x|))`` and an accurate
  ``log1p`` (Goldberg's ``log(u) * e / (u - 1)``, no libdevice), so confident pixels keep their
  tiny losses (needed by ``(-log p) ** gce`` with gce < 1); ``1 - p`` is computed as
  ``sigmoid(-z)``, never by cancellation; ``x ** g = exp2(g log2 x)`` with ``0 ** 0 = 1`` and
  integer ``g`` in {1, 2} multiplied out at compile time. Masked tails and ignored pixels are
  zeroed with ``tl.where`` after every nonlinearity (never by multiplication, so a NaN logit at an
  ignored pixel cannot leak).
- Offsets are int64 from the program id on, so ``numel >= 2**31`` and large strides are safe.
- The launchers never read tensor data on the host: no synchronisation, CUDA-graph capturable,
  traceable inside ``torch.library.triton_op`` (pass ``launch_wrapper=torch.library.wrap_triton``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import triton
import triton.language as tl

from fastseg.engine.kernel_params import NUM_PARAMS, KernelParams, kernel_forms
from fastseg.engine.spec import NUM_QUANTITIES, WEIGHTED, Quantity, TermParams

from ._utils import (
    FLOAT_DTYPES,
    accumulation_dtype,
    as_kernel_operand,
    block_and_warps,
    group_strides,
    launched_on_input_device,
    smallest_normal,
)

# --------------------------------------------------------------------------------------------
# Per-pixel helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _pow(x, g, FORM: tl.constexpr):
    """``x ** g`` for ``x >= 0``: ``exp2(g log2 x)``, with ``x ** 0 = 1`` and ``0 ** g = 0`` (g > 0).

    ``FORM`` (:func:`power_form` of ``g``) multiplies out the exponents 0, 1 and 2 at compile time;
    any other exponent is the runtime value ``g``.
    """
    if FORM == 0:
        r = tl.full(x.shape, 1.0, x.dtype)
    elif FORM == 1:
        r = x
    elif FORM == 2:
        r = x * x
    else:
        pos = x > 0.0
        r = tl.where(pos, tl.exp2(g * tl.log2(tl.where(pos, x, 1.0))), 0.0)
    return r


# The index of each TermParams field in the kernels' float64 parameter array (its field order).
P_G_FG = tl.constexpr(0)
P_M = tl.constexpr(1)
P_G_BG = tl.constexpr(2)
P_GCE = tl.constexpr(3)
P_DIBE_G = tl.constexpr(4)
P_DIBE_A = tl.constexpr(5)
P_DIBE_B = tl.constexpr(6)


@triton.jit
def _param(params_ptr, i: tl.constexpr, FP64: tl.constexpr):
    """Parameter ``i`` (``P_<NAME>``) of the float64 array ``params_ptr`` in the compute dtype.

    Loaded where a quantity uses it, not once at the top: a kernel argument lives in the constant
    bank, a loaded value in a register, and seven of them held across the widest fused kernel
    made it spill.
    """
    v = tl.load(params_ptr + i)
    if not FP64:
        v = v.to(tl.float32)
    return v


@triton.jit
def _log1p(e):
    """``log(1 + e)`` for ``e >= 0``, accurate for tiny ``e`` without libdevice (Goldberg 1991)."""
    u = 1.0 + e
    exact = u == 1.0
    return tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))


@triton.jit
def _sigmoid_forms(z):
    """``(p, q, -log p, -log q)`` with ``p = sigmoid(z)``, ``q = 1 - p = sigmoid(-z)`` (no cancellation)."""
    e = tl.exp(-tl.abs(z))
    r = 1.0 / (1.0 + e)
    er = e * r
    pos = z >= 0.0
    p = tl.where(pos, r, er)
    q = tl.where(pos, er, r)
    l1 = _log1p(e)
    nlp = tl.maximum(-z, 0.0) + l1
    nlq = tl.maximum(z, 0.0) + l1
    return p, q, nlp, nlq


@triton.jit
def _q_tp(p, q, t):
    """TP: ``p t``; derivative ``t p q``."""
    return p * t, t * p * q


@triton.jit
def _q_sum_p(p, q):
    """SUM_P: ``p``; derivative ``p q``."""
    return p, p * q


@triton.jit
def _q_sum_pp(p, q):
    """SUM_PP: ``p^2``; derivative ``2 p^2 q``."""
    return p * p, 2.0 * p * p * q


@triton.jit
def _q_fg_ce(p, q, qm, nlpm, t, g, G_FORM: tl.constexpr):
    """FG_CE: ``t q^g (-log pm)``; derivative ``t q^g (pm - 1 - g p (-log pm))``, ``pm - 1 = -qm``."""
    qg = _pow(q, g, G_FORM)
    return t * qg * nlpm, t * qg * (-qm - g * p * nlpm)


@triton.jit
def _q_bg_ce(p, q, nlq, t, g, G_FORM: tl.constexpr):
    """BG_CE: ``(1-t) p^g (-log q)``; derivative ``(1-t) p^g (p + g q (-log q))``."""
    pg = _pow(p, g, G_FORM)
    return (1.0 - t) * pg * nlq, (1.0 - t) * pg * (p + g * q * nlq)


@triton.jit
def _el_power(nl, r, z, gce, GCE_FORM: tl.constexpr, TINY: tl.constexpr):
    """``(nl^gce, gce nl^(gce-1) r)`` for ``nl = -log p``, ``r = q`` (or ``-log q``, ``p``).

    A general exponent goes through ``log2 nl``, which is ``-|z| log2(e)`` where ``nl`` has
    underflowed (below ``TINY``: |z| > 87 in float32), so a confident pixel keeps its
    ``e^(-gce |z|)`` instead of 0; the derivative is ``gce nl^gce (r / nl)``, ``r / nl`` being 1
    there (``nl^(gce-1)`` would overflow).
    """
    if GCE_FORM == 1:
        value = nl
        slope = r
    elif GCE_FORM == 2:
        value = nl * nl
        slope = 2.0 * nl * r
    else:  # any other gce (0 would give 1 and 0 here as well)
        normal = nl >= TINY
        safe = tl.where(normal, nl, 1.0)
        value = tl.exp2(gce * tl.where(normal, tl.log2(safe), -tl.abs(z) * 1.4426950408889634))
        slope = gce * value * tl.where(normal, r / safe, 1.0)
    return value, slope


@triton.jit
def _q_el_fg(q, nlp, z, t, gce, GCE_FORM: tl.constexpr, TINY: tl.constexpr):
    """EL_FG: ``t (-log p)^gce``; derivative ``-t gce (-log p)^(gce-1) q`` (:func:`_el_power`)."""
    value, slope = _el_power(nlp, q, z, gce, GCE_FORM, TINY)
    return t * value, -t * slope


@triton.jit
def _q_el_bg(p, nlq, z, t, gce, GCE_FORM: tl.constexpr, TINY: tl.constexpr):
    """EL_BG: ``(1-t) (-log q)^gce``; derivative ``(1-t) gce (-log q)^(gce-1) p`` (:func:`_el_power`)."""
    value, slope = _el_power(nlq, p, z, gce, GCE_FORM, TINY)
    return (1.0 - t) * value, (1.0 - t) * slope


@triton.jit
def _q_dibe_fg(p, q, nlp, t, g, a, G_FORM: tl.constexpr, A1_FORM: tl.constexpr):
    """DIBE_FG (seed 001 eq 16, y = 1): ``t q^G (-log p)`` where ``p >= 0.5``, else
    ``t (1-p^(1+A))^G (1+A) (-log p)``; ``yhat = [p >= 0.5]`` carries no gradient.

    Derivatives: ``q^G (-G p (-log p) - q)`` and, with ``u = 1 - p^(1+A)`` (``u >= 1 - 2^-(1+A)``
    in its branch, so the division is safe), ``(1+A) (G u^G (-(1+A) p^(1+A) q) / u (-log p) - u^G q)``.
    """
    yhat = p >= 0.5
    qg = _pow(q, g, G_FORM)
    v_hit = qg * nlp
    d_hit = qg * (-g * p * nlp - q)
    a1 = 1.0 + a
    pa = _pow(p, a1, A1_FORM)
    u = tl.where(yhat, 1.0, 1.0 - pa)
    ug = _pow(u, g, G_FORM)
    v_miss = a1 * ug * nlp
    d_miss = a1 * (g * ug * (-a1 * pa * q) / u * nlp - ug * q)
    return t * tl.where(yhat, v_hit, v_miss), t * tl.where(yhat, d_hit, d_miss)


@triton.jit
def _q_dibe_bg(p, q, nlq, t, g, b, G_FORM: tl.constexpr, B1_FORM: tl.constexpr):
    """DIBE_BG (seed 001 eq 16, y = 0): ``(1-t) p^G (-log q)`` where ``p < 0.5``, else
    ``(1-t) (1-q^(1+B))^G (1+B) (-log q)``; ``yhat`` carries no gradient.

    Derivatives: ``p^G (p + G q (-log q))`` and, with ``v = 1 - q^(1+B)``,
    ``(1+B) (G v^G ((1+B) q^(1+B) p) / v (-log q) + v^G p)``.
    """
    yhat = p >= 0.5
    pg = _pow(p, g, G_FORM)
    v_rej = pg * nlq
    d_rej = pg * (p + g * q * nlq)
    b1 = 1.0 + b
    qb = _pow(q, b1, B1_FORM)
    v = tl.where(yhat, 1.0 - qb, 1.0)
    vg = _pow(v, g, G_FORM)
    v_alarm = b1 * vg * nlq
    d_alarm = b1 * (g * vg * (b1 * qb * p) / v * nlq + vg * p)
    return (1.0 - t) * tl.where(yhat, v_alarm, v_rej), (1.0 - t) * tl.where(yhat, d_alarm, d_rej)


@triton.jit
def _p_minus_t(p, q, t):
    """``p - t``, as ``(1 - t) - q`` where ``t > 1/2``: on a crack pixel ``p - 1`` would cancel (0
    from z = 17 on in float32), ``-q`` keeps every digit."""
    return tl.where(t > 0.5, (1.0 - t) - q, p - t)


@triton.jit
def _q_ss_fg(p, q, t):
    """SS_FG: ``(t-p)^2 t``; derivative ``2 (p-t) t p q``."""
    diff = _p_minus_t(p, q, t)
    return diff * diff * t, 2.0 * diff * t * p * q


@triton.jit
def _q_ss_bg(p, q, t):
    """SS_BG: ``(t-p)^2 (1-t)``; derivative ``2 (p-t) (1-t) p q``."""
    diff = _p_minus_t(p, q, t)
    return diff * diff * (1.0 - t), 2.0 * diff * (1.0 - t) * p * q


@triton.jit
def _q_d_fp(p, q, t, d):
    """D_FP: ``d p (1-t)``; derivative ``d (1-t) p q``."""
    return d * p * (1.0 - t), d * (1.0 - t) * p * q


@triton.jit
def _q_fp(p, q, t):
    """FP: ``p (1-t)``; derivative ``(1-t) p q``."""
    nt = 1.0 - t
    return p * nt, nt * p * q


@triton.jit
def _q_fn(p, q, t):
    """FN: ``q t`` (``q = 1 - p``, no cancellation); derivative ``-t p q``."""
    return q * t, -(t * p * q)


@triton.jit
def _q_tn(p, q, t):
    """TN: ``q (1-t)``; derivative ``-(1-t) p q``."""
    nt = 1.0 - t
    return q * nt, -(nt * p * q)


@triton.jit
def _q_d_sqerr(p, q, t, d):
    """D_SQERR: ``d (p-t)^2``; derivative ``2 d (p-t) p q``."""
    diff = _p_minus_t(p, q, t)
    return d * diff * diff, 2.0 * d * diff * p * q


@triton.jit
def _emit(
    out_ptr, g, tile, n_tiles, value, mask, offs, inb,
    K: tl.constexpr, COL: tl.constexpr, ATOMIC: tl.constexpr, PER_ELEMENT: tl.constexpr,
):  # fmt: skip
    """Sum ``value`` over the tile's valid lanes into column ``COL`` of its partial row (or atomically).

    ``PER_ELEMENT``: every element is its own group; store ``value`` itself in row ``offs``.
    """
    if PER_ELEMENT:
        tl.store(out_ptr + offs * K + COL, tl.where(mask, value, 0.0), mask=inb)
    elif ATOMIC:
        tl.atomic_add(out_ptr + g * K + COL, tl.sum(tl.where(mask, value, 0.0), axis=0))
    else:
        tl.store(out_ptr + (g * n_tiles + tile) * K + COL, tl.sum(tl.where(mask, value, 0.0), axis=0))


@triton.jit
def _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL: tl.constexpr, PER_ELEMENT: tl.constexpr):
    """Coefficient ``dL/dS[g, COL]`` of the group (``PER_ELEMENT``: of each element ``offs``)."""
    if PER_ELEMENT:
        coef = tl.load(c_ptr + offs * c_sg + COL * c_sk, mask=inb, other=0.0)
    else:
        coef = tl.load(c_ptr + g * c_sg + COL * c_sk)
    return coef


@triton.jit
def _tile_coords(C, N, n_tiles, BLOCK: tl.constexpr):
    """This program's tile of group ``g = pid // n_tiles``: ``(g, tile, b, c, offs, inb)``.

    ``inb``: the lanes inside the row. Apart from :func:`_load_tile` on purpose: where a kernel
    stores must not derive from a call that takes the input pointers, or torch.compile's
    analysis of the kernel (which follows a call's results back to all its arguments) takes
    every input for written, and then copies each one before every launch.
    """
    pid = tl.program_id(0).to(tl.int64)
    g = pid // n_tiles
    tile = pid % n_tiles
    offs = tile * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    return g, tile, g // C, g % C, offs, offs < N


@triton.jit
def _load_tile(
    z_ptr, t_ptr, valid_ptr, weight_ptr, dist_ptr, b, c, offs, inb,
    z_sb, z_sc, t_sb, t_sc, v_sb, v_sc, w_sb, w_sc, d_sb, d_sc,
    HAS_VALID: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_DIST: tl.constexpr, FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """The tile's operands ``(mask, z, t, w, d)`` at ``offs`` of image ``b``, channel ``c``.

    ``mask``: the lanes ``inb`` that are also valid. ``z, t, w, d`` are in the compute dtype
    (float64 for ``FP64``, else float32), masked lanes 0; ``w`` is 1 and ``d`` is 0 when absent
    (their constexpr switch is off, so they are never read, and the constant ``w`` folds out of
    ``v * w``).
    """
    mask = inb
    if HAS_VALID:
        ok = tl.load(valid_ptr + b * v_sb + c * v_sc + offs, mask=inb, other=0)
        mask = mask & (ok != 0)
    if FP64:
        z = tl.load(z_ptr + b * z_sb + c * z_sc + offs, mask=mask, other=0.0).to(tl.float64)
        t = tl.load(t_ptr + b * t_sb + c * t_sc + offs, mask=mask, other=0).to(tl.float64)
    else:
        z = tl.load(z_ptr + b * z_sb + c * z_sc + offs, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + b * t_sb + c * t_sc + offs, mask=mask, other=0).to(tl.float32)
    if HAS_WEIGHT:
        w = tl.load(weight_ptr + b * w_sb + c * w_sc + offs, mask=mask, other=0.0).to(z.dtype)
    else:
        w = tl.full([BLOCK], 1.0, z.dtype)
    if HAS_DIST:
        d = tl.load(dist_ptr + b * d_sb + c * d_sc + offs, mask=mask, other=0.0).to(z.dtype)
    else:
        d = tl.zeros([BLOCK], z.dtype)
    return mask, z, t, w, d


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _fused_loss_forward_kernel(
    z_ptr, t_ptr, valid_ptr, weight_ptr, dist_ptr, params_ptr, out_ptr,
    C, N, n_tiles,
    z_sb, z_sc, t_sb, t_sc, v_sb, v_sc, w_sb, w_sc, d_sb, d_sc,
    K: tl.constexpr,
    COL_TP: tl.constexpr, COL_SUM_P: tl.constexpr, COL_SUM_T: tl.constexpr, COL_SUM_PP: tl.constexpr,
    COL_SUM_TT: tl.constexpr, COL_COUNT: tl.constexpr, COL_FG_CE: tl.constexpr, COL_BG_CE: tl.constexpr,
    COL_EL_FG: tl.constexpr, COL_EL_BG: tl.constexpr, COL_DIBE_FG: tl.constexpr, COL_DIBE_BG: tl.constexpr,
    COL_SS_FG: tl.constexpr, COL_SS_BG: tl.constexpr, COL_D_FP: tl.constexpr, COL_D_SQERR: tl.constexpr,
    COL_FP: tl.constexpr, COL_FN: tl.constexpr, COL_TN: tl.constexpr,
    G_FG_FORM: tl.constexpr, HAS_MARGIN: tl.constexpr, G_BG_FORM: tl.constexpr, GCE_FORM: tl.constexpr,
    DIBE_G_FORM: tl.constexpr, DIBE_A1_FORM: tl.constexpr, DIBE_B1_FORM: tl.constexpr,
    TINY: tl.constexpr,
    HAS_VALID: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_DIST: tl.constexpr,
    FP64: tl.constexpr, ATOMIC: tl.constexpr, PER_ELEMENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Per-tile sums of the enabled quantities: ``out[g, tile, COL_<q>]`` (or ``out[g, COL_<q>]``).

    ``PER_ELEMENT`` (a single group whose every element is its own group, ``reduction="none"``):
    ``out[n, COL_<q>]`` is the quantity of element ``n`` itself.
    """
    g, tile, b, c, offs, inb = _tile_coords(C, N, n_tiles, BLOCK)
    mask, z, t, w, d = _load_tile(
        z_ptr, t_ptr, valid_ptr, weight_ptr, dist_ptr, b, c, offs, inb,
        z_sb, z_sc, t_sb, t_sc, v_sb, v_sc, w_sb, w_sc, d_sb, d_sc,
        HAS_VALID, HAS_WEIGHT, HAS_DIST, FP64, BLOCK,
    )  # fmt: skip

    p, q, nlp, nlq = _sigmoid_forms(z)

    if COL_TP >= 0:
        v, _ = _q_tp(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_TP, ATOMIC, PER_ELEMENT)
    if COL_SUM_P >= 0:
        v, _ = _q_sum_p(p, q)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_SUM_P, ATOMIC, PER_ELEMENT)
    if COL_SUM_T >= 0:
        _emit(out_ptr, g, tile, n_tiles, t, mask, offs, inb, K, COL_SUM_T, ATOMIC, PER_ELEMENT)
    if COL_SUM_PP >= 0:
        v, _ = _q_sum_pp(p, q)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_SUM_PP, ATOMIC, PER_ELEMENT)
    if COL_SUM_TT >= 0:
        _emit(out_ptr, g, tile, n_tiles, t * t, mask, offs, inb, K, COL_SUM_TT, ATOMIC, PER_ELEMENT)
    if COL_COUNT >= 0:
        _emit(out_ptr, g, tile, n_tiles, tl.where(mask, 1.0, 0.0).to(z.dtype), mask, offs, inb, K, COL_COUNT, ATOMIC, PER_ELEMENT)
    if COL_FG_CE >= 0:
        if HAS_MARGIN:
            pm, qm, nlpm, _ = _sigmoid_forms(z - _param(params_ptr, P_M, FP64))
            v, _ = _q_fg_ce(p, q, qm, nlpm, t, _param(params_ptr, P_G_FG, FP64), G_FG_FORM)
        else:
            v, _ = _q_fg_ce(p, q, q, nlp, t, _param(params_ptr, P_G_FG, FP64), G_FG_FORM)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_FG_CE, ATOMIC, PER_ELEMENT)
    if COL_BG_CE >= 0:
        v, _ = _q_bg_ce(p, q, nlq, t, _param(params_ptr, P_G_BG, FP64), G_BG_FORM)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_BG_CE, ATOMIC, PER_ELEMENT)
    if COL_EL_FG >= 0:
        v, _ = _q_el_fg(q, nlp, z, t, _param(params_ptr, P_GCE, FP64), GCE_FORM, TINY)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_EL_FG, ATOMIC, PER_ELEMENT)
    if COL_EL_BG >= 0:
        v, _ = _q_el_bg(p, nlq, z, t, _param(params_ptr, P_GCE, FP64), GCE_FORM, TINY)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_EL_BG, ATOMIC, PER_ELEMENT)
    if COL_DIBE_FG >= 0:
        dibe_g, dibe_a = _param(params_ptr, P_DIBE_G, FP64), _param(params_ptr, P_DIBE_A, FP64)
        v, _ = _q_dibe_fg(p, q, nlp, t, dibe_g, dibe_a, DIBE_G_FORM, DIBE_A1_FORM)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_DIBE_FG, ATOMIC, PER_ELEMENT)
    if COL_DIBE_BG >= 0:
        dibe_g, dibe_b = _param(params_ptr, P_DIBE_G, FP64), _param(params_ptr, P_DIBE_B, FP64)
        v, _ = _q_dibe_bg(p, q, nlq, t, dibe_g, dibe_b, DIBE_G_FORM, DIBE_B1_FORM)
        _emit(out_ptr, g, tile, n_tiles, v * w, mask, offs, inb, K, COL_DIBE_BG, ATOMIC, PER_ELEMENT)
    if COL_SS_FG >= 0:
        v, _ = _q_ss_fg(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_SS_FG, ATOMIC, PER_ELEMENT)
    if COL_SS_BG >= 0:
        v, _ = _q_ss_bg(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_SS_BG, ATOMIC, PER_ELEMENT)
    if COL_D_FP >= 0:
        v, _ = _q_d_fp(p, q, t, d)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_D_FP, ATOMIC, PER_ELEMENT)
    if COL_D_SQERR >= 0:
        v, _ = _q_d_sqerr(p, q, t, d)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_D_SQERR, ATOMIC, PER_ELEMENT)
    if COL_FP >= 0:
        v, _ = _q_fp(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_FP, ATOMIC, PER_ELEMENT)
    if COL_FN >= 0:
        v, _ = _q_fn(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_FN, ATOMIC, PER_ELEMENT)
    if COL_TN >= 0:
        v, _ = _q_tn(p, q, t)
        _emit(out_ptr, g, tile, n_tiles, v, mask, offs, inb, K, COL_TN, ATOMIC, PER_ELEMENT)


@triton.jit
def _fused_loss_backward_kernel(
    z_ptr, t_ptr, valid_ptr, weight_ptr, dist_ptr, params_ptr, c_ptr, grad_ptr,
    C, N, n_tiles,
    z_sb, z_sc, t_sb, t_sc, v_sb, v_sc, w_sb, w_sc, d_sb, d_sc, c_sg, c_sk,
    COL_TP: tl.constexpr, COL_SUM_P: tl.constexpr, COL_SUM_PP: tl.constexpr,
    COL_FG_CE: tl.constexpr, COL_BG_CE: tl.constexpr,
    COL_EL_FG: tl.constexpr, COL_EL_BG: tl.constexpr, COL_DIBE_FG: tl.constexpr, COL_DIBE_BG: tl.constexpr,
    COL_SS_FG: tl.constexpr, COL_SS_BG: tl.constexpr, COL_D_FP: tl.constexpr, COL_D_SQERR: tl.constexpr,
    COL_FP: tl.constexpr, COL_FN: tl.constexpr, COL_TN: tl.constexpr,
    G_FG_FORM: tl.constexpr, HAS_MARGIN: tl.constexpr, G_BG_FORM: tl.constexpr, GCE_FORM: tl.constexpr,
    DIBE_G_FORM: tl.constexpr, DIBE_A1_FORM: tl.constexpr, DIBE_B1_FORM: tl.constexpr,
    TINY: tl.constexpr,
    HAS_VALID: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_DIST: tl.constexpr,
    FP64: tl.constexpr, PER_ELEMENT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``grad[g, n] = sum_k c[g, COL_k] ds_k/dz`` over the differentiable enabled quantities.

    ``PER_ELEMENT``: the coefficients are per element, ``c[n, COL_k]``.
    """
    g, tile, b, c, offs, inb = _tile_coords(C, N, n_tiles, BLOCK)
    mask, z, t, w, d = _load_tile(
        z_ptr, t_ptr, valid_ptr, weight_ptr, dist_ptr, b, c, offs, inb,
        z_sb, z_sc, t_sb, t_sc, v_sb, v_sc, w_sb, w_sc, d_sb, d_sc,
        HAS_VALID, HAS_WEIGHT, HAS_DIST, FP64, BLOCK,
    )  # fmt: skip

    p, q, nlp, nlq = _sigmoid_forms(z)
    acc = tl.zeros([BLOCK], dtype=z.dtype)

    if COL_TP >= 0:
        _, dv = _q_tp(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_TP, PER_ELEMENT).to(z.dtype) * dv
    if COL_SUM_P >= 0:
        _, dv = _q_sum_p(p, q)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_SUM_P, PER_ELEMENT).to(z.dtype) * dv
    if COL_SUM_PP >= 0:
        _, dv = _q_sum_pp(p, q)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_SUM_PP, PER_ELEMENT).to(z.dtype) * dv
    if COL_FG_CE >= 0:
        if HAS_MARGIN:
            pm, qm, nlpm, _ = _sigmoid_forms(z - _param(params_ptr, P_M, FP64))
            _, dv = _q_fg_ce(p, q, qm, nlpm, t, _param(params_ptr, P_G_FG, FP64), G_FG_FORM)
        else:
            _, dv = _q_fg_ce(p, q, q, nlp, t, _param(params_ptr, P_G_FG, FP64), G_FG_FORM)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_FG_CE, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_BG_CE >= 0:
        _, dv = _q_bg_ce(p, q, nlq, t, _param(params_ptr, P_G_BG, FP64), G_BG_FORM)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_BG_CE, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_EL_FG >= 0:
        _, dv = _q_el_fg(q, nlp, z, t, _param(params_ptr, P_GCE, FP64), GCE_FORM, TINY)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_EL_FG, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_EL_BG >= 0:
        _, dv = _q_el_bg(p, nlq, z, t, _param(params_ptr, P_GCE, FP64), GCE_FORM, TINY)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_EL_BG, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_DIBE_FG >= 0:
        dibe_g, dibe_a = _param(params_ptr, P_DIBE_G, FP64), _param(params_ptr, P_DIBE_A, FP64)
        _, dv = _q_dibe_fg(p, q, nlp, t, dibe_g, dibe_a, DIBE_G_FORM, DIBE_A1_FORM)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_DIBE_FG, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_DIBE_BG >= 0:
        dibe_g, dibe_b = _param(params_ptr, P_DIBE_G, FP64), _param(params_ptr, P_DIBE_B, FP64)
        _, dv = _q_dibe_bg(p, q, nlq, t, dibe_g, dibe_b, DIBE_G_FORM, DIBE_B1_FORM)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_DIBE_BG, PER_ELEMENT).to(z.dtype) * (dv * w)
    if COL_SS_FG >= 0:
        _, dv = _q_ss_fg(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_SS_FG, PER_ELEMENT).to(z.dtype) * dv
    if COL_SS_BG >= 0:
        _, dv = _q_ss_bg(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_SS_BG, PER_ELEMENT).to(z.dtype) * dv
    if COL_D_FP >= 0:
        _, dv = _q_d_fp(p, q, t, d)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_D_FP, PER_ELEMENT).to(z.dtype) * dv
    if COL_D_SQERR >= 0:
        _, dv = _q_d_sqerr(p, q, t, d)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_D_SQERR, PER_ELEMENT).to(z.dtype) * dv
    if COL_FP >= 0:
        _, dv = _q_fp(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_FP, PER_ELEMENT).to(z.dtype) * dv
    if COL_FN >= 0:
        _, dv = _q_fn(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_FN, PER_ELEMENT).to(z.dtype) * dv
    if COL_TN >= 0:
        _, dv = _q_tn(p, q, t)
        acc += _coef(c_ptr, g, offs, inb, c_sg, c_sk, COL_TN, PER_ELEMENT).to(z.dtype) * dv

    acc = tl.where(mask, acc, 0.0)
    tl.store(grad_ptr + g * N + offs, acc.to(grad_ptr.dtype.element_ty), mask=inb)


@triton.jit
def _reduce_partials_kernel(part_ptr, out_ptr, n_tiles, K: tl.constexpr, KP: tl.constexpr, BLOCK_T: tl.constexpr):
    """``out[g, :] = sum_tile part[g, tile, :]`` in a fixed order (one program per group)."""
    g = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_T)
    cols = tl.arange(0, KP)
    base = part_ptr + g * n_tiles * K
    acc = tl.zeros([BLOCK_T, KP], dtype=out_ptr.dtype.element_ty)
    for start in range(0, n_tiles, BLOCK_T):
        r = start + rows
        m = (r[:, None] < n_tiles) & (cols[None, :] < K)
        acc += tl.load(base + r[:, None].to(tl.int64) * K + cols[None, :], mask=m, other=0.0)
    tl.store(out_ptr + g * K + cols, tl.sum(acc, axis=0), mask=cols < K)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

QUANTITY_NAMES = tuple(q.name for q in Quantity)
ZERO_DERIVATIVE = frozenset({Quantity.SUM_T, Quantity.SUM_TT, Quantity.COUNT})
NEEDS_DISTANCE = frozenset({Quantity.D_FP, Quantity.D_SQERR})
REDUCE_BLOCK_T = 64


def normalize_quantities(quantities: Sequence[int]) -> tuple[int, ...]:
    """The quantity ids as a tuple of ints; ``ValueError`` unless they are a non-empty list of valid ids."""
    if isinstance(quantities, (int, Quantity)) or not isinstance(quantities, Sequence):
        raise TypeError(f"quantities must be a sequence of quantity ids (0-{NUM_QUANTITIES - 1}); got {quantities!r}")
    out = []
    for k in quantities:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= int(k) < NUM_QUANTITIES:
            raise ValueError(f"quantities must hold quantity ids 0-{NUM_QUANTITIES - 1} (fastseg.engine.spec.Quantity); got {k!r}")
        out.append(int(k))
    if not out:
        raise ValueError("quantities must not be empty")
    return tuple(out)


def column_constexprs(columns: dict[int, int], names: Sequence[str] = QUANTITY_NAMES) -> dict[str, int]:
    """``{"COL_<NAME>": column or -1}`` for the quantity names a kernel takes."""
    return {f"COL_{name}": columns.get(int(Quantity[name]), -1) for name in names}


FORWARD_COLUMN_NAMES = QUANTITY_NAMES
BACKWARD_COLUMN_NAMES = tuple(q.name for q in Quantity if q not in ZERO_DERIVATIVE)


def _forms(quantities: Sequence[int], params: "TermParams | KernelParams") -> dict:
    return params.forms if isinstance(params, KernelParams) else kernel_forms(quantities, params)


def _kernel_params(quantities: Sequence[int], params: "TermParams | KernelParams", z: torch.Tensor) -> KernelParams:
    kp = KernelParams.of(quantities, params, z.device)
    v = kp.values
    if not isinstance(v, torch.Tensor) or v.dtype != torch.float64 or tuple(v.shape) != (NUM_PARAMS,):
        raise TypeError(f"KernelParams.values must be a float64 tensor of shape ({NUM_PARAMS},); got {v!r}")
    if v.device != z.device:
        raise ValueError(f"KernelParams.values is on {v.device} but z is on {z.device}")
    return kp


def forward_constexprs(
    quantities: Sequence[int],
    params: "TermParams | KernelParams",
    *,
    fp64: bool,
    has_valid: bool,
    has_weight: bool,
    has_dist: bool,
    atomic: bool,
    block: int,
    per_element: bool = False,
) -> dict:
    """Every constexpr of :func:`_fused_loss_forward_kernel` (shared with the compile gate).

    ``quantities`` must be distinct: column ``j`` of the output is ``quantities[j]``.
    """
    columns = {k: j for j, k in enumerate(quantities)}
    return {
        "K": len(quantities),
        **column_constexprs(columns, FORWARD_COLUMN_NAMES),
        **_forms(quantities, params),
        "TINY": smallest_normal(torch.float64 if fp64 else torch.float32),
        "HAS_VALID": bool(has_valid),
        "HAS_WEIGHT": bool(has_weight and set(quantities) & WEIGHTED),
        "HAS_DIST": bool(has_dist and set(quantities) & NEEDS_DISTANCE),
        "FP64": bool(fp64),
        "ATOMIC": bool(atomic) and not per_element,
        "PER_ELEMENT": bool(per_element),
        "BLOCK": int(block),
    }


def backward_constexprs(
    quantities: Sequence[int],
    params: "TermParams | KernelParams",
    *,
    fp64: bool,
    has_valid: bool,
    has_weight: bool,
    has_dist: bool,
    block: int,
    per_element: bool = False,
) -> dict:
    """Every constexpr of :func:`_fused_loss_backward_kernel`; ``quantities[j]`` reads coefficient column j."""
    columns = {k: j for j, k in enumerate(quantities) if k not in ZERO_DERIVATIVE}
    diff = [k for k in quantities if k not in ZERO_DERIVATIVE]
    return {
        **column_constexprs(columns, BACKWARD_COLUMN_NAMES),
        **_forms(diff, params),
        "TINY": smallest_normal(torch.float64 if fp64 else torch.float32),
        "HAS_VALID": bool(has_valid),
        "HAS_WEIGHT": bool(has_weight and set(diff) & WEIGHTED),
        "HAS_DIST": bool(has_dist and set(diff) & NEEDS_DISTANCE),
        "FP64": bool(fp64),
        "PER_ELEMENT": bool(per_element),
        "BLOCK": int(block),
    }


def _check_float(name: str, x, shape) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be None or a floating tensor; got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (float16/bfloat16/float32/float64); got {x.dtype}")
    return _broadcast(name, x, shape)


def _broadcast(name: str, x: torch.Tensor, shape) -> torch.Tensor:
    try:
        return as_kernel_operand(x, shape)
    except RuntimeError as err:
        raise ValueError(f"{name} must have (or broadcast to) the logits' shape {tuple(shape)}; got {tuple(x.shape)}") from err


def _operands(z, t, valid, weight, distance, quantities):
    """Checked kernel operands ``(z, t, valid, weight, distance)``; absent ones are ``None``."""
    if not isinstance(z, torch.Tensor) or z.dtype not in FLOAT_DTYPES:
        raise TypeError(f"z must be a float16/bfloat16/float32/float64 tensor; got {getattr(z, 'dtype', type(z).__name__)}")
    if z.ndim != 3:
        raise ValueError(f"z must be [B, C, N] (flattened spatial); got shape {tuple(z.shape)}")
    shape = z.shape
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a tensor; got {type(t).__name__}")
    if t.dtype not in (torch.bool, torch.uint8) + FLOAT_DTYPES:
        raise TypeError(f"t must be bool, uint8 or floating (soft labels); got {t.dtype}")
    t = _broadcast("t", t, shape)
    if valid is not None:
        if not isinstance(valid, torch.Tensor) or valid.dtype not in (torch.bool, torch.uint8):
            raise TypeError(f"valid must be None or a bool/uint8 tensor; got {getattr(valid, 'dtype', type(valid).__name__)}")
        valid = _broadcast("valid", valid, shape)
    weight = _check_float("weight", weight, shape)
    distance = _check_float("distance", distance, shape)
    if distance is None and set(quantities) & NEEDS_DISTANCE:
        raise ValueError("distance is required by the quantities D_FP and D_SQERR")
    z = as_kernel_operand(z, shape)
    for name, x in (("t", t), ("valid", valid), ("weight", weight), ("distance", distance)):
        if x is not None and x.device != z.device:
            raise ValueError(f"{name} is on {x.device} but z is on {z.device}")
    return z, t, valid, weight, distance


def _per_element(operands):
    """``[B, C, 1]`` operands (every element its own group) as one ``[1, 1, B*C]`` row.

    ``reduction="none"`` of a pointwise loss arrives like this; launching one program per
    one-element group would waste all but one lane of every program, so the kernels instead walk
    the row in full tiles and keep one output row (or coefficient row) per element.
    """
    B, C, _ = operands[0].shape
    shape = torch.Size((1, 1, B * C))
    return tuple(None if x is None else as_kernel_operand(x.reshape(shape), shape) for x in operands)


def _strides(z, t, valid, weight, distance) -> list[int]:
    out = []
    for x in (z, t, valid, weight, distance):
        out.extend(group_strides(x) if x is not None else (0, 0))
    return out


def _launch(kernel, launch_wrapper: Callable | None):
    return kernel if launch_wrapper is None else launch_wrapper(kernel)


@launched_on_input_device
def fused_loss_forward(
    z: torch.Tensor,
    t: torch.Tensor,
    *,
    quantities: tuple[int, ...],
    params: "TermParams | KernelParams",
    valid: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    distance: torch.Tensor | None = None,
    deterministic: bool = True,
    launch_wrapper: Callable | None = None,
) -> torch.Tensor:
    """Per-group sums ``S[b*C + c, j] = sum_n valid * s_{quantities[j]}(z, t, d, w)`` of ``[B, C, N]`` inputs.

    Returns ``[B*C, len(quantities)]`` in float32 (float64 when ``z`` is float64). ``t`` is
    bool/uint8/float (soft labels); ``valid`` bool/uint8 (nonzero = counted); ``weight`` scales
    FG_CE, BG_CE, EL_* and DIBE_*; ``distance`` is the ``d`` of D_FP and D_SQERR. Every operand may
    be any broadcastable, strided view (copied only when its last dim is not unit-stride).
    ``deterministic=False`` accumulates tiles with atomics (faster for huge images, not bitwise
    repeatable). ``params``: :class:`TermParams`, or :class:`KernelParams` built already (the
    ``triton_op`` path builds them in the caller's graph). ``launch_wrapper`` (e.g.
    ``torch.library.wrap_triton``) wraps each kernel before its ``kernel[grid](...)`` launch.
    """
    quantities = normalize_quantities(quantities)
    unique = tuple(dict.fromkeys(quantities))
    z, t, valid, weight, distance = _operands(z, t, valid, weight, distance, unique)
    kp = _kernel_params(unique, params, z)
    B, C, N = z.shape
    G = B * C
    acc_dtype = accumulation_dtype(z.dtype)
    K = len(unique)
    per_element = N == 1 and G > 1
    if per_element:
        z, t, valid, weight, distance = _per_element((z, t, valid, weight, distance))
        B, C, N = z.shape
    block, warps = block_and_warps(N)
    n_tiles = max(1, triton.cdiv(N, block))
    constexprs = forward_constexprs(
        unique,
        kp,
        fp64=acc_dtype == torch.float64,
        has_valid=valid is not None,
        has_weight=weight is not None,
        has_dist=distance is not None,
        atomic=not deterministic,
        block=block,
        per_element=per_element,
    )
    if G == 0:
        sums = torch.zeros((0, K), dtype=acc_dtype, device=z.device)
    elif per_element:
        sums = torch.empty((G, K), dtype=acc_dtype, device=z.device)
        _launch(_fused_loss_forward_kernel, launch_wrapper)[(n_tiles,)](
            z, t, _or(valid, z), _or(weight, z), _or(distance, z), kp.values, sums,
            C, N, n_tiles, *_strides(z, t, valid, weight, distance), **constexprs, num_warps=warps,
        )  # fmt: skip
    else:
        if deterministic and n_tiles > 1:
            out = torch.empty((G, n_tiles, K), dtype=acc_dtype, device=z.device)
        elif deterministic:
            out = torch.empty((G, K), dtype=acc_dtype, device=z.device)
        else:
            out = torch.zeros((G, K), dtype=acc_dtype, device=z.device)
        _launch(_fused_loss_forward_kernel, launch_wrapper)[(G * n_tiles,)](
            z, t, _or(valid, z), _or(weight, z), _or(distance, z), kp.values, out,
            C, N, n_tiles, *_strides(z, t, valid, weight, distance), **constexprs, num_warps=warps,
        )  # fmt: skip
        if deterministic and n_tiles > 1:
            sums = torch.empty((G, K), dtype=acc_dtype, device=z.device)
            _launch(_reduce_partials_kernel, launch_wrapper)[(G,)](
                out, sums, n_tiles, K=K, KP=triton.next_power_of_2(K), BLOCK_T=REDUCE_BLOCK_T, num_warps=4
            )
        else:
            sums = out
    if unique != quantities:
        sums = torch.stack([sums[:, unique.index(k)] for k in quantities], dim=1)
    return sums


@launched_on_input_device
def fused_loss_backward(
    z: torch.Tensor,
    t: torch.Tensor,
    coeffs: torch.Tensor,
    *,
    quantities: tuple[int, ...],
    params: "TermParams | KernelParams",
    valid: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    distance: torch.Tensor | None = None,
    launch_wrapper: Callable | None = None,
) -> torch.Tensor:
    """``dL/dz[b, c, n] = sum_j coeffs[b*C + c, j] * ds_{quantities[j]}/dz`` as a contiguous tensor in z's dtype.

    ``coeffs`` is ``[B*C, len(quantities)]`` (any float dtype and strides; ``dL/dS`` already
    scaled by the upstream gradient). Ignored pixels get 0. The other arguments are as in
    :func:`fused_loss_forward`.
    """
    quantities = normalize_quantities(quantities)
    unique = tuple(dict.fromkeys(quantities))
    z, t, valid, weight, distance = _operands(z, t, valid, weight, distance, unique)
    kp = _kernel_params(unique, params, z)
    B, C, N = z.shape
    G = B * C
    if not isinstance(coeffs, torch.Tensor) or coeffs.dtype not in FLOAT_DTYPES:
        raise TypeError(f"coeffs must be a floating tensor; got {getattr(coeffs, 'dtype', type(coeffs).__name__)}")
    if tuple(coeffs.shape) != (G, len(quantities)):
        raise ValueError(f"coeffs must be [B*C, len(quantities)] = {(G, len(quantities))}; got {tuple(coeffs.shape)}")
    if coeffs.device != z.device:
        raise ValueError(f"coeffs is on {coeffs.device} but z is on {z.device}")
    if unique != quantities:  # a repeated quantity: its coefficients add up
        coeffs = torch.stack(
            [sum(coeffs[:, j] for j, k in enumerate(quantities) if k == u) for u in unique], dim=1
        )
    grad = torch.empty((B, C, N), dtype=z.dtype, device=z.device)
    if G == 0 or N == 0:
        return grad
    per_element = N == 1 and G > 1
    if per_element:
        z, t, valid, weight, distance = _per_element((z, t, valid, weight, distance))
        C, N = 1, G
    acc_dtype = accumulation_dtype(z.dtype)
    block, warps = block_and_warps(N)
    n_tiles = triton.cdiv(N, block)
    constexprs = backward_constexprs(
        unique,
        kp,
        fp64=acc_dtype == torch.float64,
        has_valid=valid is not None,
        has_weight=weight is not None,
        has_dist=distance is not None,
        block=block,
        per_element=per_element,
    )
    _launch(_fused_loss_backward_kernel, launch_wrapper)[((1 if per_element else G) * n_tiles,)](
        z, t, _or(valid, z), _or(weight, z), _or(distance, z), kp.values, coeffs, grad,
        C, N, n_tiles, *_strides(z, t, valid, weight, distance), coeffs.stride(0), coeffs.stride(1),
        **constexprs, num_warps=warps,
    )  # fmt: skip
    return grad


def _or(x: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """An absent operand is passed as ``fallback`` (never read: its constexpr switch is off)."""
    return fallback if x is None else x
