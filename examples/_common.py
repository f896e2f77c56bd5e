"""Shared pieces of the examples: a small U-Net, the data, the training loop and the evaluation.

Every example script imports this one module (one copy of each piece):

- :class:`UNet`: a plain U-Net (two 3x3 conv + BatchNorm + ReLU per level, max-pool down,
  transposed-conv up, skip connections), widths ``(8, 16, 32, 64, 128)`` by default, about
  480 thousand parameters, no pretrained weights. Inputs must be multiples of 16 in height and
  width; :func:`predict` pads full images by reflection and crops back.
- :func:`load_data`: CrackForest through :func:`fastseg.data.load_crackforest` (its fixed split
  ``.split(70, 20)``: ids 1-70 train, 71-90 validate), or a user's folder ``DIR/images`` + ``DIR/masks``
  (PNG/JPG, masks nonzero = crack; the last 20 % of the sorted names form the validation split).
- :func:`random_batch`: random crops with random horizontal and vertical flips.
- :func:`make_loss`: any loss of :mod:`fastseg.functional` by name, its keyword parameters passed
  through (checked against the function's signature, so a typo is an error, not a silent no-op).
- :func:`train`: Adam (warm-up + cosine learning rate), a fixed number of steps per epoch, a
  progress bar per epoch.
- :func:`evaluate`: full validation images through the model, then :mod:`fastseg.metrics`:
  IoU, precision, recall, F1 at threshold 0.5 from the counts pooled over the split, ODS and OIS
  (optionally with a matching tolerance in pixels) and OII.
- :func:`save_outputs`: checkpoint, metrics JSON and a PNG of a few validation images.

Everything here runs on a CPU in minutes with the default sizes; on a GPU it uses the GPU.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Examples run from a checkout without installing the package: make ``import fastseg`` work.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import fastseg.data  # noqa: E402
import fastseg.metrics  # noqa: E402

# --------------------------------------------------------------------------------------------
# Model


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A small U-Net for binary segmentation: RGB in, one logit per pixel out.

    ``widths`` are the channels per level, finest first; the input's height and width must be
    multiples of ``2 ** (len(widths) - 1)``.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64, 128), in_channels: int = 3):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths must have at least 2 levels; got {widths!r}")
        self.widths = tuple(int(w) for w in widths)
        self.down = nn.ModuleList()
        cin = in_channels
        for w in self.widths:
            self.down.append(_DoubleConv(cin, w))
            cin = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_coarse, w_fine in zip(self.widths[:0:-1], self.widths[-2::-1]):
            self.up.append(nn.ConvTranspose2d(w_coarse, w_fine, 2, stride=2))
            self.dec.append(_DoubleConv(2 * w_fine, w_fine))
        self.head = nn.Conv2d(self.widths[0], 1, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Split:
    """Images ``uint8 [N, H, W, 3]`` and masks ``uint8 [N, H, W]`` (1 = crack), plus names."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]


def _read_image(path: Path) -> np.ndarray:
    """An image file as ``uint8 [H, W, C]`` (PIL if installed, else matplotlib.image)."""
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        return np.asarray(Image.open(path))
    try:
        import matplotlib.image as mpimg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading --data images needs Pillow or matplotlib: pip install pillow") from err
    arr = mpimg.imread(path)
    if arr.dtype != np.uint8:  # matplotlib reads PNG as float in [0, 1]
        arr = np.round(arr * 255).astype(np.uint8)
    return arr


_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_folder(root: str | os.PathLike, val_fraction: float = 0.2) -> tuple[Split, Split]:
    """A user's data set: ``root/images/*`` and ``root/masks/*`` paired by file stem.

    Masks may be grey or RGB; any nonzero value is crack. Images are converted to RGB. The
    sorted list is split: the last ``val_fraction`` (at least one image) is the validation split.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise ValueError(f"--data must be a folder with 'images' and 'masks' subfolders; got {str(root)!r}")
    masks_by_stem = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in _EXTS}
    pairs = [(p, masks_by_stem[p.stem]) for p in sorted(img_dir.iterdir()) if p.suffix.lower() in _EXTS and p.stem in masks_by_stem]
    if len(pairs) < 2:
        raise ValueError(f"--data needs at least 2 image/mask pairs with matching names; found {len(pairs)} in {str(root)!r}")
    images, masks = [], []
    for ip, mp in pairs:
        im = _read_image(ip)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        im = im[..., :3]
        m = _read_image(mp)
        if m.ndim == 3:
            m = m[..., :3].max(axis=-1)
        if m.shape != im.shape[:2]:
            raise ValueError(f"mask {mp.name} has shape {m.shape}, image {ip.name} has {im.shape[:2]}")
        images.append(im.astype(np.uint8))
        masks.append((m > 0).astype(np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"all --data images must have one size; found {sorted(shapes)}")
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    names = [ip.stem for ip, _ in pairs]
    images, masks = np.stack(images), np.stack(masks)
    return (
        Split(images[:-n_val], masks[:-n_val], names[:-n_val]),
        Split(images[-n_val:], masks[-n_val:], names[-n_val:]),
    )


def load_data(data: str | None = None, crackforest: str | None = None) -> tuple[Split, Split]:
    """``(train, val)``: a user's folder if ``data`` is given, else CrackForest's fixed split.
    A missing or malformed data set ends the script with its message (``SystemExit``), not a traceback."""
    try:
        if data is not None:
            return load_folder(data)
        cf = fastseg.data.load_crackforest(crackforest)
    except (ValueError, FileNotFoundError) as err:
        hint = "" if data is not None else "\n(pass --crackforest PATH, or --data DIR for your own images)"
        raise SystemExit(f"error: {err}{hint}") from None
    train, val = cf.split(70, 20)
    return _split_of(train), _split_of(val)


def _split_of(cf) -> Split:
    """A :class:`fastseg.data.CrackForest` (``[N, 3, H, W]`` / ``[N, 1, H, W]`` tensors) as a Split."""
    images = np.ascontiguousarray(cf.images.numpy().transpose(0, 2, 3, 1))
    return Split(images, cf.masks[:, 0].numpy(), [f"{int(i):03d}" for i in cf.ids])


class Normalizer:
    """Per-channel standardisation with the training split's mean and standard deviation."""

    def __init__(self, images: np.ndarray):
        flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        self.mean = flat.mean(0).astype(np.float32)
        self.std = np.maximum(flat.std(0), 1e-3).astype(np.float32)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """``uint8 [N, H, W, 3]`` -> float32 ``[N, 3, H, W]``."""
        x = (images.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def random_batch(split: Split, batch: int, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` random ``crop x crop`` windows with random horizontal/vertical flips."""
    n, h, w = split.masks.shape
    if crop > h or crop > w:
        raise ValueError(f"crop must be at most the image size {h}x{w}; got {crop}")
    idx = rng.integers(0, n, size=batch)
    ys = rng.integers(0, h - crop + 1, size=batch)
    xs = rng.integers(0, w - crop + 1, size=batch)
    flips = rng.random((batch, 2)) < 0.5
    imgs, masks = [], []
    for i, y, x, (fh, fv) in zip(idx, ys, xs, flips):
        im = split.images[i, y : y + crop, x : x + crop]
        m = split.masks[i, y : y + crop, x : x + crop]
        if fh:
            im, m = im[:, ::-1], m[:, ::-1]
        if fv:
            im, m = im[::-1], m[::-1]
        imgs.append(im)
        masks.append(m)
    return np.stack(imgs), np.stack(masks)


# --------------------------------------------------------------------------------------------
# Losses


IMPLS = ("functional", "reference")


def loss_module(impl: str = "functional"):
    """:mod:`fastseg.functional` (fused, the default) or :mod:`fastseg.reference` (the eager oracle)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    return importlib.import_module(f"fastseg.{impl}")


def loss_names(impl: str = "functional") -> list[str]:
    """The public loss functions of :mod:`fastseg.functional` (or of :mod:`fastseg.reference`)."""
    mod = loss_module(impl)
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    return sorted(n for n in names if callable(getattr(mod, n, None)) and not isinstance(getattr(mod, n), type))


# Friendlier spellings of a few parameter names: ``--margin 0.5`` means ``m=0.5``.
ALIASES = {"margin": "m"}


def make_loss(name: str, impl: str = "functional", **params):
    """``fn(logits, target)`` calling ``fastseg.functional.<name>(logits, target, **params)``.

    ``impl="reference"`` takes the function of the same name from :mod:`fastseg.reference`.
    A sum such as ``"0.5*focal+dice"`` (weights optional, each loss with its defaults) is a
    :class:`fastseg.losses.CombinedLoss` (the reference: the same weighted sum, term by term).

    Raises ``ValueError`` naming the accepted names/parameters for an unknown loss or parameter.
    """
    if "+" in name or "*" in name:
        return _make_sum(name, impl, params)
    names = loss_names(impl)
    if name not in names:
        raise ValueError(f"loss must be one of {', '.join(names)}; got {name!r}")
    fn = getattr(loss_module(impl), name)
    sig = inspect.signature(fn)
    tensors = ("ignore", "weight", "distance")  # per-call tensors, not options a command line can give
    accepted = [p.name for p in list(sig.parameters.values())[2:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in tensors]
    for alias, real in ALIASES.items():
        if alias in params and alias not in accepted and real in accepted:
            params[real] = params.pop(alias)
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for key in params:
        if key not in accepted and not has_var_kw:
            raise ValueError(f"{name} has no parameter {key!r}; accepted: {', '.join(accepted)}")

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(logits, target, **params)

    loss_fn.__name__ = name
    loss_fn.params = dict(params)
    return loss_fn


def _make_sum(name: str, impl: str, params: dict):
    """``"0.5*focal+dice"`` as a weighted sum of losses with their defaults."""
    if params:
        raise ValueError(f"loss parameters ({', '.join(params)}) apply to a single loss; the terms of {name!r} take "
                         "their defaults (build a fastseg.losses.CombinedLoss in Python for more)")
    terms = []
    for part in name.split("+"):
        weight, _, term = part.strip().rpartition("*")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"a term of a sum is [weight*]loss, e.g. 0.5*focal; got {part!r}") from None
        terms.append((w, make_loss(term.strip(), impl)))
    if impl == "functional":
        loss_fn = importlib.import_module("fastseg.losses").build([{"name": fn.__name__, "weight": w} for w, fn in terms])
    else:
        def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return sum(w * fn(logits, target) for w, fn in terms)

    loss_fn.__name__ = name
    loss_fn.params = {}
    return loss_fn


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_loss_params(extra: list[str]) -> dict:
    """``['--margin', '0.5', '--scope=batch']`` -> ``{'margin': 0.5, 'scope': 'batch'}``."""
    params, i = {}, 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise ValueError(f"unexpected argument {tok!r}; loss parameters are given as --name value")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise ValueError(f"loss parameter {tok} needs a value")
            value = extra[i + 1]
            i += 2
        params[key.replace("-", "_")] = _parse_value(value)
    return params


# --------------------------------------------------------------------------------------------
# Training


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Progress:
    """A one-line progress bar on stderr: ``epoch 1/3 |#####     | 25/50 loss 0.1234 3.1 it/s``."""

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 24, stream=None):
        self.total, self.label, self.enabled, self.width = total, label, enabled, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def update(self, done: int, **info) -> None:
        if not self.enabled or (not self.tty and done != self.total):
            return
        frac = done / max(self.total, 1)
        filled = int(round(frac * self.width))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        extra = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        line = f"{self.label} |{'#' * filled}{' ' * (self.width - filled)}| {done}/{self.total} {extra} {rate:.2f} it/s"
        end = "\n" if done == self.total else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def lr_factor(step: int, total: int, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, then cosine decay to 5 %."""
    n_warm = max(1, int(warmup * total))
    if step < n_warm:
        return (step + 1) / n_warm
    frac = (step - n_warm) / max(total - n_warm, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def train(
    model: nn.Module,
    loss_fn,
    train_split: Split,
    normalize: Normalizer,
    *,
    epochs: int = 3,
    steps_per_epoch: int = 50,
    batch_size: int = 8,
    crop: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place with ``loss_fn(logits, target)``; returns the mean loss of each epoch.

    Crops and flips come from ``numpy.random.default_rng(seed)``, so two runs with the same seed
    see the same batches. (``train_compile_amp.py`` shows the same loop with AMP and
    ``torch.compile``.)
    """
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps))
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", enabled=progress)
        running = 0.0
        for step in range(steps_per_epoch):
            imgs, masks = random_batch(train_split, batch_size, crop, rng)
            x = normalize(imgs).to(device, non_blocking=True)
            t = torch.from_numpy(np.ascontiguousarray(masks)).to(device)[:, None]
            loss = loss_fn(model(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}")
            running += value
            bar.update(step + 1, loss=running / (step + 1))
        history.append(running / max(steps_per_epoch, 1))
    return history


# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, normalize: Normalizer, device="cpu", batch_size: int = 4) -> np.ndarray:
    """Crack probabilities ``float32 [N, H, W]`` for full images (reflection-padded to the model's multiple)."""
    model.eval()
    device = torch.device(device)
    mult = getattr(model, "multiple", 16)
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size]).to(device)
        h, w = x.shape[-2:]
        ph, pw = (-h) % mult, (-w) % mult
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        p = torch.sigmoid(model(x).float())[:, 0, :h, :w]
        out.append(p.cpu().numpy())
    return np.concatenate(out)


def evaluate(probs: np.ndarray, masks: np.ndarray, *, threshold: float = 0.5, tolerance: float = 2, thresholds: int = 99) -> dict:
    """Metrics of probabilities ``[N, H, W]`` against binary masks, all from :mod:`fastseg.metrics`.

    IoU, precision, recall, F1 and OII use exact pixel matching at ``threshold``, with the
    confusion counts pooled over the whole split (data-set level, as the seeds' tables report).
    ODS and OIS scan the grid ``k/(thresholds+1)`` with a matching tolerance of ``tolerance``
    pixels (0 = exact), as crack benchmarks score them (seed 002).
    """
    m = fastseg.metrics
    p = torch.from_numpy(np.ascontiguousarray(probs))[:, None]
    t = torch.from_numpy(np.ascontiguousarray(masks))[:, None]
    counts = m.confusion(p, t, threshold=threshold).total()
    out = {k: float(v) for k, v in counts.as_dict().items()}
    out.update({k: float(getattr(counts, k)) for k in ("tp", "fp", "fn", "tn")})
    scores = m.ods_ois(p, t, thresholds=thresholds, tolerance=tolerance)
    for k in ("ods_precision", "ods_recall", "ods_f1", "ods_threshold", "ois_precision", "ois_recall", "ois_f1", "ois_f1_mean"):
        out[k] = float(getattr(scores, k))
    out["tolerance"] = tolerance
    return out


def save_figure(path: str | os.PathLike, images: np.ndarray, probs: np.ndarray, masks: np.ndarray, names=None, n: int = 4, threshold: float = 0.5) -> bool:
    """PNG of ``n`` validation images: image | prediction | ground truth. False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the PNG of predictions (pip install matplotlib)", file=sys.stderr)
        return False
    n = min(n, len(images))
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.2 * n), squeeze=False)
    for r in range(n):
        title = f" {names[r]}" if names is not None else ""
        for c, (img, label) in enumerate(
            [(images[r], "image" + title), (probs[r] >= threshold, f"prediction (p >= {threshold})"), (masks[r], "ground truth")]
        ):
            ax = axes[r, c]
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=None if img.ndim == 3 else 1)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def save_outputs(out_dir: str | os.PathLike, model: nn.Module, normalize: Normalizer, metrics: dict, config: dict, val: Split, probs: np.ndarray, n_show: int = 4) -> dict:
    """Write ``model.pt``, ``metrics.json`` and ``predictions.png`` into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": out / "model.pt", "metrics": out / "metrics.json", "figure": out / "predictions.png"}
    torch.save({"model": model.state_dict(), "widths": model.widths, "normalize": normalize.state(), "config": config}, paths["checkpoint"])
    paths["metrics"].write_text(json.dumps({"config": config, "metrics": metrics}, indent=2))
    if n_show <= 0 or not save_figure(paths["figure"], val.images, probs, val.masks, val.names, n=n_show):
        paths.pop("figure")
    return {k: str(v) for k, v in paths.items()}


# --------------------------------------------------------------------------------------------
# Command line


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options shared by the example scripts (data, budget, model, evaluation)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=None, help="your own data: a folder with images/ and masks/ (PNG/JPG, same names)")
    g.add_argument("--crackforest", default=None, help="path of crackforest_001-090.npz (default: the shared copy)")
    g = parser.add_argument_group("training budget")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--steps-per-epoch", type=int, default=50)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--crop", type=int, default=128, help="training crop size (a multiple of 16)")
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--widths", default="8,16,32,64,128", help="U-Net channels per level, finest first")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--impl", choices=IMPLS, default="functional", help="fused losses (functional) or the eager oracle (reference)")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--tolerance", type=float, default=2, help="ODS/OIS matching tolerance in pixels (0 = exact)")
    g.add_argument("--thresholds", type=int, default=99, help="ODS/OIS threshold grid k/(n+1), k = 1..n")
    g.add_argument("--max-val", type=int, default=None, help="evaluate on the first N validation images only")
    return parser


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError as err:
        raise ValueError(f"--widths must be comma-separated integers; got {text!r}") from err
    return widths


def run_experiment(args, loss_name: str, loss_params: dict, train_split: Split, val: Split, *, out_dir=None, n_show: int = 4, label: str | None = None) -> dict:
    """Build the model, train it with one loss, evaluate on ``val``; optionally save outputs.

    Returns ``{"metrics": ..., "history": ..., "seconds": ..., "params": ...}``. The model's
    initial weights depend only on ``args.seed``, as do the training batches.
    """
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    loss_fn = make_loss(loss_name, getattr(args, "impl", "functional"), **loss_params)
    loss_params = loss_fn.params  # aliases resolved (--margin -> m)
    torch.manual_seed(args.seed)
    model = UNet(parse_widths(args.widths))
    normalize = Normalizer(train_split.images)
    if label:
        print(f"== {label}: {loss_name} {loss_params or ''}", file=sys.stderr)
    start = time.perf_counter()
    history = train(
        model, loss_fn, train_split, normalize,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, seed=args.seed, device=device,
        progress=not args.no_progress,
    )
    train_s = time.perf_counter() - start
    if args.max_val:
        val = Split(val.images[: args.max_val], val.masks[: args.max_val], val.names[: args.max_val])
    probs = predict(model, val.images, normalize, device)
    metrics = evaluate(probs, val.masks, tolerance=args.tolerance, thresholds=args.thresholds)
    total_s = time.perf_counter() - start
    result = {"loss": loss_name, "params": loss_params, "metrics": metrics, "history": history,
              "train_seconds": train_s, "seconds": total_s, "n_parameters": count_parameters(model)}
    if out_dir is not None:
        config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        config.update(loss=loss_name, loss_params=loss_params, device=str(device))
        result["files"] = save_outputs(out_dir, model, normalize, {**metrics, "history": history}, config, val, probs, n_show)
    return result


def format_metrics(m: dict) -> str:
    keys = ["iou", "precision", "recall", "f1", "ods_f1", "ois_f1", "oii"]
    return "  ".join(f"{k} {m[k]:.4f}" for k in keys if k in m)
