"""Data for examples, tests and benchmarks: the CrackForest images and synthetic crack batches.

- :func:`load_crackforest` reads CrackForest (CFD) images 001-090 (Shi et al., IEEE T-ITS 2016;
  ``shared/data/crackforest/README.md``): 90 RGB road photos of 320 x 480 pixels with crack masks
  (about 1.6 % crack pixels). :meth:`CrackForest.split` gives the fixed train/val split,
  :func:`crackforest_tiles` square tiles (or mosaics, for sizes beyond one photo) for benchmarks,
  :func:`random_crops` random crops of any image/mask batch.
- :func:`synthetic_cracks` draws batches of thin random-walk cracks of any size, with the logits of
  a plausible imperfect model, vectorised on the requested device (benchmarks at 2048 x 2048 and
  beyond, and tests).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_number, type_name

__all__ = ["CrackForest", "load_crackforest", "crackforest_tiles", "random_crops", "synthetic_cracks"]

ENV_VAR = "FASTSEG_CRACKFOREST"
ARCHIVE = "crackforest_001-090.npz"
_RELATIVE = Path("shared") / "data" / "crackforest"


# ----------------------------------------------------------------------------------- CrackForest


@dataclass(frozen=True, repr=False)
class CrackForest:
    """CrackForest images and masks, as tensors.

    Attributes:
        images: uint8 ``[N, 3, H, W]`` RGB (0-255) by default, or a floating dtype scaled to
            [0, 1] (``load_crackforest(dtype=...)``).
        masks: uint8 ``[N, 1, H, W]``, 1 = crack, 0 = background (the losses' ``[B, C, *spatial]``).
        ids: int64 ``[N]``, the data set's image numbers (1..90 for the full archive).
    """

    images: Tensor
    masks: Tensor
    ids: Tensor

    def __len__(self) -> int:
        return int(self.ids.numel())

    def __repr__(self) -> str:
        """A one-line summary, e.g. ``CrackForest(90 images, 3x320x480, images uint8, 1.62% crack
        pixels)``, instead of the tensors."""
        size = "x".join(str(n) for n in self.images.shape[1:])
        crack = self.masks.count_nonzero().item() / max(self.masks.numel(), 1)
        dtype = str(self.images.dtype).removeprefix("torch.")
        return f"{type(self).__name__}({len(self)} images, {size}, images {dtype}, {100 * crack:.2f}% crack pixels)"

    def subset(self, index) -> CrackForest:
        """The images at ``index`` (anything that indexes a tensor's first dim)."""
        return CrackForest(self.images[index], self.masks[index], self.ids[index])

    def split(self, train: int = 70, val: int = 20) -> tuple[CrackForest, CrackForest]:
        """The fixed split: the first ``train`` images (by id) train, the next ``val`` validate.

        With the full archive and the defaults: ids 1-70 train, ids 71-90 validate. Deterministic
        and contiguous, so results are comparable across runs and machines.
        """
        for name, value in (("train", train), ("val", val)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        if train + val > len(self):
            raise ValueError(f"train + val must be <= the number of images ({len(self)}); got {train} + {val}")
        order = torch.argsort(self.ids)
        return self.subset(order[:train]), self.subset(order[train : train + val])


def _candidates() -> list[Path]:
    """Where the archive may be: ``shared/data/crackforest`` under every ancestor of the current
    directory and of this package's directory (so ``../shared/data/crackforest`` next to the repo)."""
    seen, out = set(), []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            path = folder / _RELATIVE
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def _resolve(path) -> Path:
    """The archive file for ``path`` (a file or a folder holding it), the env var, or the search."""
    if path is not None:
        tried = [Path(path)]
        source = "path"
    elif os.environ.get(ENV_VAR):
        tried = [Path(os.environ[ENV_VAR])]
        source = f"${ENV_VAR}"
    else:
        tried = _candidates()
        source = "the default search"
    looked = []
    for candidate in tried:
        candidate = candidate.expanduser()
        file = candidate / ARCHIVE if candidate.is_dir() else candidate
        looked.append(str(file))
        if file.is_file():
            return file
    raise FileNotFoundError(
        f"CrackForest archive {ARCHIVE} not found ({source}); tried:\n  "
        + "\n  ".join(looked)
        + f"\nPass load_crackforest(path=...) (the .npz file or its folder) or set {ENV_VAR}."
    )


def load_crackforest(path=None, *, dtype: torch.dtype | None = None) -> CrackForest:
    """Load CrackForest images 001-090 from ``crackforest_001-090.npz``.

    Args:
        path: the ``.npz`` file or the folder holding it. Default: ``$FASTSEG_CRACKFOREST`` if set,
            else ``shared/data/crackforest`` searched upwards from the current directory and from
            this package (``../shared/data/crackforest`` next to the repository).
        dtype: ``None`` keeps the images uint8 (0-255, a quarter of the memory); a floating dtype
            converts them to [0, 1].

    Returns:
        :class:`CrackForest` with images ``[90, 3, 320, 480]``, masks uint8 ``[90, 1, 320, 480]``
        (1 = crack) and ids 1..90, on the CPU.

    Raises:
        FileNotFoundError: naming every path tried and how to point at the archive.
    """
    file = _resolve(path)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be None (uint8) or a floating torch.dtype; got {dtype!r}")
    with np.load(file) as archive:
        images = torch.from_numpy(np.ascontiguousarray(archive["images"].transpose(0, 3, 1, 2)))
        masks = torch.from_numpy(archive["masks"][:, None].astype(np.uint8, copy=False))
    if dtype is not None:
        images = images.to(dtype) / 255
    ids = torch.arange(1, images.shape[0] + 1, dtype=torch.int64)
    return CrackForest(images=images, masks=masks, ids=ids)


def _size2(size, name: str = "size") -> tuple[int, int]:
    if isinstance(size, Integral) and not isinstance(size, bool):
        size = (size, size)
    is_int = lambda s: isinstance(s, Integral) and not isinstance(s, bool)  # noqa: E731
    if not (isinstance(size, tuple | list) and len(size) == 2 and all(is_int(s) for s in size)):
        raise TypeError(f"{name} must be an int or a pair of ints (height, width); got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{name} must be positive; got {tuple(size)}")
    return int(size[0]), int(size[1])


def crackforest_tiles(
    size, count: int | None = None, *, data: CrackForest | None = None, path=None
) -> tuple[Tensor, Tensor]:
    """Square (or ``(h, w)``) tiles of CrackForest for benchmarks: ``(images, masks)``.

    Tiles no larger than a photo are cut without overlap from each photo in id order, row-major
    (a 320 x 480 photo gives ``(320 // h) * (480 // w)`` tiles). Larger tiles are mosaics: a grid
    of consecutive photos, side by side, cropped to the size, so 2048 x 2048 benchmarks see real
    crack statistics. ``count`` takes the first tiles (cycling through the photos when it asks for
    more); default: every tile (or one mosaic per photo). ``data``: a loaded :class:`CrackForest`,
    else it is loaded from ``path`` (see :func:`load_crackforest`). Returns uint8 images
    ``[n, 3, h, w]`` and masks ``[n, 1, h, w]`` (or the images' dtype of ``data``).
    """
    h, w = _size2(size)
    data = data if data is not None else load_crackforest(path)
    n, _, H, W = data.images.shape
    if n == 0:
        raise ValueError("data has no images to cut tiles from (an empty CrackForest, e.g. an empty subset)")
    if count is not None and (isinstance(count, bool) or not isinstance(count, Integral) or count < 1):
        raise ValueError(f"count must be None or a positive integer; got {count!r}")
    if h <= H and w <= W:
        rows, cols = H // h, W // w
        images = data.images[:, :, : rows * h, : cols * w].reshape(n, 3, rows, h, cols, w)
        masks = data.masks[:, :, : rows * h, : cols * w].reshape(n, 1, rows, h, cols, w)
        images = images.permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, h, w)
        masks = masks.permute(0, 2, 4, 1, 3, 5).reshape(-1, 1, h, w)
        if count is not None:
            reps = math.ceil(count / images.shape[0])
            images, masks = images.repeat(reps, 1, 1, 1)[:count], masks.repeat(reps, 1, 1, 1)[:count]
        return images.contiguous(), masks.contiguous()
    rows, cols = math.ceil(h / H), math.ceil(w / W)
    count = n if count is None else count
    per = rows * cols
    out_images, out_masks = [], []
    for k in range(count):
        idx = [(k * per + j) % n for j in range(per)]
        grid_i = data.images[idx].reshape(rows, cols, 3, H, W).permute(2, 0, 3, 1, 4).reshape(3, rows * H, cols * W)
        grid_m = data.masks[idx].reshape(rows, cols, 1, H, W).permute(2, 0, 3, 1, 4).reshape(1, rows * H, cols * W)
        out_images.append(grid_i[:, :h, :w])
        out_masks.append(grid_m[:, :h, :w])
    return torch.stack(out_images).contiguous(), torch.stack(out_masks).contiguous()


def _check_seed(seed) -> None:
    """A seed of torch's generators: an integer in [0, 2**63 - 1) (the generators take 64 bits,
    and :func:`synthetic_cracks` seeds a second one with ``seed + 1``)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an integer; got {type_name(seed)}")
    if not 0 <= seed < 2**63 - 1:
        raise ValueError(f"seed must lie in [0, 2**63 - 1); got {seed}")


def random_crops(images: Tensor, masks: Tensor, size, count: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``count`` random crops of ``size`` from a batch: the same window for an image and its mask.

    ``images`` ``[N, C, H, W]`` and ``masks`` ``[N, Cm, H, W]``; each crop picks an image and a
    top-left corner uniformly (a ``torch.Generator`` seeded with ``seed``: deterministic).
    """
    h, w = _size2(size)
    for name, value in (("images", images), ("masks", masks)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type_name(value)}")
    _check_seed(seed)
    if images.ndim != 4 or masks.ndim != 4 or images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
        raise ValueError(
            "images and masks must be [N, C, H, W] with the same N, H, W; "
            f"got {tuple(images.shape)} and {tuple(masks.shape)}"
        )
    N, _, H, W = images.shape
    if h > H or w > W:
        raise ValueError(f"size {(h, w)} is larger than the images ({H}, {W})")
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    gen = torch.Generator().manual_seed(int(seed))
    which = torch.randint(0, N, (count,), generator=gen)
    top = torch.randint(0, H - h + 1, (count,), generator=gen)
    left = torch.randint(0, W - w + 1, (count,), generator=gen)
    crops_i = [images[n, :, y : y + h, x : x + w] for n, y, x in zip(which.tolist(), top.tolist(), left.tolist())]
    crops_m = [masks[n, :, y : y + h, x : x + w] for n, y, x in zip(which.tolist(), top.tolist(), left.tolist())]
    return torch.stack(crops_i), torch.stack(crops_m)


# ---------------------------------------------------------------------------- synthetic cracks

_STEP = 0.7  # spacing of the rasterised sample points: <= 1/sqrt(2) px leaves no holes
_MAX_WIDTH = 5.0


def _random_walks(
    gen: torch.Generator, start: Tensor, heading: Tensor, steps: int, seg: float, turn: float
) -> tuple[Tensor, Tensor]:
    """Polylines from ``start`` ``[..., 2]`` (x, y) with initial ``heading`` ``[...]``: each of the
    ``steps`` segments has length ``seg`` and turns by N(0, turn) radians. Returns the vertices
    ``[..., steps + 1, 2]`` and segment headings ``[..., steps]``."""
    turns = torch.randn(*heading.shape, steps, generator=gen) * turn
    turns[..., 0] = 0
    theta = heading[..., None] + torch.cumsum(turns, dim=-1)
    moves = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1) * seg
    vertices = torch.cat([start[..., None, :], start[..., None, :] + torch.cumsum(moves, dim=-2)], dim=-2)
    return vertices, theta


def _widths(gen: torch.Generator, base: Tensor, n_seg: Tensor, steps: int) -> Tensor:
    """Width at each vertex ``[..., steps + 1]``: the crack's base width, modulated by +-25 % and
    tapered over the two segments at each end, clamped to [1, 5] px."""
    k = torch.arange(steps + 1, dtype=base.dtype)
    to_end = torch.minimum(k, n_seg[..., None].to(base.dtype) - k).clamp_min(0)
    taper = (0.5 + 0.25 * to_end).clamp(max=1.0)
    wobble = 0.75 + 0.5 * torch.rand(*base.shape, steps + 1, generator=gen)
    return (base[..., None] * wobble * taper).clamp(1.0, _MAX_WIDTH)


def _wrap(v: Tensor, n: int) -> Tensor:
    """Integer coordinates ``v`` (within ``[-n, 2n)``) wrapped into ``[0, n)``."""
    v = torch.where(v < 0, v + n, v)
    return torch.where(v >= n, v - n, v)


def _rasterise(
    vertices: Tensor,
    widths: Tensor,
    n_seg: Tensor,
    height: int,
    width: int,
    *,
    margin: float = 0.0,
    confidence: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Flat pixel indices (and values) covered by thick polylines, wrapping around the image.

    ``vertices`` ``[B, n, S + 1, 2]`` (x, y), ``widths`` ``[B, n, S + 1]``, ``n_seg`` ``[B, n]``
    (segments used per polyline). Points are sampled every ``_STEP`` px along each segment and
    across it, out to ``(w - 1) / 2 + margin`` from the centre line, then rounded to pixels;
    coordinates wrap around (a crack leaving on the right re-enters on the left, like another crack
    entering the tile). With ``confidence`` ``[B, n, S]`` the value of a point is its segment's
    confidence, fading linearly to 0 over the ``margin`` beyond the half-width (a soft edge).
    Segments are grouped by the number of points across them, so every group is a dense grid
    without wasted points. Returns indices into a flat ``[B * H * W]`` map and the values
    (``None`` without confidence).
    """
    B, n, S1, _ = vertices.shape
    device = vertices.device
    active = torch.arange(S1 - 1, device=device) < n_seg[..., None]  # [B, n, S]
    b_idx, c_idx, k_idx = active.nonzero(as_tuple=True)
    flats, values = [], []
    if b_idx.numel():
        size = torch.tensor([width, height], dtype=vertices.dtype, device=device)
        p0 = vertices[b_idx, c_idx, k_idx]  # [M, 2]
        delta = vertices[b_idx, c_idx, k_idx + 1] - p0
        p0 = p0 - torch.floor(p0 / size) * size  # wrap the start; the segment's points stay within one period
        length = delta.norm(dim=-1).clamp_min(1e-6)
        normal = torch.stack([-delta[:, 1], delta[:, 0]], dim=-1) / length[:, None]
        half0 = (widths[b_idx, c_idx, k_idx] - 1) / 2
        half1 = (widths[b_idx, c_idx, k_idx + 1] - 1) / 2
        conf = None if confidence is None else confidence[b_idx, c_idx, k_idx]
        m = max(1, math.ceil(float(length.max()) / _STEP))
        t = torch.arange(m, device=device, dtype=vertices.dtype) / m  # [m]
        sides = torch.ceil((torch.maximum(half0, half1) + margin) / _STEP).long()  # points each side of the centre
        small = min(height, width) < 64
        for side in torch.bincount(sides).nonzero().flatten().tolist():  # (torch.unique is slow on CPU)
            sel = (sides == side).nonzero().squeeze(1)
            j = torch.arange(-side, side + 1, device=device, dtype=vertices.dtype) * _STEP  # [J]
            half = half0[sel, None] + t * (half1 - half0)[sel, None]  # [Mk, m]
            reach = (half + margin)[..., None]  # [Mk, m, 1]
            offset = torch.minimum(torch.maximum(j, -reach), reach)  # [Mk, m, J]
            coords = []
            for axis, n_axis in ((0, width), (1, height)):
                along = p0[sel, axis, None, None] + t[:, None] * delta[sel, axis, None, None]
                c = along + offset * normal[sel, axis, None, None]
                c = torch.floor(c + 0.5).to(torch.int64)
                coords.append(c.remainder(n_axis) if small else _wrap(c, n_axis))
            flats.append(((b_idx[sel, None, None] * height + coords[1]) * width + coords[0]).flatten())
            if conf is not None:
                fade = (1 - (offset.abs() - half[..., None]) / margin).clamp(0, 1) if margin > 0 else 1.0
                values.append((conf[sel, None, None] * fade).expand_as(offset).flatten())
    flat = torch.cat(flats) if flats else torch.zeros(0, dtype=torch.int64, device=device)
    if confidence is None:
        return flat, None
    return flat, (torch.cat(values) if values else torch.zeros(0, dtype=vertices.dtype, device=device))


def synthetic_cracks(
    batch: int,
    height: int,
    width: int,
    *,
    density: float = 0.015,
    seed: int = 0,
    device="cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """A batch of synthetic crack masks and the logits of a plausible, imperfect model.

    Cracks: per image a few long random-walk polylines (8 px segments turning by N(0, 0.2) rad)
    with shorter branches starting on them, 1-5 px wide (a base width per crack, +-25 % wobble,
    tapered ends; branches thinner), wrapping around the image borders. Their total length is set
    so the planned crack area is ``density * H * W`` times a per-image factor in [0.75, 1.25]. The
    realised foreground fraction averages 0.85-1 x ``density`` at 128-256 px for densities of
    0.002-0.2 (less at higher densities, where cracks overlap: 0.8 x at 0.3), with images from
    about 0.55 to 1.25 x; tiny images deviate more (a crack is at least one pixel wide and one
    segment long). The default 0.015 matches real crack data sets (CrackForest:
    1.6 %, 0.35-6.3 % per image).

    Args:
        batch, height, width: the output size ``[batch, 1, height, width]`` (any positive size).
        density: target crack fraction, in [0, 0.5]; 0 gives crack-free targets (the logits still
            carry texture and a few false-positive strokes).
        seed: the random seed (a ``torch.Generator``; the global RNG is untouched).
        device: where the maps are built and returned.
        dtype: floating dtype of the logits.

    Logits imitate a trained network: each crack is seen slightly shifted (N(0, 0.5) px) and
    widened or narrowed (x0.8-1.3) with soft 1.5 px edges; the confidence of each 8 px segment
    grows with its width, thin segments are often missed (30 %, else 6 %); short false-positive
    "cracks" (stains, joints) appear off the ground truth; the background carries a smooth texture
    (bilinear low-frequency noise) and pixel noise. Logits are mostly confident: about -5 +- 1.3
    on background, +2 to +8 on well-seen cracks, near 0 on doubtful thin ones. (On CrackForest-like
    sizes: ROC AUC about 0.96-0.99, Dice at logit 0 about 0.7-0.8.)

    Vectorised: the random geometry (a few thousand numbers per image) is drawn on the CPU with a
    ``torch.Generator`` seeded by ``seed`` (so the target is identical on every device), points are
    sampled and scattered into the maps on ``device``; per-pixel noise comes from a generator on
    ``device`` seeded by ``seed + 1`` (deterministic per device; CPU and CUDA logits differ).

    Returns:
        ``(logits, target)``: logits ``[B, 1, H, W]`` in ``dtype``, target uint8 ``[B, 1, H, W]``
        (1 = crack), both on ``device``.
    """
    for name, value in (("batch", batch), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    density = check_number("density", density, low=0.0, high=0.5)
    _check_seed(seed)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
    device = torch.device(device)
    B, H, W = int(batch), int(height), int(width)
    gen = torch.Generator().manual_seed(int(seed))
    f32 = torch.float32

    # --- how much crack: lengths scaled so that sum(length * width) hits the area per image.
    diag = math.hypot(H, W)
    typical = max(16.0, 0.3 * diag)  # typical main-crack length
    seg = min(8.0, typical / 4)
    area = density * H * W * (0.75 + 0.5 * torch.rand(B, generator=gen))  # [B]
    n_main = 0 if density == 0 else max(1, round(0.8 * density * H * W / (typical * 3.0)))
    n_branch = n_main
    n_fp = max(1, round(0.5 * n_main))

    main_len = 0.5 + torch.rand(B, n_main, generator=gen)
    branch_len = 0.15 + 0.25 * torch.rand(B, n_branch, generator=gen)
    main_w = 1.5 + 3.5 * torch.rand(B, n_main, generator=gen)
    branch_w = 1.0 + 1.5 * torch.rand(B, n_branch, generator=gen)
    planned = (main_len * main_w).sum(1) + (branch_len * branch_w).sum(1)  # [B], in units of `typical`
    scale = torch.where(planned > 0, area / (typical * planned.clamp_min(1e-12)), torch.zeros(()))
    main_seg = torch.ceil(main_len * typical * scale[:, None] / seg).long()
    branch_seg = torch.ceil(branch_len * typical * scale[:, None] / seg).long()
    fp_len = typical * (0.1 + 0.2 * torch.rand(B, n_fp, generator=gen))
    fp_seg = torch.ceil(fp_len / seg).long()
    steps = max(1, int(torch.cat([main_seg.flatten(), branch_seg.flatten(), fp_seg.flatten()]).max()))

    # --- geometry: main cracks, branches starting on them, false-positive strokes.
    size_xy = torch.tensor([W, H], dtype=f32)
    main_start = torch.rand(B, n_main, 2, generator=gen) * size_xy
    main_heading = torch.rand(B, n_main, generator=gen) * 2 * math.pi
    main_v, main_theta = _random_walks(gen, main_start, main_heading, steps, seg, 0.2)
    if n_main:
        parent = torch.randint(0, n_main, (B, n_branch), generator=gen)
        parent_seg = torch.gather(main_seg, 1, parent).clamp_min(1)
        at = (torch.rand(B, n_branch, generator=gen) * parent_seg).long()
        bidx = torch.arange(B)[:, None]
        branch_start = main_v[bidx, parent, at]
        side = torch.where(torch.rand(B, n_branch, generator=gen) < 0.5, -1.0, 1.0)
        turn = side * (0.4 + 0.8 * torch.rand(B, n_branch, generator=gen))
        branch_heading = main_theta[bidx, parent, at.clamp(max=steps - 1)] + turn
    else:
        branch_start, branch_heading = torch.zeros(B, 0, 2), torch.zeros(B, 0)
    branch_v, _ = _random_walks(gen, branch_start, branch_heading, steps, seg, 0.25)
    fp_start = torch.rand(B, n_fp, 2, generator=gen) * size_xy
    fp_v, _ = _random_walks(gen, fp_start, torch.rand(B, n_fp, generator=gen) * 2 * math.pi, steps, seg, 0.3)
    true_v = torch.cat([main_v, branch_v], dim=1)
    true_seg = torch.cat([main_seg, branch_seg], dim=1)
    true_w = _widths(gen, torch.cat([main_w, branch_w], dim=1), true_seg, steps)
    n_true = true_v.shape[1]

    # --- the imperfect model's view of each crack.
    shift = torch.randn(B, n_true, 1, 2, generator=gen) * 0.5
    pred_w = (true_w * (0.8 + 0.5 * torch.rand(B, n_true, 1, generator=gen))).clamp(1.0, 1.3 * _MAX_WIDTH)
    seg_w = (true_w[..., :-1] + true_w[..., 1:]) / 2
    conf = (0.5 + 0.12 * seg_w + 0.15 * torch.randn(B, n_true, steps, generator=gen)).clamp(0.05, 1.0)
    missed = torch.rand(B, n_true, steps, generator=gen) < torch.where(seg_w < 1.6, 0.3, 0.06)
    conf = torch.where(missed, conf * 0.15, conf)
    fp_w = _widths(gen, 1.0 + torch.rand(B, n_fp, generator=gen), fp_seg, steps)
    fp_conf = (0.35 + 0.5 * torch.rand(B, n_fp, 1, generator=gen)).expand(B, n_fp, steps)
    texture = torch.randn(B, 1, math.ceil(H / 48) + 1, math.ceil(W / 48) + 1, generator=gen)

    # --- rasterise on the device.
    to = dict(device=device)
    target = torch.zeros(B * H * W, dtype=torch.uint8, **to)
    flat, _ = _rasterise(true_v.to(**to), true_w.to(**to), true_seg.to(**to), H, W)
    target[flat] = 1
    # --- logits: smooth texture + pixel noise, raised on (predicted) cracks by 11 x confidence.
    logits = F.interpolate((1.3 * texture - 5.0).to(**to), size=(H, W), mode="bilinear", align_corners=True)
    noise_gen = torch.Generator(device=device).manual_seed(int(seed) + 1)
    chunk = max(1, (1 << 22) // (H * W))
    for start in range(0, B, chunk):
        part = logits[start : start + chunk]
        part.add_(torch.randn(part.shape, generator=noise_gen, device=device, dtype=f32), alpha=0.5)
    seen = [
        _rasterise(v.to(**to), w.to(**to), s.to(**to), H, W, margin=1.5, confidence=c.to(**to))
        for v, w, s, c in ((true_v + shift, pred_w, true_seg, conf), (fp_v, fp_w, fp_seg, fp_conf))
    ]
    flat = torch.cat([f for f, _ in seen])
    values = torch.cat([v for _, v in seen])
    # One scatter: the max over pixel i of base_i + 11 * value is base_i + 11 * (max value), so no
    # full-size map of the model's response is needed.
    flat_logits = logits.view(-1)
    flat_logits.scatter_reduce_(0, flat, flat_logits[flat] + 11.0 * values, reduce="amax")
    return logits.to(dtype), target.view(B, 1, H, W)
