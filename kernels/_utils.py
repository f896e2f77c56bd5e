"""Launch helpers shared by the kernels of ``fastseg.kernels``: block size, warps, dtypes, layout.

Nothing here touches tensor data or synchronises with the host, so the launchers that use it stay
CUDA-graph capturable and traceable by ``torch.library.triton_op``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path

import torch

MAX_BLOCK = 1024
"""Largest tile of a pixel-parallel kernel: 4 elements per thread at 8 warps."""

MIN_BLOCK = 128

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Triton signature strings of the dtypes a launcher may pass (used by the AOT compile gate).
TRITON_TYPE = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.uint8: "u8",
    torch.int32: "i32",
    torch.int64: "i64",
}


def on_device_of(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The context in which a kernel reading ``x`` must be launched: ``x``'s CUDA device made current.

    Triton launches on the *current* device and stream, not on the device of the tensors it is
    given, so a batch on ``cuda:1`` while ``cuda:0`` is current (a model moved with
    ``.to("cuda:1")``, a DDP rank that never called ``set_device``) would be read by a kernel on
    the wrong GPU. A no-op (no device switch) for CPU tensors and tensors on the current device.
    """
    if x.is_cuda and x.device.index is not None and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def launched_on_input_device(launcher):
    """Decorate a launcher whose first argument is a tensor: its kernels run on that tensor's device."""

    @functools.wraps(launcher)
    def on_input_device(x, *args, **kwargs):
        with on_device_of(x):
            return launcher(x, *args, **kwargs)

    return on_input_device


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def block_and_warps(n: int) -> tuple[int, int]:
    """Tile width and warps for a pixel-parallel kernel over rows of ``n`` pixels.

    Rule: the tile is the row rounded up to a power of two, clamped to ``[128, 1024]``; one warp
    per 128 lanes (1 to 8 warps), i.e. 4 elements per thread: one 16-byte load of fp32 logits,
    and about half the registers of 8 elements per thread (the heaviest backward kernel, hybrid
    focal margin with mask and weight, needs 55 instead of 121 on sm_90). Not 2048 lanes at 16
    warps: for blocks of 512 threads ptxas caps registers at 64 (two blocks per SM), and the
    kernel of a sum of losses reading every quantity then spilled (fp16 logits, sm_80), while at
    1024 lanes it uses 75 registers and spills nothing. Register use is not monotonic in the tile
    width, so the compile gate compiles every width this rule can pick (:data:`TILE_WIDTHS`).
    """
    block = min(MAX_BLOCK, max(MIN_BLOCK, next_power_of_2(n)))
    return block, block // 128


#: Every tile width :func:`block_and_warps` can pick.
TILE_WIDTHS = tuple(1 << e for e in range(MIN_BLOCK.bit_length() - 1, MAX_BLOCK.bit_length()))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the statistics and of the in-kernel arithmetic: float64 for float64 logits, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def smallest_normal(dtype: torch.dtype) -> float:
    """Smallest normal number of ``dtype`` (the clamp of bases raised to negative powers)."""
    return float(torch.finfo(dtype).tiny)


def as_kernel_operand(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``x`` broadcast to ``shape`` as a tensor a kernel can address with ``(stride_b, stride_c, 1)``.

    Broadcast dimensions keep stride 0 (no copy); a copy is made only when the innermost dimension
    is not unit-stride. Bool tensors are viewed as uint8 (same bytes, no copy).
    """
    x = x.expand(shape)
    if x.dtype == torch.bool:
        x = x.view(torch.uint8)
    if shape[-1] > 1 and x.stride(-1) != 1:
        x = x.contiguous()
    return x


def group_strides(x: torch.Tensor) -> tuple[int, int]:
    """``(stride_b, stride_c)`` of a ``[B, C, N]`` kernel operand."""
    return int(x.stride(0)), int(x.stride(1))


def source_hash() -> str:
    """SHA-256 (16 hex digits) of the kernel sources, for ``torch.compiler.config.cache_key_tag``.

    Inductor's FX-graph cache key does not include the Triton source of user kernels; tag the cache
    with this so an edited kernel is never served from a stale cache entry.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
