"""Exact Euclidean distance transforms of batches of masks, and the distance maps losses read.

- :func:`edt`: for every pixel of every image (and channel) of a batch ``[B, C, *spatial]``, the
  Euclidean distance to the nearest pixel of a target set (the mask's foreground or background).
  Exact: it equals ``scipy.ndimage.distance_transform_edt`` converted to the requested dtype
  (squared distances are integers for unit spacing and equal SciPy's exactly; with anisotropic
  spacing the CPU backends compute SciPy's own sums and the Triton kernels the same terms in
  float64, 3-D summed in another order: within an ulp of float64).
- :func:`boundary_field`: the two-sided distance map of MONAI's ``HausdorffDTLoss`` (distance of
  every pixel to the nearest pixel of the other class), read by the Hausdorff-DT and the
  distance-map-penalised CE losses.
- :func:`inner_boundary`: the foreground pixels that touch the background, read by the
  shape-aware loss.

Backends. CPU tensors run a native exact lower envelope (C, built on first use,
:mod:`fastseg._native_edt`) for unit spacing, else SciPy's exact feature transform image by image. CUDA tensors run the
Triton kernels (``fastseg.kernels.edt``: running scans along the contiguous axis, Felzenszwalb
and Huttenlocher's lower envelope along the others), one launch per axis for the whole batch,
without leaving the GPU; their transient memory is two maps and one int32 vertex buffer: 12 bytes
per pixel where float32 maps are exact (unit spacing, squared diagonal below ``2**24``: about
0.8 GB for 16x2048x2048), 20 with the float64 maps of larger images and anisotropic spacing.
Squared distances must stay below 1e30: the image diagonal below :data:`MAX_DIAGONAL` spacing
units, which every backend checks. Both backends share one contract: ``[N, *spatial]`` bool target sets in,
the distances (or their squares) out in the requested dtype, :func:`empty_fill` for images
without any target pixel.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ._checks import check_choice, type_name, warn_if_images_without_channel

__all__ = ["edt", "boundary_field", "inner_boundary", "empty_fill"]

TARGETS = ("foreground", "background")


# --------------------------------------------------------------------------------------- checks


def _check_mask(mask) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor; got {type_name(mask)}")
    if mask.is_complex():
        raise TypeError(f"mask must be bool, integer or floating; got dtype {mask.dtype}")
    if mask.ndim not in (3, 4, 5):
        raise ValueError(
            "mask must have shape [B, C, *spatial] with 1 to 3 spatial dims "
            f"(unsqueeze a [B, H, W] mask to [B, 1, H, W]); got shape {tuple(mask.shape)}"
        )
    return mask


def _check_layout(mask) -> Tensor:
    """:func:`_check_mask` for the public functions, which also warn about ``[B, H, W]`` masks
    (fastseg's own calls pass masks of an input the loss has already warned about)."""
    mask = _check_mask(mask)
    warn_if_images_without_channel(mask, "mask", "its own 1-D distance transform")
    return mask


#: The longest image diagonal, in spacing units, that :func:`edt` accepts: squared distances stay
#: below the Triton kernels' "no target" marker (1e30) and far from float64's range.
MAX_DIAGONAL = 1e15

#: The smallest spacing :func:`edt` accepts: squared distances of one pixel stay normal float64
#: numbers (smaller ones lose digits, and at 1e-162 round to 0).
MIN_SPACING = math.sqrt(sys.float_info.min)


def _check_spacing(spacing, spatial_shape: Sequence[int]) -> tuple[float, ...]:
    """``None`` (unit spacing), one number of at least :data:`MIN_SPACING`, or one per spatial axis,
    with an image diagonal (``sqrt(sum((n_i s_i)^2))``) below :data:`MAX_DIAGONAL`."""
    ndim = len(spatial_shape)
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, Real) and not isinstance(spacing, bool):
        values = (spacing,) * ndim
    elif isinstance(spacing, Sequence) and not isinstance(spacing, str):
        values = tuple(spacing)
        if len(values) != ndim:
            raise ValueError(f"spacing must have one value per spatial axis ({ndim}); got {len(values)} values")
    else:
        raise TypeError(f"spacing must be None, a number or a sequence of numbers; got {type_name(spacing)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"spacing values must be real numbers; got {type_name(v)}")
        v = float(v)
        if not (math.isfinite(v) and v >= MIN_SPACING):
            raise ValueError(f"spacing values must be finite and >= {MIN_SPACING:.3g} (their squares normal float64 "
                             f"numbers; express the spacing in a smaller unit); got {v}")
        out.append(v)
    diagonal = math.hypot(*(n * v for n, v in zip(spatial_shape, out)))
    if not diagonal < MAX_DIAGONAL:
        raise ValueError(
            f"spacing {tuple(out)} makes the image diagonal {diagonal:.3g} spacing units long; it must be below "
            f"{MAX_DIAGONAL:.0e} (express the spacing in a larger unit)"
        )
    return tuple(out)


def empty_fill(spatial_shape: Sequence[int], spacing=None, *, squared: bool = False) -> float:
    """The distance :func:`edt` gives every pixel of an image without any target pixel.

    It is the length of the image's bounding-box diagonal, ``sqrt(sum((n_i * s_i)^2))`` (its
    square with ``squared=True``): finite, and larger than any distance inside the image (the
    largest is ``sqrt(sum(((n_i - 1) s_i)^2))``), so "no target anywhere" reads as "farther than
    anything". Normalising by the per-image maximum then gives 1 everywhere, which is
    ``LOSSES.md``'s rule for crack-free images in the distance-based loss.
    """
    spacing = _check_spacing(spacing, spatial_shape)
    sq = sum((n * s) ** 2 for n, s in zip(spatial_shape, spacing))
    return float(sq) if squared else math.sqrt(sq)


# ------------------------------------------------------------------------------------- backends


def _edt_cpu(target: Tensor, spacing: tuple[float, ...], squared: bool, dtype: torch.dtype) -> Tensor:
    """EDT of each image of ``target`` (bool ``[N, *spatial]``, True = target set), on the CPU.

    SciPy's feature transform gives, per pixel, the index of the nearest target pixel; the squared
    distance is summed from the index differences as SciPy does before its square root: in
    integers for unit spacing (exact), in float64 axis by axis otherwise. So ``sqrt`` of it is
    bit-identical to SciPy's distances. Images without a target pixel get :func:`empty_fill`.
    """
    masks = target.cpu().numpy()
    spatial = masks.shape[1:]
    out = np.empty(masks.shape, dtype=np.float64 if dtype == torch.float64 else np.float32)
    unit = all(s == 1.0 for s in spacing)
    # Integer squared distances need int64 once they can pass 2**31.
    int_dtype = np.int64 if sum((n - 1) ** 2 for n in spatial) >= 2**31 else np.int32
    grids = [
        np.arange(n, dtype=int_dtype).reshape([-1 if a == axis else 1 for a in range(len(spatial))])
        for axis, n in enumerate(spatial)
    ]
    fill = empty_fill(spatial, spacing, squared=squared)
    for i, mask in enumerate(masks):
        if not mask.any():
            out[i] = fill
            continue
        if mask.all():
            out[i] = 0
            continue
        # SciPy measures the distance to the nearest ZERO: feed it the complement of the target set.
        sampling = None if unit else spacing
        ft = ndimage.distance_transform_edt(~mask, sampling=sampling, return_distances=False, return_indices=True)
        sq = None
        for axis, grid in enumerate(grids):
            diff = ft[axis].astype(int_dtype) - grid if unit else (ft[axis] - grid).astype(np.float64) * spacing[axis]
            sq = diff * diff if sq is None else sq + diff * diff
        if squared:
            out[i] = sq
        else:
            out[i] = np.sqrt(sq, dtype=np.float64)
    return torch.from_numpy(out).to(dtype)


def _edt_native(fg: Tensor, mode: str, squared: bool, dtype: torch.dtype) -> Tensor | None:
    """Unit spacing on CPU tensors: the native lower envelope (:mod:`fastseg._native_edt`), or
    ``None`` where it cannot be built. ``fg``: bool ``[N, *spatial]`` foreground; ``mode``:
    ``"foreground"``/``"background"`` (the ``to`` set) or ``"field"`` (:func:`boundary_field`).
    Same values as :func:`_edt_cpu` (squared distances are exact integers; square roots are taken
    in float64 and rounded once), all images in one call, no intermediate tensors."""
    from . import _native_edt

    if _native_edt.load() is None:
        return None
    masks = fg.cpu().contiguous().numpy()
    fill = empty_fill(masks.shape[1:], None, squared=squared)
    out = _native_edt.distance_map(masks, mode, squared=squared, fill=fill, double=dtype == torch.float64,
                                   threads=torch.get_num_threads())
    return torch.from_numpy(out).to(dtype)


def _edt_triton(target: Tensor, spacing: tuple[float, ...], squared: bool, dtype: torch.dtype) -> Tensor:
    """Triton backend: ``fastseg.kernels.edt.edt_squared``, one launch per axis for the batch.

    The kernels return float32 maps where that is exact (unit spacing, squared diagonal below
    ``2**24``) and float64 ones otherwise; the square root is taken in float64 and every value,
    :func:`empty_fill` included, is rounded once to ``dtype``, as SciPy's result converted to
    ``dtype`` is. No host synchronisation.
    """
    from ._kernels import kernels_module

    squares = kernels_module("edt", on_cpu=not target.is_cuda).edt_squared(target, spacing)
    empty = torch.isinf(squares)
    spatial = tuple(target.shape[1:])
    if squared:
        return squares.to(dtype).masked_fill_(empty, empty_fill(spatial, spacing, squared=True))
    squares = squares.double()
    if squares.is_cuda:
        distances = squares.sqrt_()
    else:  # torch's CPU sqrt may be 1 ulp off (its vectorised float64 sqrt, not the instruction); NumPy's is exact
        distances = torch.from_numpy(np.sqrt(squares.numpy()))
    return distances.masked_fill_(empty, empty_fill(spatial, spacing)).to(dtype)


BACKENDS = ("auto", "triton", "native", "scipy")


# ----------------------------------------------------------------------------------- public API


def edt(
    mask: Tensor,
    *,
    squared: bool = False,
    spacing=None,
    to: str = "foreground",
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> Tensor:
    """Exact Euclidean distance transform of every image and channel of a batch.

    ``out[b, c, x] = min over pixels q of the target set of image (b, c) of |x - q|``, with
    ``|v| = sqrt(sum_i (v_i s_i)^2)`` for the spacing ``s``. ``to="foreground"`` measures the
    distance to the nearest nonzero pixel of ``mask`` (0 on the mask's pixels: the distance of every
    pixel to the nearest crack); ``to="background"`` to the nearest zero pixel (0 off the mask:
    SciPy's ``distance_transform_edt(mask)`` convention).

    Args:
        mask: ``[B, C, *spatial]`` with 1 to 3 spatial dims (2-D and 3-D images; a ``[B, H, W]``
            mask must be unsqueezed to ``[B, 1, H, W]`` first: the layout is never guessed).
            bool, integer or floating; nonzero = foreground (threshold soft masks yourself,
            e.g. ``t > 0.5``).
        squared: return squared distances (exact integers for unit spacing, below ``2**24`` in
            float32, i.e. for distances below 4096 pixels; use ``dtype=torch.float64`` beyond).
        spacing: ``None`` (unit), a number, or one positive number per spatial axis; the image
            diagonal must be below :data:`MAX_DIAGONAL` (1e15) spacing units.
        to: ``"foreground"`` or ``"background"``: which set the distance is measured to.
        dtype: floating dtype of the result (default float32).
        backend: ``"auto"`` (Triton for CUDA tensors; for CPU tensors the native transform with
            unit spacing where it builds, SciPy otherwise), ``"triton"`` (on CPU tensors it runs
            in Triton's interpreter: set ``TRITON_INTERPRET=1`` in the environment), ``"native"`` (the C lower envelope of
            :mod:`fastseg._native_edt`, compiled on first use; unit spacing only; CUDA tensors make
            a round trip through the CPU) or ``"scipy"`` (likewise).

    Returns:
        A tensor of ``mask``'s shape in ``dtype`` on ``mask``'s device; no gradient. Images without
        any pixel of the ``to`` set get :func:`empty_fill` everywhere (the image diagonal, larger
        than any distance inside the image; squared with ``squared=True``).

    CPU tensors use the native C lower envelope (unit spacing; all images in one call, images
    over torch's thread count, or each image's passes by lines when there are fewer images than
    threads) or SciPy (one exact feature transform per image); CUDA tensors use the
    Triton kernels (a running scan along the contiguous axis, the Felzenszwalb-Huttenlocher lower
    envelope along the others; one launch per axis for the whole batch).
    """
    return edt_of_mask(_check_layout(mask), squared=squared, spacing=spacing, to=to, dtype=dtype, backend=backend)


def edt_of_mask(mask: Tensor, *, squared: bool = False, spacing=None, to: str = "foreground",
                dtype: torch.dtype = torch.float32, backend: str = "auto") -> Tensor:
    """:func:`edt` without the :class:`~fastseg.ShapeWarning` (for fastseg's own calls)."""
    mask = _check_mask(mask)
    check_choice("to", to, TARGETS)
    check_choice("backend", backend, BACKENDS)
    _check_squared_and_dtype(squared, dtype)
    spatial = tuple(mask.shape[2:])
    spacing = _check_spacing(spacing, spatial)
    if mask.numel() == 0:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    fg = (mask if mask.dtype == torch.bool else mask != 0).reshape(-1, *spatial)
    return _distance_map(fg, to, list(spacing), squared, dtype, backend).reshape(mask.shape)


def _check_squared_and_dtype(squared, dtype) -> None:
    if not isinstance(squared, bool):
        raise TypeError(f"squared must be a bool; got {type_name(squared)}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")


def _distance_map(fg: Tensor, mode: str, spacing: list[float], squared: bool, dtype: torch.dtype,
                  backend: str) -> Tensor:
    """:func:`edt` (``mode`` ``"foreground"``/``"background"``) or :func:`boundary_field`
    (``"field"``) of ``fg`` (bool ``[N, *spatial]``), arguments already checked.

    Called through the ``torch.library`` op ``fastseg::distance_map`` (:data:`_distance_map_op`):
    under ``torch.compile`` the transform is one opaque node (its fake implementation gives the
    shape and dtype), so a loss that computes distance maps compiles with ``fullgraph=True``
    although the maps come from SciPy, ctypes or Triton launches. A plain eager call
    (:func:`fastseg.engine.function.plain_eager`) skips the op's dispatch (about 100 us)."""
    from .engine.function import plain_eager

    if plain_eager(fg):
        return _distance_map_body(fg, mode, spacing, squared, dtype, backend)
    return _distance_map_op(fg, mode, spacing, squared, dtype, backend)


@torch.library.custom_op("fastseg::distance_map", mutates_args=())
def _distance_map_op(fg: Tensor, mode: str, spacing: list[float], squared: bool, dtype: torch.dtype,
                     backend: str) -> Tensor:
    """The op of :func:`_distance_map`."""
    return _distance_map_body(fg, mode, spacing, squared, dtype, backend)


def _distance_map_body(fg: Tensor, mode: str, spacing: list[float], squared: bool, dtype: torch.dtype,
                       backend: str) -> Tensor:
    with torch.no_grad():
        if mode == "field":
            return _boundary_field(fg, tuple(spacing), squared, dtype)
        out = _native_or_none(fg, mode, spacing, squared, dtype, backend)
        if out is None:
            out = _transform(fg if mode == "foreground" else ~fg, tuple(spacing), squared, dtype, backend)
        return out.to(fg.device)


@_distance_map_op.register_fake
def _(fg, mode, spacing, squared, dtype, backend):
    return fg.new_empty(fg.shape, dtype=dtype)


def _transform(target: Tensor, spacing: tuple[float, ...], squared: bool, dtype: torch.dtype, backend: str) -> Tensor:
    """EDT to the True pixels of ``target`` by the Triton kernels (CUDA, or ``backend="triton"``)
    or SciPy (:func:`_edt_cpu`)."""
    use_triton = backend == "triton" or (backend == "auto" and target.is_cuda)
    return (_edt_triton if use_triton else _edt_cpu)(target, spacing, squared, dtype)


def _native_or_none(fg: Tensor, mode: str, spacing, squared: bool, dtype: torch.dtype, backend: str) -> Tensor | None:
    """The native CPU result where ``backend`` asks for it (or "auto" picks it), else ``None``."""
    if backend == "native":
        if any(s != 1.0 for s in spacing):
            raise ValueError("backend='native' supports unit spacing only; use backend='scipy' with spacing")
        out = _edt_native(fg, mode, squared, dtype)
        if out is None:
            from . import _native_edt

            if _native_edt.disabled():
                raise RuntimeError("backend='native' with FASTSEG_NATIVE off: unset it, or use backend='auto' or 'scipy'")
            raise RuntimeError("backend='native': the native EDT could not be built (no working C compiler?); "
                               "see the warning above, or use backend='auto'")
        return out
    if backend == "auto" and not fg.is_cuda and all(s == 1.0 for s in spacing):
        return _edt_native(fg, mode, squared, dtype)
    return None


def inner_boundary(mask: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """The foreground pixels with a background neighbour, as a bool tensor of ``mask``'s shape.

    Neighbours are the ``2 * ndim`` face neighbours (4-connectivity in 2-D, 6 in 3-D). Pixels
    outside the image do not count as background: the image border is not an object boundary, so
    an all-foreground image has no boundary. Equals
    ``mask & ~scipy.ndimage.binary_erosion(mask, generate_binary_structure(ndim, 1), border_value=1)``.
    ``mask`` is ``[B, C, *spatial]``, nonzero = foreground. ``valid`` (bool, ``mask``'s shape):
    pixels outside it (ignored pixels) belong to neither class, like the outside of the image:
    the boundary is the valid foreground pixels with a valid background neighbour.
    """
    return inner_boundary_of_mask(_check_layout(mask), valid=valid)


def _check_valid(valid, mask: Tensor) -> Tensor | None:
    if valid is None:
        return None
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
        raise TypeError(f"valid must be None or a bool tensor; got {valid.dtype if isinstance(valid, Tensor) else type_name(valid)}")
    if valid.shape != mask.shape or valid.device != mask.device:
        raise ValueError(f"valid must have mask's shape {tuple(mask.shape)} and device; got {tuple(valid.shape)} on {valid.device}")
    return valid


def inner_boundary_of_mask(mask: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """:func:`inner_boundary` without the :class:`~fastseg.ShapeWarning` (for fastseg's own calls)."""
    mask = _check_mask(mask)
    valid = _check_valid(valid, mask)
    fg = mask != 0
    bg = ~fg if valid is None else ~fg & valid
    if valid is not None:
        fg = fg & valid
    touches_bg = torch.zeros_like(fg)
    for axis in range(2, fg.ndim):
        n = fg.shape[axis]
        if n == 1:
            continue
        # Shifted by one pixel, nothing (no background) shifted in from outside the image.
        none = torch.zeros_like(bg.narrow(axis, 0, 1))
        touches_bg |= torch.cat([none, bg.narrow(axis, 0, n - 1)], dim=axis)
        touches_bg |= torch.cat([bg.narrow(axis, 1, n - 1), none], dim=axis)
    return fg & touches_bg


def boundary_field(mask: Tensor, *, spacing=None, dtype: torch.dtype = torch.float32, squared: bool = False,
                   valid: Tensor | None = None) -> Tensor:
    """Two-sided distance map: each pixel's distance to the nearest pixel of the other class.

    ``field = edt(mask, to="background") + edt(mask, to="foreground")``: on a foreground pixel the
    distance to the nearest background pixel, on a background pixel the distance to the nearest
    foreground pixel (so it is >= 1 everywhere for unit spacing). Images that hold only one class
    (no boundary) get 0 everywhere. This is MONAI's ``HausdorffDTLoss.distance_field`` (Karimi and
    Salcudean 2019), computed on the mask's device. ``mask`` is ``[B, C, *spatial]``, nonzero =
    foreground (threshold soft masks yourself). ``squared=True`` returns the squared field (exact
    integers for unit spacing); ``spacing`` and ``dtype`` (of the result) as in :func:`edt`. CPU
    tensors with unit spacing run both transforms in one native call (:mod:`fastseg._native_edt`)
    where it builds. ``valid`` (bool, ``mask``'s shape): pixels outside it (ignored pixels) belong
    to neither class: a valid pixel's field is its distance to the nearest *valid* pixel of the
    other class, an image is single-class when its valid pixels are, and the field is 0 at the
    pixels outside ``valid`` (two transforms instead of the one native call).
    """
    return boundary_field_of_mask(_check_layout(mask), spacing=spacing, dtype=dtype, squared=squared, valid=valid)


def boundary_field_of_mask(mask: Tensor, *, spacing=None, dtype: torch.dtype = torch.float32,
                           squared: bool = False, valid: Tensor | None = None) -> Tensor:
    """:func:`boundary_field` without the :class:`~fastseg.ShapeWarning` (for fastseg's own calls)."""
    mask = _check_mask(mask)
    valid = _check_valid(valid, mask)
    _check_squared_and_dtype(squared, dtype)
    spacing = _check_spacing(spacing, mask.shape[2:])
    if mask.numel() == 0:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    fg = mask if mask.dtype == torch.bool else mask != 0
    if valid is not None:
        fg, bg = fg & valid, ~fg & valid
        part_dtype = torch.float64 if squared else dtype
        to_bg, to_fg = (edt_of_mask(target, spacing=spacing, squared=squared, dtype=part_dtype) for target in (bg, fg))
        zero = torch.zeros((), dtype=part_dtype, device=mask.device)
        field = torch.where(fg, to_bg, torch.where(bg, to_fg, zero))
        spatial = tuple(range(2, mask.ndim))
        two_classes = fg.any(dim=spatial, keepdim=True) & bg.any(dim=spatial, keepdim=True)
        return torch.where(two_classes, field, zero).to(dtype)
    fg = fg.reshape(-1, *mask.shape[2:])
    return _distance_map(fg, "field", list(spacing), squared, dtype, "auto").reshape(mask.shape)


def _boundary_field(fg: Tensor, spacing: tuple[float, ...], squared: bool, dtype: torch.dtype) -> Tensor:
    """:func:`boundary_field` of ``fg`` (bool ``[N, *spatial]``): one native call for CPU tensors
    with unit spacing where it builds, else the two transforms added (in float64 when squared)."""
    out = _native_or_none(fg, "field", spacing, squared, dtype, "auto")
    if out is not None:
        return out
    part_dtype = torch.float64 if squared else dtype
    inside, outside = (_transform(target, spacing, squared, part_dtype, "auto") for target in (~fg, fg))
    field = (inside + outside).to(dtype)
    spatial = tuple(range(1, fg.ndim))
    two_classes = fg.any(dim=spatial, keepdim=True) & (~fg).any(dim=spatial, keepdim=True)
    return torch.where(two_classes, field, torch.zeros((), dtype=dtype, device=field.device))
