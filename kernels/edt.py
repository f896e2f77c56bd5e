"""Exact squared Euclidean distance transform in Triton (Felzenszwalb and Huttenlocher 2012).

The squared EDT is separable: ``D(x) = min_q |x - q|^2`` over the target set equals a sequence of
1-D transforms, one per axis, each computing ``d(x) = min_q (pos(x) - pos(q))^2 + f(q)`` over a
line, where ``f`` is the previous axis's result (``0`` on target pixels and ``+inf`` elsewhere for
the first axis). Each 1-D transform builds the lower envelope of the parabolas rooted at the
finite ``f(q)`` and reads it back: O(n) per line, exact in floating point for integer inputs
below 2**24.

One launch per axis covers every line of every image of the batch; a program owns
``BLOCK_LINES`` lines and walks them in lockstep, so the pops of the envelope are a masked loop
over lanes. Envelope vertices and boundaries live in a scratch buffer of ``lines x (n + 1)``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BIG: tl.constexpr = tl.constexpr(1.0e30)  # "no target on this line yet"; squared distances never come near it


@triton.jit
def _edt_line_kernel(
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
    ``(l // inner) * n * inner + l % inner`` and steps by ``inner``.
    """
    pid = tl.program_id(0).to(tl.int64)
    lines = pid * BLOCK_LINES + tl.arange(0, BLOCK_LINES).to(tl.int64)
    active = lines < n_lines
    lines = tl.where(active, lines, 0)
    base = (lines // inner) * (n * inner) + lines % inner
    scratch = lines * (n + 1)

    # Build the lower envelope: v[k] vertex index, z[k] left boundary of parabola k.
    k = tl.full([BLOCK_LINES], -1, tl.int32)
    for q in range(0, n):
        fq = tl.load(f_ptr + base + q * inner, mask=active, other=BIG).to(tl.float32)
        has_q = active & (fq < BIG)
        pos_q = q * spacing
        need = has_q & (k >= 0)
        vk = tl.load(v_ptr + scratch + k, mask=need, other=0)
        fvk = tl.load(f_ptr + base + vk.to(tl.int64) * inner, mask=need, other=0.0).to(tl.float32)
        pos_v = vk.to(tl.float32) * spacing
        s = ((fq + pos_q * pos_q) - (fvk + pos_v * pos_v)) / tl.where(need, 2.0 * (pos_q - pos_v), 1.0)
        zk = tl.load(z_ptr + scratch + k, mask=need, other=-BIG)
        pop = need & (s <= zk)
        while tl.max(pop.to(tl.int32), axis=0) > 0:
            k = tl.where(pop, k - 1, k)
            need = pop & (k >= 0)
            vk = tl.load(v_ptr + scratch + k, mask=need, other=0)
            fvk = tl.load(f_ptr + base + vk.to(tl.int64) * inner, mask=need, other=0.0).to(tl.float32)
            pos_v = vk.to(tl.float32) * spacing
            s = tl.where(need, ((fq + pos_q * pos_q) - (fvk + pos_v * pos_v)) / tl.where(need, 2.0 * (pos_q - pos_v), 1.0), s)
            zk = tl.load(z_ptr + scratch + k, mask=need, other=-BIG)
            pop = need & (s <= zk)
        k = tl.where(has_q, k + 1, k)
        boundary = tl.where(k == 0, -BIG, s)
        tl.store(v_ptr + scratch + k, tl.full([BLOCK_LINES], q, tl.int32), mask=has_q)
        tl.store(z_ptr + scratch + k, boundary, mask=has_q)

    # Read the envelope back: for each x, the parabola whose interval holds pos(x).
    k_last = k
    k = tl.zeros([BLOCK_LINES], tl.int32)
    for q in range(0, n):
        pos_q = q * spacing
        more = active & (k < k_last)
        z_next = tl.load(z_ptr + scratch + k + 1, mask=more, other=BIG)
        advance = more & (z_next < pos_q)
        while tl.max(advance.to(tl.int32), axis=0) > 0:
            k = tl.where(advance, k + 1, k)
            more = advance & (k < k_last)
            z_next = tl.load(z_ptr + scratch + k + 1, mask=more, other=BIG)
            advance = more & (z_next < pos_q)
        found = active & (k_last >= 0)
        vk = tl.load(v_ptr + scratch + k, mask=found, other=0)
        fvk = tl.load(f_ptr + base + vk.to(tl.int64) * inner, mask=found, other=0.0).to(tl.float32)
        dx = pos_q - vk.to(tl.float32) * spacing
        d = tl.where(found, dx * dx + fvk, BIG)
        tl.store(out_ptr + base + q * inner, d, mask=active)


def _block_lines(n_lines: int) -> int:
    """Lanes per program, one warp per 32 lines: few lines per program keep the machine full."""
    return 32 if n_lines <= 8192 else 64


def edt_squared(target: torch.Tensor, spacing: tuple[float, ...]) -> torch.Tensor:
    """Squared EDT of every image of ``target`` (``[N, *spatial]``, nonzero = target set).

    Returns float32 of the same shape; pixels of an image without any target pixel hold ``inf``.
    ``spacing`` has one entry per spatial axis. Runs with no host synchronisation.
    """
    if target.ndim < 2:
        raise ValueError(f"target must be [N, *spatial]; got shape {tuple(target.shape)}")
    spatial = target.shape[1:]
    if len(spacing) != len(spatial):
        raise ValueError(f"spacing needs {len(spatial)} entries; got {len(spacing)}")
    current = torch.where(
        target.bool(),
        torch.zeros((), dtype=torch.float32, device=target.device),
        torch.full((), BIG.value, dtype=torch.float32, device=target.device),
    ).contiguous()
    other = torch.empty_like(current)
    total = current.numel()
    for axis, step in enumerate(spacing):
        n = spatial[axis]
        inner = 1
        for size in spatial[axis + 1 :]:
            inner *= size
        n_lines = total // n
        v_scratch = torch.empty(n_lines * (n + 1), dtype=torch.int32, device=target.device)
        z_scratch = torch.empty(n_lines * (n + 1), dtype=torch.float32, device=target.device)
        block = _block_lines(n_lines)
        grid = (triton.cdiv(n_lines, block),)
        _edt_line_kernel[grid](current, other, v_scratch, z_scratch, n_lines, n, inner, float(step), BLOCK_LINES=block, num_warps=block // 32)
        current, other = other, current
    return torch.where(current >= BIG.value, torch.full((), float("inf"), device=target.device), current)
