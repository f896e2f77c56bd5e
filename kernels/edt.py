"""Exact squared Euclidean distance transform in Triton (Felzenszwalb and Huttenlocher 2012).

The squared EDT is separable: ``D(x) = min_q |x - q|^2`` over the target set equals a sequence of
1-D transforms, one per axis, each computing ``d(x) = min_q (pos(x) - pos(q))^2 + f(q)`` over a
line, where ``f`` is the previous axis's result (``0`` on target pixels and ``+inf`` elsewhere for
the first axis). The order of the axes does not change the result, so the launches are arranged
for the memory system:

1. **The contiguous (last) axis first, as a scan** (:func:`_edt_sweep_kernel`). On a binary line
   the 1-D transform is the squared gap to the nearest target pixel, ``min(x - left(x),
   right(x) - x)^2``, where ``left`` is a running maximum of target indices and ``right`` a
   running minimum from the line's end: two forward ``tl.associative_scan`` over coalesced
   ``[lines, BLOCK_N]`` tiles (the second over mirrored tiles), with the running value carried
   between tiles. No envelope, no scratch.
2. **Every other axis with the lower envelope** (:func:`_edt_envelope_kernel`): O(n) per line,
   a program owns ``BLOCK_LINES`` lines and walks them in lockstep (the pops of the envelope are
   a masked loop over lanes). These axes are strided, so consecutive lanes are consecutive
   addresses: the reads of ``f`` and the writes of the result are coalesced. The newest parabola
   of each lane's envelope (its vertex, height and left boundary) lives in registers, so a step
   that pops nothing loads nothing but ``f(q)`` (prefetched a step ahead) and the read-back loads
   only when it moves to the next parabola. Only the vertices are written to scratch (int32,
   ``lines x n``, lane-minor so that lanes at the same depth coalesce); a boundary is recomputed
   from its two parabolas when a pop or the read-back needs it.

Precision. The envelope works in float64 (as the native CPU one does), so it is the exact envelope
for unit spacing. The maps between passes and the result are float32 where every squared distance
an image can hold is an integer below ``2**24`` (unit spacing, squared diagonal below ``2**24``:
exact), else float64 (:func:`map_dtype`). The spacing reaches the kernels as the bits of its
float64 value (a Python float argument would be rounded to float32), and a distance along an axis is
``(x - v) * spacing`` squared, as SciPy forms it, so anisotropic results are float64 sums of SciPy's
own terms (equal to SciPy's in 2-D where both pick the same nearest pixel; 3-D adds the axes in
another order, within an ulp of float64).
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

from ._utils import launched_on_input_device, next_power_of_2

BIG: tl.constexpr = tl.constexpr(1.0e30)  # "no target on this line yet"; squared distances stay below it (fastseg.edt checks)
NO_INDEX: tl.constexpr = tl.constexpr(2**31 - 1)  # "no target to the right"


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _minimum(a, b):
    return tl.minimum(a, b)


@triton.jit
def _edt_sweep_kernel(mask_ptr, out_ptr, n_lines, n, spacing_bits, BLOCK_LINES: tl.constexpr, BLOCK_N: tl.constexpr):
    """Squared distance along contiguous lines of a binary mask: ``(gap * spacing)^2`` (float64
    maps: in float64 with ``spacing`` from its bits ``spacing_bits``; float32 maps have unit
    spacing: ``gap^2``) or ``BIG``.

    ``gap(x) = min(x - left(x), right(x) - x)`` with ``left``/``right`` the nearest nonzero mask
    index at or before / at or after ``x`` on the line: a running maximum over the tiles from the
    first, then a running minimum over the tiles from the last, each tile read mirrored so that
    both are forward scans (no ``reverse=True``, whose results have been reported wrong:
    triton-lang/triton#4362, #8412).
    """
    spacing = spacing_bits.to(tl.float64, bitcast=True)
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

    # The mirrored tiles below read gaps that other threads of this program stored above.
    tl.debug_barrier()
    right_carry = tl.full([BLOCK_LINES], NO_INDEX, tl.int32)
    for tile in range(0, n_tiles):
        idx = (n_tiles * BLOCK_N - 1 - tile * BLOCK_N - cols)[None, :]  # descending: the line's end first
        ok = line_ok & (idx < n)
        site = tl.load(mask_ptr + row + idx, mask=ok, other=0) != 0
        right = tl.associative_scan(tl.where(site, idx, NO_INDEX), 1, _minimum)
        right = tl.minimum(right, right_carry[:, None])
        right_carry = tl.min(right, axis=1)
        gap = tl.load(out_ptr + row + idx, mask=ok, other=BIG).to(tl.float32)  # an integer, or BIG
        gap = tl.minimum(gap, tl.where(right < NO_INDEX, (right - idx).to(tl.float32), BIG))
        if out_ptr.dtype.element_ty == tl.float32:  # float32 maps: unit spacing, exact squares
            step = tl.where(gap < BIG, gap, 0.0)
        else:
            step = tl.where(gap < BIG, gap, 0.0).to(tl.float64) * spacing
        tl.store(out_ptr + row + idx, tl.where(gap < BIG, step * step, BIG).to(out_ptr.dtype.element_ty), mask=ok)


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
    n_lines,
    n,
    inner,
    spacing_bits,
    BLOCK_LINES: tl.constexpr,
):
    """Lower-envelope 1-D squared distance transform of ``BLOCK_LINES`` lines.

    Line ``l`` of a contiguous ``[outer, n, inner]`` view starts at
    ``(l // inner) * n * inner + l % inner`` and steps by ``inner``. Parabola ``k`` of a line's
    envelope has vertex ``v[k]`` (height ``f(v[k])``) and covers positions from its boundary
    ``z[k]`` on, where it meets parabola ``k - 1``. Only the vertices go to scratch (entry ``k`` of
    lane ``j`` at ``(program * n + k) * BLOCK_LINES + j``: lanes at the same depth coalesce); the
    two parabolas a step compares (the newest and the one below it while building, the current and
    the next while reading back) are kept in registers, and a boundary is recomputed from its two
    parabolas whenever it is needed, by the same float64 expression that first produced it.

    Positions, heights and boundaries are float64, as in the native CPU envelope: with unit
    spacing every height is an integer and every boundary a rational with a denominator below
    ``2 n``, which float64 keeps apart, so the envelope is the exact one. The squared distance
    ``((x - v) spacing)^2 + f(v)`` is rounded once, to the output's dtype; ``spacing_bits`` holds
    the bits of the float64 spacing.
    """
    pid = tl.program_id(0).to(tl.int64)
    lane = tl.arange(0, BLOCK_LINES).to(tl.int64)
    lines = pid * BLOCK_LINES + lane
    active = lines < n_lines
    lines = tl.where(active, lines, 0)
    stride = tl.zeros([BLOCK_LINES], tl.int64) + inner  # 64-bit offsets: images may exceed 2**31 pixels
    step = tl.zeros([BLOCK_LINES], tl.float64) + spacing_bits.to(tl.float64, bitcast=True)
    base = (lines // stride) * (n * stride) + lines % stride
    scratch = pid * n * BLOCK_LINES + lane

    # Build the envelope: (top_pos, top_f, top_z) is entry k, (below_pos, below_f) entry k - 1.
    k = tl.full([BLOCK_LINES], -1, tl.int32)
    top_pos = tl.zeros([BLOCK_LINES], tl.float64)
    top_f = tl.zeros([BLOCK_LINES], tl.float64)
    top_z = tl.full([BLOCK_LINES], -BIG, tl.float64)
    below_pos = tl.zeros([BLOCK_LINES], tl.float64)
    below_f = tl.zeros([BLOCK_LINES], tl.float64)
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
        # Entry 0 is never popped (FH's z[0] = -inf): testing k, not only top_z = -BIG, for an
        # intersection below -BIG (a tiny spacing along this axis under huge heights) would pop it.
        pop = need & (k >= 1) & (s <= top_z)
        while tl.max(pop.to(tl.int32), axis=0) > 0:
            k = tl.where(pop, k - 1, k)
            top_pos = tl.where(pop, below_pos, top_pos)
            top_f = tl.where(pop, below_f, top_f)
            reload = pop & (k >= 1)
            vb = tl.load(v_ptr + scratch + (k - 1).to(tl.int64) * BLOCK_LINES, mask=reload, other=0)
            below_pos = tl.where(reload, vb * step, below_pos)
            below_f = tl.where(reload, _f_at(f_ptr, base, vb, stride, reload), below_f)
            z_top = _intersection(top_f, top_pos, below_f, tl.where(reload, below_pos, top_pos - 1.0))
            top_z = tl.where(pop, tl.where(reload, z_top, -BIG), top_z)
            s = tl.where(pop, _intersection(fq, pos_q, top_f, tl.where(pop, top_pos, pos_q - 1.0)), s)
            pop = pop & (k >= 1) & (s <= top_z)
        k = tl.where(has_q, k + 1, k)
        below_pos = tl.where(has_q, top_pos, below_pos)
        below_f = tl.where(has_q, top_f, below_f)
        top_pos = tl.where(has_q, pos_q, top_pos)
        top_f = tl.where(has_q, fq, top_f)
        top_z = tl.where(has_q, tl.where(k == 0, -BIG, s), top_z)
        tl.store(v_ptr + scratch + k.to(tl.int64) * BLOCK_LINES, tl.full([BLOCK_LINES], q, tl.int32), mask=has_q)

    # Read the envelope back: for each x, the parabola whose interval holds pos(x); (cur_*) is
    # entry k, (next_*) entry k + 1, which starts at z_next.
    k_last = k
    found = active & (k_last >= 0)
    k = tl.zeros([BLOCK_LINES], tl.int32)
    cur_v = tl.load(v_ptr + scratch, mask=found, other=0)
    cur_pos = cur_v * step
    cur_f = _f_at(f_ptr, base, cur_v, stride, found)
    has_next = found & (k_last >= 1)
    next_v = tl.load(v_ptr + scratch + BLOCK_LINES, mask=has_next, other=0)
    next_pos = next_v * step
    next_f = _f_at(f_ptr, base, next_v, stride, has_next)
    z_next = tl.where(has_next, _intersection(next_f, next_pos, cur_f, tl.where(has_next, cur_pos, next_pos - 1.0)), BIG)
    for q in range(0, n):
        pos_q = q * step
        advance = z_next < pos_q
        while tl.max(advance.to(tl.int32), axis=0) > 0:
            k = tl.where(advance, k + 1, k)
            cur_v = tl.where(advance, next_v, cur_v)
            cur_pos = tl.where(advance, next_pos, cur_pos)
            cur_f = tl.where(advance, next_f, cur_f)
            more = advance & (k < k_last)
            vn = tl.load(v_ptr + scratch + (k + 1).to(tl.int64) * BLOCK_LINES, mask=more, other=0)
            next_v = tl.where(more, vn, next_v)
            next_pos = tl.where(more, vn * step, next_pos)
            next_f = tl.where(more, _f_at(f_ptr, base, vn, stride, more), next_f)
            z_more = _intersection(next_f, next_pos, cur_f, tl.where(more, cur_pos, next_pos - 1.0))
            z_next = tl.where(advance, tl.where(more, z_more, BIG), z_next)
            advance = advance & (z_next < pos_q)
        dx = (q - cur_v).to(tl.float64) * step
        tl.store(out_ptr + base + q * stride, tl.where(found, dx * dx + cur_f, BIG).to(out_ptr.dtype.element_ty), mask=active)


#: Launch options of both EDT kernels: no fused multiply-add, so every product and sum is rounded
#: as written (as SciPy, the CPU paths and the interpreter round them), and a boundary recomputed
#: later is the same float64 number as when it was first computed. Triton fuses by default.
EXACT_ROUNDING = {"enable_fp_fusion": False}

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


def map_dtype(spatial: tuple[int, ...], spacing: tuple[float, ...]) -> torch.dtype:
    """The dtype of the maps :func:`edt_squared` computes: float32 where every squared distance an
    image of ``spatial`` can hold is an integer below ``2**24`` (unit spacing and
    ``sum((n_i - 1)^2) < 2**24``, so float32 holds them exactly), float64 otherwise."""
    integers = all(s == 1.0 for s in spacing)
    return torch.float32 if integers and sum((n - 1) ** 2 for n in spatial) < 2**24 else torch.float64


def float64_bits(value: float) -> int:
    """The bits of ``value`` as a float64, as an int64 (a kernel bitcasts them back): Triton passes
    a Python float as float32, which would round an anisotropic spacing such as 0.1."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


@launched_on_input_device
def edt_squared(target: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """Squared EDT of every image of ``target`` (``[N, *spatial]``, nonzero = target set).

    Returns a tensor of ``target``'s shape in :func:`map_dtype` (float32 when exact, else float64);
    pixels of an image without any target pixel hold ``inf``. ``spacing`` has one positive entry
    per spatial axis; squared distances must stay below ``BIG`` (1e30). One launch per axis, no
    host synchronisation. Transient memory: two maps and one int32 vertex buffer (12 bytes per
    pixel in float32, 20 in float64).
    """
    if target.ndim < 2:
        raise ValueError(f"target must be [N, *spatial]; got shape {tuple(target.shape)}")
    spatial = tuple(target.shape[1:])
    if len(spacing) != len(spatial):
        raise ValueError(f"spacing needs {len(spatial)} entries; got {len(spacing)}")
    mask = (target if target.dtype in (torch.bool, torch.uint8) else target != 0).contiguous()
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    total = mask.numel()
    current = torch.empty(mask.shape, dtype=map_dtype(spatial, spacing), device=mask.device)
    n = spatial[-1]
    block_lines, block_n = sweep_blocks(n)
    grid = (triton.cdiv(total // n, block_lines),)
    _edt_sweep_kernel[grid](mask, current, total // n, n, float64_bits(spacing[-1]),
                            BLOCK_LINES=block_lines, BLOCK_N=block_n, num_warps=SWEEP_WARPS, **EXACT_ROUNDING)

    other = torch.empty_like(current)
    strided = range(len(spatial) - 2, -1, -1)
    if len(spatial) > 1:  # one vertex buffer for every axis: the most lines (padded to whole programs) x n
        padded = max(triton.cdiv(total // spatial[axis], ENVELOPE_LINES) * ENVELOPE_LINES * spatial[axis] for axis in strided)
        vertices = torch.empty(padded, dtype=torch.int32, device=mask.device)
    for axis in strided:
        n = spatial[axis]
        inner = 1
        for size in spatial[axis + 1 :]:
            inner *= size
        n_lines = total // n
        grid = (triton.cdiv(n_lines, ENVELOPE_LINES),)
        _edt_envelope_kernel[grid](current, other, vertices, n_lines, n, inner, float64_bits(spacing[axis]),
                                   BLOCK_LINES=ENVELOPE_LINES, num_warps=1, **EXACT_ROUNDING)
        current, other = other, current
    return current.masked_fill_(current >= BIG.value, float("inf"))
