"""Exact squared Euclidean distance transform in Triton (Felzenszwalb and Huttenlocher 2012).

The squared EDT is separable: ``D(x) = min_q |x - q|^2`` over the target set equals a sequence of
1-D transforms, one per axis, each computing ``d(x) = min_q (pos(x) - pos(q))^2 + f(q)`` over a
line, where ``f`` is the previous axis's result (``0`` on target pixels and ``+inf`` elsewhere for
the first axis). The order of the axes does not change the result, so the launches are arranged
for the memory system:

1. **The contiguous (last) axis first, as a scan** (:func:`_edt_sweep_kernel`). On a binary line
   the 1-D transform is the squared gap to the nearest target pixel, ``min(x - left(x),
   right(x) - x)^2``, where ``left`` is a running maximum of target indices and ``right`` a
   reversed running minimum: two ``tl.associative_scan`` over coalesced ``[lines, BLOCK_N]`` tiles,
   with the running value carried between tiles. No envelope, no scratch.
2. **Every other axis with the lower envelope** (:func:`_edt_envelope_kernel`): O(n) per line,
   a program owns ``BLOCK_LINES`` lines and walks them in lockstep (the pops of the envelope are
   a masked loop over lanes). These axes are strided, so consecutive lanes are consecutive
   addresses: the reads of ``f`` and the writes of the result are coalesced. The newest parabola
   of each lane's envelope (its vertex, height and left boundary) lives in registers, so a step
   that pops nothing loads nothing but ``f(q)`` (prefetched a step ahead) and the read-back loads
   only when it moves to the next parabola; vertices and boundaries are also written to a scratch
   buffer of ``lines x n`` for the pops and the read-back.

The envelope works in float64 (as the native CPU one does), so it is the exact envelope; results
are float32, exact for integer squared distances below ``2**24``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._utils import next_power_of_2

BIG: tl.constexpr = tl.constexpr(1.0e30)  # "no target on this line yet"; squared distances never come near it
NO_INDEX: tl.constexpr = tl.constexpr(2**31 - 1)  # "no target to the right"


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _minimum(a, b):
    return tl.minimum(a, b)


@triton.jit
def _edt_sweep_kernel(mask_ptr, out_ptr, n_lines, n, spacing, BLOCK_LINES: tl.constexpr, BLOCK_N: tl.constexpr):
    """Squared distance along contiguous lines of a binary mask: ``(spacing * gap)^2`` or ``BIG``.

    ``gap(x) = min(x - left(x), right(x) - x)`` with ``left``/``right`` the nearest nonzero mask
    index at or before / at or after ``x`` on the line (running max / reversed running min).
    """
    pid = tl.program_id(0).to(tl.int64)
    lines = pid * BLOCK_LINES + tl.arange(0, BLOCK_LINES).to(tl.int64)
    row = (lines * n)[:, None]
    line_ok = (lines < n_lines)[:, None]
    cols = tl.arange(0, BLOCK_N)

    n_tiles = tl.cdiv(n, BLOCK_N)
    left_carry = tl.full([BLOCK_LINES], -1, tl.int32)
    for tile in range(0, n_tiles):
        idx = (tile * BLOCK_N + cols)[None, :]
        ok = line_ok & (idx < n)
        site = tl.load(mask_ptr + row + idx, mask=ok, other=0) != 0
        left = tl.associative_scan(tl.where(site, idx, -1), 1, _maximum)
        left = tl.maximum(left, left_carry[:, None])
        left_carry = tl.max(left, axis=1)
        gap = tl.where(left >= 0, (idx - left).to(tl.float32), BIG)
        tl.store(out_ptr + row + idx, gap, mask=ok)

    right_carry = tl.full([BLOCK_LINES], NO_INDEX, tl.int32)
    for tile in range(0, n_tiles):
        idx = ((n_tiles - 1 - tile) * BLOCK_N + cols)[None, :]
        ok = line_ok & (idx < n)
        site = tl.load(mask_ptr + row + idx, mask=ok, other=0) != 0
        right = tl.associative_scan(tl.where(site, idx, NO_INDEX), 1, _minimum, reverse=True)
        right = tl.minimum(right, right_carry[:, None])
        right_carry = tl.min(right, axis=1)
        gap = tl.load(out_ptr + row + idx, mask=ok, other=BIG)
        gap = tl.minimum(gap, tl.where(right < NO_INDEX, (right - idx).to(tl.float32), BIG))
        step = tl.where(gap < BIG, gap, 0.0) * spacing
        tl.store(out_ptr + row + idx, tl.where(gap < BIG, step * step, BIG), mask=ok)


@triton.jit
def _intersection(f_q, pos_q, f_v, pos_v):
    """Position where the parabolas rooted at ``q`` and ``v`` meet (all float64):
    ``((f_q - f_v) + (pos_q - pos_v) (pos_q + pos_v)) / (2 (pos_q - pos_v))``."""
    d = pos_q - pos_v
    return ((f_q - f_v) + d * (pos_q + pos_v)) / (2.0 * d)


@triton.jit
def _f_at(f_ptr, base, vertex, stride, mask):
    """``f`` at index ``vertex`` of each lane's line (a gather; only where the envelope changes)."""
    return tl.load(f_ptr + base + vertex * stride, mask=mask, other=0.0).to(tl.float64)


@triton.jit
def _edt_envelope_kernel(
    f_ptr,
    out_ptr,
    v_ptr,
    z_ptr,
    n_lines,
    n,
    inner,
    spacing,
    BLOCK_LINES: tl.constexpr,
):
    """Lower-envelope 1-D squared distance transform of ``BLOCK_LINES`` lines.

    Line ``l`` of a contiguous ``[outer, n, inner]`` view starts at
    ``(l // inner) * n * inner + l % inner`` and steps by ``inner``. Parabola ``k`` of a line's
    envelope has vertex ``v[k]`` (height ``f(v[k])``) and covers positions from ``z[k]`` on.

    Positions, heights and boundaries are float64, as in the native CPU envelope: with unit
    spacing every height is an integer and every boundary a rational with a denominator below
    ``2 n``, which float64 keeps apart, so the envelope is the exact one; the squared distance is
    rounded once, to the float32 output (exact below ``2**24``).
    """
    pid = tl.program_id(0).to(tl.int64)
    lines = pid * BLOCK_LINES + tl.arange(0, BLOCK_LINES).to(tl.int64)
    active = lines < n_lines
    lines = tl.where(active, lines, 0)
    stride = tl.zeros([BLOCK_LINES], tl.int64) + inner  # 64-bit offsets: images may exceed 2**31 pixels
    step = tl.zeros([BLOCK_LINES], tl.float64) + spacing
    base = (lines // stride) * (n * stride) + lines % stride
    scratch = lines * n

    # Build the envelope; (top_pos, top_f, top_z) mirror entry k, the newest parabola.
    k = tl.full([BLOCK_LINES], -1, tl.int32)
    top_pos = tl.zeros([BLOCK_LINES], tl.float64)
    top_f = tl.zeros([BLOCK_LINES], tl.float64)
    top_z = tl.full([BLOCK_LINES], -BIG, tl.float64)
    f_next = tl.load(f_ptr + base, mask=active, other=BIG)
    for q in range(0, n):
        f_here = f_next
        q_next = tl.full([BLOCK_LINES], q + 1, tl.int32)
        f_next = tl.load(f_ptr + base + q_next * stride, mask=active & (q_next < n), other=BIG)
        has_q = active & (f_here < BIG)
        fq = f_here.to(tl.float64)
        pos_q = q * step
        need = has_q & (k >= 0)
        s = _intersection(fq, pos_q, top_f, tl.where(need, top_pos, pos_q - 1.0))
        pop = need & (s <= top_z)
        while tl.max(pop.to(tl.int32), axis=0) > 0:
            k = tl.where(pop, k - 1, k)
            reload = pop & (k >= 0)
            vk = tl.load(v_ptr + scratch + k, mask=reload, other=0)
            top_pos = tl.where(reload, vk * step, top_pos)
            top_f = tl.where(reload, _f_at(f_ptr, base, vk, stride, reload), top_f)
            top_z = tl.where(reload, tl.load(z_ptr + scratch + k, mask=reload, other=-BIG), top_z)
            s = tl.where(reload, _intersection(fq, pos_q, top_f, tl.where(reload, top_pos, pos_q - 1.0)), s)
            pop = reload & (s <= top_z)
        k = tl.where(has_q, k + 1, k)
        boundary = tl.where(k == 0, -BIG, s)
        top_pos = tl.where(has_q, pos_q, top_pos)
        top_f = tl.where(has_q, fq, top_f)
        top_z = tl.where(has_q, boundary, top_z)
        tl.store(v_ptr + scratch + k, tl.full([BLOCK_LINES], q, tl.int32), mask=has_q)
        tl.store(z_ptr + scratch + k, boundary, mask=has_q)

    # Read the envelope back: for each x, the parabola whose interval holds pos(x).
    k_last = k
    found = active & (k_last >= 0)
    k = tl.zeros([BLOCK_LINES], tl.int32)
    vk = tl.load(v_ptr + scratch, mask=found, other=0)
    cur_pos = vk * step
    cur_f = _f_at(f_ptr, base, vk, stride, found)
    z_next = tl.load(z_ptr + scratch + 1, mask=found & (k_last >= 1), other=BIG)
    for q in range(0, n):
        pos_q = q * step
        advance = z_next < pos_q
        while tl.max(advance.to(tl.int32), axis=0) > 0:
            k = tl.where(advance, k + 1, k)
            vk = tl.load(v_ptr + scratch + k, mask=advance, other=0)
            cur_pos = tl.where(advance, vk * step, cur_pos)
            cur_f = tl.where(advance, _f_at(f_ptr, base, vk, stride, advance), cur_f)
            z_next = tl.where(advance, tl.load(z_ptr + scratch + k + 1, mask=advance & (k < k_last), other=BIG), z_next)
            advance = advance & (z_next < pos_q)
        dx = pos_q - cur_pos
        tl.store(out_ptr + base + q * stride, tl.where(found, dx * dx + cur_f, BIG).to(tl.float32), mask=active)


SWEEP_WARPS = 4
SWEEP_TILE = 1024
"""Elements of a sweep tile: 8 per thread at :data:`SWEEP_WARPS` warps (no spills on sm_80/sm_90:
``fastseg kernels --only edt``)."""


def sweep_blocks(n: int) -> tuple[int, int]:
    """``(BLOCK_LINES, BLOCK_N)`` of the sweep over lines of ``n`` pixels: a tile of
    :data:`SWEEP_TILE` elements holds several short lines, or part of a long one (the running
    values are carried from tile to tile)."""
    block_n = min(max(next_power_of_2(n), 16), SWEEP_TILE)
    return SWEEP_TILE // block_n, block_n


ENVELOPE_LINES = 32
"""Lines per program of the envelope: one warp, so the per-step "any lane still popping?" test is a
warp vote (no shared memory, no barrier), and the most programs to spread over the machine."""


def edt_squared(target: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """Squared EDT of every image of ``target`` (``[N, *spatial]``, nonzero = target set).

    Returns float32 of the same shape; pixels of an image without any target pixel hold ``inf``.
    ``spacing`` has one entry per spatial axis. One launch per axis, no host synchronisation.
    """
    if target.ndim < 2:
        raise ValueError(f"target must be [N, *spatial]; got shape {tuple(target.shape)}")
    spatial = target.shape[1:]
    if len(spacing) != len(spatial):
        raise ValueError(f"spacing needs {len(spatial)} entries; got {len(spacing)}")
    mask = (target if target.dtype in (torch.bool, torch.uint8) else target != 0).contiguous()
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    total = mask.numel()
    current = torch.empty(mask.shape, dtype=torch.float32, device=mask.device)
    n = spatial[-1]
    block_lines, block_n = sweep_blocks(n)
    grid = (triton.cdiv(total // n, block_lines),)
    _edt_sweep_kernel[grid](mask, current, total // n, n, float(spacing[-1]),
                            BLOCK_LINES=block_lines, BLOCK_N=block_n, num_warps=SWEEP_WARPS)

    other = torch.empty_like(current)
    scratch_v = scratch_z = None
    for axis in range(len(spatial) - 2, -1, -1):
        n = spatial[axis]
        inner = 1
        for size in spatial[axis + 1 :]:
            inner *= size
        n_lines = total // n
        if scratch_v is None:  # every axis has n_lines * n == total entries: one pair of buffers
            scratch_v = torch.empty(total, dtype=torch.int32, device=mask.device)
            scratch_z = torch.empty(total, dtype=torch.float64, device=mask.device)
        grid = (triton.cdiv(n_lines, ENVELOPE_LINES),)
        _edt_envelope_kernel[grid](current, other, scratch_v, scratch_z, n_lines, n, inner, float(spacing[axis]),
                                   BLOCK_LINES=ENVELOPE_LINES, num_warps=1)
        current, other = other, current
    return torch.where(current >= BIG.value, torch.full((), float("inf"), device=mask.device), current)
