"""``fastseg bench``: forward+backward of each loss, fastseg fused vs its peers, measured honestly.

The cases (:func:`default_cases`) and contenders (:data:`CONTENDERS`) live here so the command
line and the pytest-benchmark suites under ``bench/`` share them.

A *step* is ``loss = fn(z, t); loss.backward()`` on fresh leaf logits ``z`` (fp32 by default) and
uint8 targets ``t``. Per contender and case:

- **time**: median and interquartile range of ``--repeat`` steps after ``--warmup`` steps (the
  first call of ``torch.compile`` compiles, so warm-up is at least one step; its duration is
  reported as ``compile_s``). The contenders of a case take their timed steps in turn (round
  robin), so a shared machine's load falls on all of them alike. CPU: ``time.perf_counter``;
  CUDA: CUDA events around each step. A contender whose step takes over :data:`SLOW_STEP_S`
  (MONAI's Hausdorff loss at GPU sizes) gets one warm-up and :data:`SLOW_REPEAT` timed steps.
- **pixels/s**: ``B*C*H*W / median``; **speedup**: the eager reference's median / this median.
- **peak memory**, the extra memory a step allocates on top of its inputs (the gradient
  included). CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before the
  step. CPU: the peak of live tensor bytes during one extra step run under
  :class:`OpCounter`, a ``TorchDispatchMode`` that adds each new storage's size when an op
  creates it and subtracts it when the storage is freed (ops inside ``torch.library`` custom ops
  are followed into their Python implementation). Compiled code does not run ops through the
  dispatcher (under a dispatch mode ``torch.compile`` falls back to eager), so for the compiled
  contenders on CPU (``compiled``, ``fastseg_compiled``, ``fastseg_inductor``) the peak is read
  from the profiler's allocation events (:func:`allocator_peak`); the rise of the process's
  resident-set high-water mark, the fallback where the profiler lacks them, misses memory reused
  from freed blocks (it read 0 for an 8 MiB gradient).
- **bytes moved per pixel**: eager contenders (reference, peers): :class:`OpCounter` sums the
  bytes of every non-view op's tensor inputs and outputs over one step (an upper bound on DRAM
  traffic that ignores caches: what eager execution materialises). Compiled: Inductor's own count
  of the bytes its generated kernels read and write (``graph.count_bytes``, collected while the
  graphs compile). Fused: by design, from the kernel plan: the forward pass reads ``z`` and
  ``t`` once, the backward pass reads them again and writes ``dL/dz`` once, so
  ``2 * (size(z) + size(t)) + size(z)`` bytes (14 for fp32 logits and uint8 targets), plus
  ``2 * size(map)`` for a distance loss, whose passes also read its per-pixel map.
- **bandwidth** (CUDA only): ``bytes per pixel * pixels / median`` as a percentage of the
  device's copy bandwidth, measured once with a large ``copy_``.
- **error**: value and gradient against the float64 reference on the same logits
  (``|L - L_ref|`` and ``max|g - g_ref| / max|g_ref|``), checked against the tolerances of
  :mod:`fastseg.validate`; a contender outside them is marked ``WRONG``.

Contenders that do not implement the same loss, or whose library is missing, are listed as
skipped with the reason. Seeds are fixed and the environment is recorded with the results.
"""

from __future__ import annotations

import datetime
import importlib
import inspect
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .validate import DTYPES, TOLERANCES

#: The losses a default run times: the compound losses of the catalog, then their parts, then a
#: user-made sum (``"a+b"``: the sum of catalog losses, fused as a :class:`fastseg.losses.CombinedLoss`).
DEFAULT_LOSSES = (
    "hybrid_focal_margin", "unified_focal", "dibe", "bce_dice", "combo", "focal", "dice", "tversky",
    "hausdorff_dt", "distance_loss", "focal+dice",
)

SEED = 0


# ================================================================================================
# Cases
# ================================================================================================


@dataclass(frozen=True)
class Case:
    """One benchmark input: ``batch x channels x height x width`` logits of ``dtype`` and uint8 targets."""

    loss: str
    batch: int
    height: int
    width: int
    channels: int = 1
    dtype: str = "float32"
    data: str = "synthetic"
    scope: str = "image"
    seed: int = SEED

    @property
    def pixels(self) -> int:
        return self.batch * self.channels * self.height * self.width

    @property
    def shape(self) -> str:
        return f"{self.batch}x{self.channels}x{self.height}x{self.width}"

    @property
    def id(self) -> str:
        return f"{self.loss}-{self.shape}-{self.dtype}" + ("" if self.data == "synthetic" else f"-{self.data}")


def default_shapes(device, quick: bool = False) -> list[tuple[int, int, int]]:
    """``(batch, height, width)`` per device: CPU 8x1024x1024 (minutes on 2 cores), CUDA
    16x2048x2048 and 4x4096x4096 (the same pixel count at the larger image size); ``quick``: 2x32x48."""
    if quick:
        return [(2, 32, 48)]
    if torch.device(device).type == "cuda":
        return [(16, 2048, 2048), (4, 4096, 4096)]
    return [(8, 1024, 1024)]


def parse_size(text: str) -> tuple[int, int]:
    """``"1024"`` or ``"512x768"`` (height x width) as a pair of positive ints."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(text))
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise ValueError(f"size must be N or HxW with positive integers; got {text!r}")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def default_cases(
    device="cpu",
    *,
    losses=None,
    batch: int | None = None,
    size=None,
    dtype: str = "float32",
    data: str = "synthetic",
    scope: str = "image",
    quick: bool = False,
) -> list[Case]:
    """The cases of a run: every loss on every default shape, or on ``batch``/``size`` when given."""
    losses = list(losses or DEFAULT_LOSSES)
    known = importlib.import_module("fastseg.reference").__all__
    for name in losses:
        if any(term == "" for term in name.split("+")):
            raise ValueError(f"malformed sum {name!r}: write losses joined by '+', e.g. focal+dice")
        for term in terms_of(name):
            if term not in known:
                raise ValueError(f"unknown loss {term!r}; choose from {', '.join(known)}, or a sum such as focal+dice")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be one of 'float32', 'float16', 'bfloat16'; got {dtype!r}")
    if data not in ("synthetic", "crackforest"):
        raise ValueError(f"data must be 'synthetic' or 'crackforest'; got {data!r}")
    if scope not in ("image", "batch"):
        raise ValueError(f"scope must be 'image' or 'batch'; got {scope!r}")
    shapes = default_shapes(device, quick)
    if size is not None:
        h, w = parse_size(size) if not isinstance(size, tuple) else size
        shapes = [(shapes[0][0], h, w)]
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1; got {batch}")
        shapes = [(batch, h, w) for _, h, w in shapes]
    return [Case(loss, b, h, w, dtype=dtype, data=data, scope=scope) for b, h, w in shapes for loss in losses]


def make_inputs(case: Case, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, 1, H, W]`` in the case's dtype and uint8 targets, from fixed seeds.

    ``synthetic``: :func:`fastseg.data.synthetic_cracks` (thin random-walk cracks, about 1.5 % of
    the pixels, with the logits of a plausible imperfect model). ``crackforest``: the first
    ``batch`` CrackForest tiles of the case's size (:func:`fastseg.data.crackforest_tiles`:
    mosaics of consecutive photos beyond 320 x 480) with logits ``+3`` on cracks and ``-4``
    elsewhere plus N(0, 1.5) noise (seeded): the targets are real, the logits a stand-in model.
    """
    data = importlib.import_module("fastseg.data")
    dtype = DTYPES[case.dtype]
    if case.data == "synthetic":
        z, t = data.synthetic_cracks(case.batch, case.height, case.width, seed=case.seed, device=device, dtype=dtype)
        return z.contiguous(), t.contiguous()
    _, masks = data.crackforest_tiles((case.height, case.width), case.batch)
    gen = torch.Generator().manual_seed(case.seed)
    t = masks.to(torch.uint8)
    z = torch.where(t.bool(), 3.0, -4.0) + 1.5 * torch.randn(t.shape, generator=gen)
    return z.to(device=device, dtype=dtype).contiguous(), t.to(device).contiguous()


# ================================================================================================
# Contenders
# ================================================================================================


class Unavailable(Exception):
    """A contender that does not implement this case (reason in the message): listed as skipped."""


def terms_of(name: str) -> list[str]:
    """The catalog losses of a case's loss: ``"focal+dice"`` is their sum, each with its defaults."""
    return name.split("+")


def _reference(name: str):
    ref = importlib.import_module("fastseg.reference")
    fn = getattr(ref, name, None)
    if fn is None:
        raise Unavailable(f"fastseg.reference has no {name!r}")
    return fn


def _scope_kw(name: str, case: Case) -> dict:
    """``{"scope": ...}`` for losses with a region term (those whose reference takes ``scope``)."""
    return {"scope": case.scope} if "scope" in inspect.signature(_reference(name)).parameters else {}


def _summed(fns: list[Callable]) -> Callable:
    if len(fns) == 1:
        return fns[0]
    return lambda z, t: sum(fn(z, t) for fn in fns)


def reference_loss(case: Case) -> Callable:
    """The eager oracle with the case's scope and the catalog defaults (a sum: term by term)."""
    def one(name):
        fn, kw = _reference(name), _scope_kw(name, case)
        return lambda z, t: fn(z, t, **kw)

    return _summed([one(name) for name in terms_of(case.loss)])


def _functional(name: str):
    try:
        functional = importlib.import_module("fastseg.functional")
    except ImportError as err:
        raise Unavailable(f"fastseg.functional cannot be imported ({err})") from None
    fn = getattr(functional, name, None)
    if fn is None:
        raise Unavailable(f"fastseg.functional has no {name!r}")
    return fn


def fused_contender(case: Case, device, backend: str = "auto") -> Callable:
    """fastseg's fused loss; a sum of losses as one :class:`fastseg.losses.CombinedLoss` (the
    fewest fused passes its terms allow)."""
    names = terms_of(case.loss)
    if len(names) == 1:
        fn, kw = _functional(case.loss), _scope_kw(case.loss, case)
        contender = lambda z, t: fn(z, t, backend=backend, **kw)  # noqa: E731
        contender.map_passes = int(_reads_map(case.loss))
    else:
        losses = importlib.import_module("fastseg.losses")
        modules = {cls.loss_name: cls for cls in losses.FusedLoss.__subclasses__()}
        contender = losses.CombinedLoss([modules[n](backend=backend, **_scope_kw(n, case)) for n in names])
        contender.passes_per_step = len(contender.passes)
        contender.map_passes = sum(any(_reads_map(names[i]) for i in indices) for indices in contender.passes)
    contender.backend = backend
    return contender


def _reads_map(name: str) -> bool:
    """Whether the fused loss ``name`` reads a per-pixel distance map (the distance losses)."""
    return name in importlib.import_module("fastseg.functional").DISTANCE


def inductor_contender(case: Case, device) -> Callable:
    """fastseg's fused loss with ``backend="inductor"`` (CPU only): the same per-pixel formulas
    compiled into one C++ loop per pass, the fastest CPU path once compiled."""
    if torch.device(device).type != "cpu":
        raise Unavailable("backend='inductor' runs on CPU tensors only")
    return fused_contender(case, device, backend="inductor")


def compiled_fused_contender(case: Case, device) -> Callable:
    """``torch.compile`` of fastseg's fused loss (``backend="auto"``), as in a compiled training
    step: on CUDA the compiler traces into the Triton kernels, on CPU the op runs the Inductor
    backend. Its own code object per case, so the cases do not share Dynamo's recompile limit
    (and no ``torch._dynamo.reset()``, which would drop the compiled reference of the case)."""
    from fastseg.engine.inductor_path import with_own_code

    fn = fused_contender(case, device)
    compiled = torch.compile(with_own_code(lambda z, t: fn(z, t)))
    # bytes by design, as for fastseg: Inductor would count the fused ops' inputs and outputs in
    # the caller's graph and again in the passes they run (CPU)
    compiled.fused = True
    compiled.passes_per_step = getattr(fn, "passes_per_step", 1)
    compiled.map_passes = _map_passes(fn)
    return compiled


def separate_contender(case: Case, device, backend: str = "auto") -> Callable:
    """A sum of losses as one fused call per term (what ``CombinedLoss`` saves passes over)."""
    names = terms_of(case.loss)
    if len(names) == 1:
        raise Unavailable("a single loss: the same as fastseg")
    calls = [(_functional(n), _scope_kw(n, case)) for n in names]
    contender = _summed([lambda z, t, fn=fn, kw=kw: fn(z, t, backend=backend, **kw) for fn, kw in calls])
    contender.backend = backend
    contender.passes_per_step = len(calls)
    contender.map_passes = sum(_reads_map(n) for n in names)
    return contender


def reference_contender(case: Case, device) -> Callable:
    return reference_loss(case)


def compiled_contender(case: Case, device) -> Callable:
    """``torch.compile(reference)`` with default settings, compiled afresh for each case
    (``torch._dynamo.reset()``: the reference functions' code objects are shared between cases and
    would otherwise hit Dynamo's recompile limit and fall back to eager)."""
    torch._dynamo.reset()
    return torch.compile(reference_loss(case))


def _import_peer(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"{pip_name} is not installed") from None


# Catalog defaults the peers are configured with (fastseg.reference docstrings; LOSSES.md).
_EPS = 1.0
_TVERSKY = (0.3, 0.7)
_FOCAL_GAMMA = 2.0
_COMBO_THETA, _COMBO_LAM = 0.5, 0.5  # the MONAI mapping below needs lam = 0.5


def monai_contender(case: Case, device) -> Callable:
    """MONAI losses configured to compute the same loss as fastseg's defaults.

    dice: ``DiceLoss(sigmoid, smooth 1, batch=scope=="batch")``; tversky: ``TverskyLoss`` with
    (0.3, 0.7); hausdorff_dt: ``HausdorffDTLoss(alpha=2, sigmoid=True)``; focal: ``FocalLoss(gamma=2, alpha=None)`` (hard labels); bce_dice:
    ``DiceCELoss`` (BCE for one channel); combo: ``theta * WBCE(lam=0.5) = 0.25 BCE`` so
    ``DiceCELoss(lambda_ce=0.25, lambda_dice=0.5)``. MONAI's ``AsymmetricUnifiedFocalLoss`` is a
    different loss from the authors' Unified Focal (LOSSES.md) and is not listed.
    """
    losses = _import_peer("monai.losses", "monai")
    batch = case.scope == "batch"
    common = dict(sigmoid=True, smooth_nr=_EPS, smooth_dr=_EPS, batch=batch)
    if case.loss == "dice":
        mod = losses.DiceLoss(**common)
    elif case.loss == "tversky":
        mod = losses.TverskyLoss(alpha=_TVERSKY[0], beta=_TVERSKY[1], **common)
    elif case.loss == "focal":
        mod = losses.FocalLoss(gamma=_FOCAL_GAMMA, alpha=None, use_softmax=False)
    elif case.loss == "bce_dice":
        mod = losses.DiceCELoss(**common)
    elif case.loss == "combo":
        # WBCE with lam = 1 - lam = 0.5 is 0.5 * BCE.
        mod = losses.DiceCELoss(lambda_ce=_COMBO_THETA * _COMBO_LAM, lambda_dice=1 - _COMBO_THETA, **common)
    elif case.loss == "focal+dice":
        mod = losses.DiceFocalLoss(gamma=_FOCAL_GAMMA, alpha=None, **common)
    elif case.loss == "hausdorff_dt":
        # Karimi-Salcudean with alpha = 2; SciPy EDTs of the prediction and target, image by image.
        mod = losses.HausdorffDTLoss(alpha=2.0, include_background=True, sigmoid=True, reduction="mean")
    else:
        raise Unavailable(f"MONAI has no loss equal to fastseg's {case.loss}")
    return lambda z, t: mod(z, t.to(z.dtype))


def kornia_contender(case: Case, device) -> Callable:
    """``kornia.losses.binary_focal_loss_with_logits(alpha=None, gamma=2, reduction="mean")``."""
    kl = _import_peer("kornia.losses", "kornia")
    if case.loss != "focal":
        raise Unavailable(f"kornia has no loss equal to fastseg's {case.loss}")
    return lambda z, t: kl.binary_focal_loss_with_logits(z, t.to(z.dtype), alpha=None, gamma=_FOCAL_GAMMA, reduction="mean")


def torchvision_contender(case: Case, device) -> Callable:
    """``torchvision.ops.sigmoid_focal_loss(alpha=-1, gamma=2, reduction="mean")``."""
    ops = _import_peer("torchvision.ops", "torchvision")
    if case.loss != "focal":
        raise Unavailable(f"torchvision has no loss equal to fastseg's {case.loss}")
    return lambda z, t: ops.sigmoid_focal_loss(z, t.to(z.dtype), alpha=-1, gamma=_FOCAL_GAMMA, reduction="mean")


def smp_contender(case: Case, device) -> Callable:
    """segmentation_models_pytorch's binary Dice/Tversky/Focal with fastseg's defaults.

    smp reduces its Dice and Tversky over the whole batch and zeroes crack-free ones, so they
    match fastseg only with ``--scope batch`` (and batches that contain cracks).
    """
    smp = _import_peer("segmentation_models_pytorch.losses", "segmentation_models_pytorch")
    if case.loss not in ("dice", "tversky", "focal"):
        raise Unavailable(f"smp has no loss equal to fastseg's {case.loss}")
    if case.loss != "focal" and case.scope != "batch":
        raise Unavailable("smp's Dice/Tversky reduce per batch: run with --scope batch")
    if case.loss == "dice":
        mod = smp.DiceLoss("binary", from_logits=True, smooth=_EPS)
    elif case.loss == "tversky":
        mod = smp.TverskyLoss("binary", from_logits=True, smooth=_EPS, alpha=_TVERSKY[0], beta=_TVERSKY[1], gamma=1.0)
    else:
        mod = smp.FocalLoss("binary", alpha=None, gamma=_FOCAL_GAMMA)
    return lambda z, t: mod(z, t.to(z.dtype))


#: name -> (kind, factory(case, device) -> fn(z, t)); the order is the table's.
CONTENDERS: dict[str, tuple[str, Callable]] = {
    "fastseg": ("fused", fused_contender),
    "fastseg_separate": ("fused", separate_contender),
    "fastseg_inductor": ("fused", inductor_contender),
    "reference": ("eager", reference_contender),
    "compiled": ("compiled", compiled_contender),
    "fastseg_compiled": ("compiled", compiled_fused_contender),
    "monai": ("eager", monai_contender),
    "kornia": ("eager", kornia_contender),
    "torchvision": ("eager", torchvision_contender),
    "smp": ("eager", smp_contender),
}


# ================================================================================================
# Measuring
# ================================================================================================


def _unique_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses (a broadcast dimension counts once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


class OpCounter(TorchDispatchMode):
    """Counts, over the ops dispatched while active: ``ops`` (non-view ops), ``bytes`` (their
    tensor inputs plus outputs) and ``peak`` (the high-water mark of live bytes of the storages
    the ops created; storages that existed before are not counted)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.bytes = 0
        self.live = 0
        self.peak = 0
        self._storages: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._storages.pop(key, 0)

    def _track(self, out, inputs) -> None:
        """Start tracking the storages ``out`` created (not views of, or in-place into, ``inputs``)."""
        seen = {x.untyped_storage().data_ptr() for x in inputs if x.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            key, n = st.data_ptr(), st.nbytes()
            if n == 0 or key in self._storages or key in seen:
                continue
            self._storages[key] = n
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(st, self._free, key)

    def _call(self, func, args, kwargs):
        """Run ``func``; a ``torch.library`` custom op runs its Python body with this mode active."""
        if func.namespace not in ("aten", "prim", "prims", "_c10d_functional"):
            try:
                from torch._library.custom_ops import OPDEFS

                opdef = OPDEFS.get(func._schema.name)
            except Exception:  # noqa: BLE001 - private API; fall back to counting the op as one
                opdef = None
            if opdef is not None:
                device = next((a.device.type for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)), "cpu")
                body = opdef._backend_fns.get(device) or opdef._init_fn
                if body is not None:
                    with self:
                        return body(*args, **kwargs)
        return func(*args, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._call(func, args, kwargs)
        inputs = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        if not func.is_view and func.namespace in ("aten", "prim", "prims"):
            tensors = inputs + [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
            if tensors:
                self.ops += 1
                self.bytes += sum(_unique_bytes(x) for x in tensors)
        self._track(out, inputs)
        return out


def _read_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop lines) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocator_peak(run) -> int | None:
    """The most bytes the CPU allocator held during ``run()`` above what it held before: the
    profiler's allocation events (sizes, + for an allocation, - for a free) replayed in time order.
    It sees compiled code's buffers, which a ``TorchDispatchMode`` does not, and memory reused from
    blocks freed before, which the resident set does not. ``None`` where this torch's profiler
    does not expose the events (a private API: ``kineto_results.experimental_event_tree``)."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    try:
        stack, events = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation:
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
            stack.extend(node.children)
    except AttributeError:
        return None
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


@contextmanager
def rss_peak():
    """Yield a dict whose ``"bytes"`` is, on exit, the rise of the resident-set high-water mark
    (Linux; ``None`` where ``/proc/self/clear_refs`` cannot reset it)."""
    result = {"bytes": None}
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _read_status("VmRSS")
    except OSError:
        before = None
    yield result
    after = _read_status("VmHWM")
    if before is not None and after is not None:
        result["bytes"] = max(after - before, 0)


@contextmanager
def inductor_bytes():
    """Collect Inductor's count of bytes its generated kernels access while graphs compile.

    Inductor only counts when its metrics logger is enabled, and only while it compiles (not on
    a cache hit), so the FX-graph and AOT-autograd caches are bypassed inside this block. Yields a
    dict whose ``"bytes"`` is the total on exit, ``None`` when the internals are not available.
    """
    result = {"bytes": None}
    try:
        import torch._inductor.compile_fx as compile_fx
        import torch._inductor.metrics as metrics

        log = compile_fx.inductor_metrics_log
        patches = [torch._inductor.config.patch(fx_graph_cache=False),
                   torch._functorch.config.patch(enable_autograd_cache=False)]
    except Exception:  # noqa: BLE001 - private API moved: report n/a
        yield result
        return
    saved = (log.level, log.propagate)
    handler = logging.NullHandler()
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    metrics.reset()
    try:
        with patches[0], patches[1]:
            yield result
        result["bytes"] = metrics.num_bytes_accessed or None
    finally:
        log.setLevel(saved[0])
        log.propagate = saved[1]
        log.removeHandler(handler)


def fused_bytes_per_pixel(z: torch.Tensor, t: torch.Tensor, passes: int = 1, map_passes: int = 0) -> float:
    """Bytes per pixel the fused kernels move by design: read z, t forward; read z, t and write
    dL/dz backward; once per fused pass (a sum of losses may need several); a pass of a distance
    loss also reads its map in both (float32, float64 for float64 logits). The making of the map
    (EDT, normalisation) is not counted: kernel traffic only."""
    map_size = 8 if z.dtype == torch.float64 else 4
    return passes * (2 * (z.element_size() + t.element_size()) + z.element_size()) + map_passes * 2 * map_size


def _map_passes(fn) -> int:
    """How many of a fused contender's passes read a distance map (``map_passes`` set by its
    factory; a single distance loss: 1)."""
    return getattr(fn, "map_passes", 0)


def sync(device) -> None:
    """Wait for the device (CUDA) to finish queued work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step(fn, z, t):
    """One training step of the loss: ``fn(z, t).backward()`` on a cleared ``z.grad``."""
    z.grad = None
    loss = fn(z, t)
    loss.backward()
    return loss


def time_steps(fn, z, t, repeat: int, device) -> list[float]:
    """Seconds per step for ``repeat`` steps (CUDA events on a GPU)."""
    times = []
    cuda = torch.device(device).type == "cuda"
    for _ in range(repeat):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(fn, z, t)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step(fn, z, t)
            times.append(time.perf_counter() - t0)
    return times


def copy_bandwidth(device, nbytes: int = 1 << 30) -> float | None:
    """The device's copy bandwidth in bytes/s (read + write of a ``nbytes`` buffer), CUDA only."""
    if torch.device(device).type != "cuda":
        return None
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * nbytes * 10 / (start.elapsed_time(end) / 1e3)


@dataclass
class Result:
    """One row of the results: a contender on a case (``status`` "ok", "skipped" or "error")."""

    case: str
    loss: str
    shape: str
    dtype: str
    data: str
    contender: str
    kind: str
    status: str
    note: str = ""
    median_ms: float | None = None
    q1_ms: float | None = None
    q3_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    repeat: int = 0
    compile_s: float | None = None
    pixels_per_s: float | None = None
    speedup: float | None = None
    peak_mb: float | None = None
    peak_method: str | None = None
    bytes_per_pixel: float | None = None
    bytes_method: str | None = None
    ops_per_step: int | None = None
    bandwidth_pct: float | None = None
    value_err: float | None = None
    grad_err: float | None = None
    correct: bool | None = None


def oracle(case: Case, z, t):
    """The float64 reference value and gradient on the case's logits."""
    z64 = z.detach().double().requires_grad_(True)
    loss = reference_loss(case)(z64, t)
    loss.backward()
    return float(loss.detach()), z64.grad


def _error(res: Result, err: Exception) -> None:
    res.status, res.note = "error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def _prepare(res: Result, case: Case, fn, z, t, *, device, warmup: int, truth) -> None:
    """First call (compiles a compiled contender, counts Inductor's bytes), the error check, warm-up."""
    kind = res.kind
    with inductor_bytes() if kind == "compiled" else _nullctx() as counted, _quiet_dynamo() as breaks:
        t0 = time.perf_counter()
        loss = step(fn, z, t)
        sync(device)
        first = time.perf_counter() - t0
    if kind == "compiled":
        res.compile_s = first
        if counted["bytes"] and not getattr(fn, "fused", False):
            res.bytes_per_pixel, res.bytes_method = counted["bytes"] / case.pixels, "inductor"
        if breaks["count"]:
            res.note = f"{breaks['count']} graph break(s): {breaks['reason']}"[:300]
    if truth is not None:
        value, grad = truth
        res.value_err = abs(float(loss.detach().double()) - value)
        scale = float(grad.abs().max()) or 1.0
        res.grad_err = float((z.grad.double() - grad).abs().max()) / scale
        tol = TOLERANCES[DTYPES[case.dtype]]
        res.correct = bool(res.value_err <= tol.value * (1 + abs(value)) and res.grad_err <= tol.grad)
    if kind == "compiled" or first <= SLOW_STEP_S:  # a multi-second step needs no warming up
        for _ in range(max(warmup - 1, 0)):
            step(fn, z, t)
    sync(device)
    z.grad = None


def _count(res: Result, case: Case, fn, z, t, *, device) -> None:
    """One untimed step under the counters: ops, bytes per pixel, and (CPU) peak memory."""
    cuda = torch.device(device).type == "cuda"
    z.grad = None
    # backend="inductor" compiles inside the op, and under a dispatch mode runs the eager torch path
    # instead: its peak is taken like the compiled contender's
    if res.kind == "compiled" or getattr(fn, "backend", None) == "inductor":
        if res.kind == "fused" or getattr(fn, "fused", False):
            res.bytes_per_pixel, res.bytes_method = fused_bytes_per_pixel(z, t, getattr(fn, "passes_per_step", 1), _map_passes(fn)), "design"
        if not cuda:
            peak = allocator_peak(lambda: step(fn, z, t))
            if peak is not None:
                res.peak_mb, res.peak_method = peak / 2**20, "profiler allocations"
            else:
                z.grad = None
                with rss_peak() as rss:
                    step(fn, z, t)
                if rss["bytes"] is not None:
                    res.peak_mb, res.peak_method = rss["bytes"] / 2**20, "rss high-water"
    else:
        if res.kind == "fused":
            res.bytes_per_pixel, res.bytes_method = fused_bytes_per_pixel(z, t, getattr(fn, "passes_per_step", 1), _map_passes(fn)), "design"
        counter = OpCounter()
        try:
            with counter:
                step(fn, z, t)
        except Exception as err:  # noqa: BLE001 - e.g. a kernel wrapper that cannot run under a mode
            res.note = f"not countable under a dispatch mode ({type(err).__name__}: {err})"[:300]
            z.grad = None
            return
        res.ops_per_step = counter.ops
        if not cuda:
            res.peak_mb, res.peak_method = counter.peak / 2**20, "dispatch live bytes"
        if res.kind != "fused":
            res.bytes_per_pixel, res.bytes_method = counter.bytes / case.pixels, "dispatch count"
    z.grad = None


#: A contender whose step takes longer (MONAI's Hausdorff loss at GPU sizes: SciPy, image by image,
#: four transforms each, tens of seconds) gets one warm-up and SLOW_REPEAT timed steps, not --repeat.
SLOW_STEP_S = 2.0
SLOW_REPEAT = 3


def _timed_enough(times: list[float]) -> bool:
    return len(times) >= SLOW_REPEAT and statistics.median(times) > SLOW_STEP_S


def _finish(res: Result, case: Case, times: list[float], bandwidth: float | None) -> None:
    ms = sorted(x * 1e3 for x in times)
    res.status = "ok"
    if len(times) < res.repeat:
        res.repeat = len(times)
        res.note = (res.note + "; " if res.note else "") + f"{len(times)} timed steps (a step takes over {SLOW_STEP_S:g} s)"
    res.median_ms = statistics.median(ms)
    if len(ms) >= 2:
        q = statistics.quantiles(ms, n=4, method="inclusive")
        res.q1_ms, res.q3_ms = q[0], q[2]
    else:
        res.q1_ms = res.q3_ms = ms[0]
    res.min_ms, res.max_ms = ms[0], ms[-1]
    res.pixels_per_s = case.pixels / (res.median_ms / 1e3)
    if bandwidth and res.bytes_per_pixel:
        res.bandwidth_pct = 100 * res.bytes_per_pixel * res.pixels_per_s / bandwidth


def measure_case(case: Case, names, z, t, *, device, repeat: int, warmup: int, truth=None,
                 factories: dict | None = None, bandwidth: float | None = None, on_contender=None) -> list[Result]:
    """Time the contenders ``names`` on one case; one :class:`Result` each (module docstring).

    The timed steps are interleaved (one step of each contender in turn, ``repeat`` rounds), so
    load from other processes on a shared machine falls on every contender alike.
    """
    factories = factories or {}
    cuda = torch.device(device).type == "cuda"
    live = []  # (result, fn, z copy, step times, cuda peak)
    results = {}
    # The torch.compile'd contenders are made first, `compiled` first of all: its factory resets
    # Dynamo, which would drop what a contender made before had compiled and time its recompilation.
    for name in sorted(names, key=lambda n: (n != "compiled", CONTENDERS.get(n, ("eager",))[0] != "compiled")):
        kind, default_factory = CONTENDERS.get(name, ("eager", None))
        res = Result(case.id, case.loss, case.shape, case.dtype, case.data, name, kind, "skipped", repeat=repeat)
        results[name] = res
        if on_contender:
            on_contender(name)
        try:
            fn = (factories.get(name) or default_factory)(case, device)
        except Unavailable as why:
            res.note = str(why)
            continue
        except Exception as err:  # noqa: BLE001 - a peer that fails to construct is reported, not fatal
            _error(res, err)
            continue
        zc = z.detach().clone().requires_grad_(True)
        try:
            _prepare(res, case, fn, zc, t, device=device, warmup=warmup, truth=truth)
        except Exception as err:  # noqa: BLE001 - a contender that crashes is reported, not fatal
            _error(res, err)
            continue
        live.append([res, fn, zc, [], 0])
    for _ in range(repeat):
        for entry in live:
            res, fn, zc, times, _ = entry
            if res.status == "error" or _timed_enough(times):
                continue
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                times += time_steps(fn, zc, t, 1, device)
                zc.grad = None
                if cuda:
                    entry[4] = max(entry[4], torch.cuda.max_memory_allocated(device) - base)
            except Exception as err:  # noqa: BLE001
                _error(res, err)
    for res, fn, zc, times, cuda_peak in live:
        if res.status == "error":
            continue
        try:
            if cuda:
                res.peak_mb, res.peak_method = cuda_peak / 2**20, "cuda allocator"
            _count(res, case, fn, zc, t, device=device)
        except Exception as err:  # noqa: BLE001
            _error(res, err)
            continue
        _finish(res, case, times, bandwidth)
    return [results[name] for name in names]


def measure(case: Case, name: str, z, t, *, device, repeat: int, warmup: int, truth=None,
            factory: Callable | None = None, bandwidth: float | None = None) -> Result:
    """:func:`measure_case` for one contender (``factory`` overrides the built-in one)."""
    factories = {name: factory} if factory else None
    return measure_case(case, [name], z, t, device=device, repeat=repeat, warmup=warmup, truth=truth,
                        factories=factories, bandwidth=bandwidth)[0]


@contextmanager
def _nullctx():
    yield {"bytes": None}


@contextmanager
def _quiet_dynamo():
    """Silence Dynamo's graph-break warnings; yield ``{"count", "reason"}`` of the breaks seen."""
    result = {"count": 0, "reason": ""}
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001
        yield result
        return
    counters["graph_break"].clear()
    log = logging.getLogger("torch._dynamo")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield result
    finally:
        log.setLevel(level)
        breaks = counters["graph_break"]
        result["count"] = sum(breaks.values())
        result["reason"] = next(iter(breaks), "").splitlines()[0] if breaks else ""


# ================================================================================================
# A run
# ================================================================================================


class ProgressBar:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool = True, stream=None, width: int = 28):
        self.total, self.done, self.enabled, self.width = max(total, 1), 0, enabled, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def update(self, label: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        filled = int(self.width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                          f"{elapsed:5.0f}s {label[:50]:<50}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def environment(device) -> dict:
    """What the numbers depend on: versions, device, driver, CPU, threads, date."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    for mod in ("triton", "numpy", "monai", "kornia", "torchvision", "segmentation_models_pytorch"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            env[mod] = None
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["driver"] = _nvidia_driver()
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            models = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        models = []
    return models[0] if models else platform.processor() or "unknown"


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def run(cases: list[Case], contenders=None, *, device="cpu", repeat: int = 5, warmup: int = 1,
        check: bool = True, progress: bool = True, factories: dict | None = None, command: str | None = None,
        on_case: Callable[[dict], None] | None = None) -> dict:
    """Measure every contender on every case; return ``{"environment", "settings", "results"}``.

    ``factories`` adds or replaces contenders (``name -> factory(case, device)``, kind "eager"
    unless the name is a built-in one); the tests use it to time a known op sequence.
    ``on_case`` receives the report so far after each case (``settings["cases_done"]`` of
    ``settings["cases"]``), so a run cut short by a time limit leaves what it measured.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1; got {repeat}")
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the first step compiles and is checked); got {warmup}")
    factories = dict(factories or {})
    names = list(contenders or CONTENDERS)
    for n in names:
        if n not in CONTENDERS and n not in factories:
            raise ValueError(f"unknown contender {n!r}; choose from {', '.join([*CONTENDERS, *factories])}")
    device = torch.device(device)
    bar = ProgressBar(len(cases) * len(names), enabled=progress)
    bandwidth = copy_bandwidth(device)
    results = []
    env = environment(device)

    def report(done: int) -> dict:
        return {
            "environment": env,
            "settings": {"repeat": repeat, "warmup": warmup, "seed": SEED, "device": str(device), "check": check,
                         "copy_bandwidth_gbs": bandwidth / 1e9 if bandwidth else None,
                         "command": command or " ".join(sys.argv), "cases": len(cases), "cases_done": done},
            "results": [asdict(r) for r in results],
        }

    inputs_key, z, t = None, None, None
    for done, case in enumerate(cases, 1):
        key = (case.batch, case.height, case.width, case.dtype, case.data, case.seed)
        if key != inputs_key:
            z = t = None
            torch.manual_seed(case.seed)
            z, t = make_inputs(case, device)
            inputs_key = key
        truth = oracle(case, z, t) if check else None
        case_rows = measure_case(case, names, z, t, device=device, repeat=repeat, warmup=warmup, truth=truth,
                                 factories=factories, bandwidth=bandwidth,
                                 on_contender=lambda name: bar.update(f"{case.loss} {case.shape} {name}"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        base = next((r for r in case_rows if r.contender == "reference" and r.status == "ok"), None)
        for r in case_rows:
            if base and r.status == "ok":
                r.speedup = base.median_ms / r.median_ms
        results += case_rows
        truth = None
        if on_case:
            on_case(report(done))
    bar.close()
    return report(len(cases))


# ================================================================================================
# Reports
# ================================================================================================

_COLUMNS = (
    ("loss", lambda r: r["loss"]),
    ("shape", lambda r: r["shape"]),
    ("contender", lambda r: r["contender"]),
    ("median ms", lambda r: _num(r["median_ms"], ".1f")),
    ("IQR ms", lambda r: f"{r['q1_ms']:.1f}-{r['q3_ms']:.1f}" if r["q1_ms"] is not None else "-"),
    ("Mpx/s", lambda r: _num(r["pixels_per_s"] and r["pixels_per_s"] / 1e6, ".1f")),
    ("speedup", lambda r: _num(r["speedup"], ".2f", "x")),
    ("peak MiB", lambda r: _num(r["peak_mb"], ".0f" if (r["peak_mb"] or 0) >= 10 else ".2f")),
    ("B/px", lambda r: _num(r["bytes_per_pixel"], ".1f") + ("*" if r["bytes_method"] == "design" else "")),
    ("ops", lambda r: _num(r["ops_per_step"], "d")),
    ("BW %", lambda r: _num(r["bandwidth_pct"], ".0f")),
    ("err value/grad", lambda r: "-" if r["value_err"] is None else
        f"{r['value_err']:.0e}/{r['grad_err']:.0e}" + ("" if r["correct"] else " WRONG")),
)


def _num(x, fmt: str, suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt) + suffix


def _rows(report: dict):
    ok = [r for r in report["results"] if r["status"] == "ok"]
    other = [r for r in report["results"] if r["status"] != "ok"]
    return ok, other


def _env_line(report: dict) -> str:
    e, s = report["environment"], report["settings"]
    dev = e.get("gpu") or e["cpu"]
    parts = [f"{e['date']}", f"device {s['device']} ({dev})", f"torch {e['torch']}", f"triton {e.get('triton')}",
             f"{e['threads']} threads", f"repeat {s['repeat']} (+{s['warmup']} warm-up)"]
    if e.get("load_average"):
        parts.append(f"load average {e['load_average'][0]:.1f} at start")
    if e.get("driver"):
        parts.append(f"driver {e['driver']}")
    return ", ".join(parts)


def table(report: dict) -> str:
    """The terminal table, with skipped contenders and notes below it."""
    ok, other = _rows(report)
    cells = [[f(r) for _, f in _COLUMNS] for r in ok]
    header = [h for h, _ in _COLUMNS]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines += ["", *_notes(report, other), "", _env_line(report)]
    return "\n".join(lines)


def _notes(report: dict, other) -> list[str]:
    checked = report["settings"].get("check", True)
    lines = ["B/px: bytes moved per pixel per step (* = by design of the fused kernels; others counted).",
             "err: |value - float64 reference| / max|grad - reference grad| relative to max|reference grad|."
             if checked else "err: not checked (--no-check)."]
    grouped: dict[tuple, list[str]] = {}
    for r in [*other, *(r for r in report["results"] if r["status"] == "ok" and r["note"])]:
        note = r["note"].replace(f"fastseg's {r['loss']}", "fastseg's")
        grouped.setdefault((r["contender"], "note" if r["status"] == "ok" else r["status"], note), []).append(r["loss"])
    for (contender, status, note), losses in grouped.items():
        where = ", ".join(dict.fromkeys(losses))
        lines.append(f"{status}: {contender}: {note}" + (f" ({where})" if note.endswith("fastseg's") or status == "note" else ""))
    return lines


def markdown(report: dict) -> str:
    """A markdown page: environment, the table, the notes."""
    ok, other = _rows(report)
    header = [h for h, _ in _COLUMNS]
    lines = [f"# fastseg bench: {report['settings']['device']}", "", _env_line(report), "",
             f"Command: `{report['settings']['command']}`", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(f(r) for _, f in _COLUMNS) + " |" for r in ok]
    lines += [""] + [f"- {n}" for n in _notes(report, other)]
    return "\n".join(lines) + "\n"


def write_json(report: dict, path) -> None:
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)


def plot(report: dict, path) -> None:
    """A PNG: median step time (with IQR) and peak memory per contender, one row per case."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'fastseg[bench]' (or pip install matplotlib)") from None
    ok, _ = _rows(report)
    cases = list(dict.fromkeys(r["case"] for r in ok))
    if not cases:
        raise RuntimeError("nothing to plot: no contender ran")
    fig, axes = plt.subplots(len(cases), 2, figsize=(11, 2.2 + 1.9 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        rs = [r for r in ok if r["case"] == case]
        names = [r["contender"] for r in rs]
        y = range(len(rs))
        med = [r["median_ms"] for r in rs]
        err = [[r["median_ms"] - r["q1_ms"] for r in rs], [r["q3_ms"] - r["median_ms"] for r in rs]]
        colors = ["tab:red" if r["correct"] is False else "tab:blue" if r["kind"] == "fused" else "tab:gray" for r in rs]
        row[0].barh(y, med, xerr=err, color=colors)
        row[0].set_yticks(list(y), names)
        row[0].set_xlabel("ms per forward+backward step (median, IQR)")
        row[0].set_title(case, fontsize=9)
        mem = [r["peak_mb"] or 0 for r in rs]
        row[1].barh(y, mem, color=colors)
        row[1].set_yticks(list(y), names)
        row[1].set_xlabel("peak extra memory (MiB)")
    fig.suptitle(_env_line(report), fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ================================================================================================
# EDT
# ================================================================================================


def edt_benchmark(device="cpu", *, batch: int | None = None, size=None, repeat: int = 5, warmup: int = 1,
                  density: float = 0.015) -> dict:
    """Time :func:`fastseg.edt.edt` on a batch of synthetic crack masks against SciPy.

    Masks: :func:`fastseg.data.synthetic_cracks` targets ``[B, 1, H, W]`` (default CPU 8x1024x1024,
    CUDA 16x2048x2048). Contenders: ``fastseg`` (``backend="auto"``: the native C lower envelope
    on CPU, the Triton kernels on CUDA; the whole batch in one call), ``fastseg_sq`` (the same,
    ``squared=True``: the transform without the float64 square root, what the distance losses
    use) and ``scipy``
    (``scipy.ndimage.distance_transform_edt`` image by image on the CPU, the peers' way; for CUDA
    masks the copy to the host is included). Reports the median seconds per call and milliseconds
    per 1024x1024-equivalent image (``median / (pixels / 2**20)``), and checks that both give the
    same distances. A contender whose call takes over :data:`SLOW_STEP_S` (SciPy on a GPU-sized
    batch: about 14 s for 16 images of 2048x2048 on this project's CPU) gets one warm-up call
    and :data:`SLOW_REPEAT` timed ones.
    """
    import numpy as np
    from scipy import ndimage

    data = importlib.import_module("fastseg.data")
    edt_mod = importlib.import_module("fastseg.edt")
    device = torch.device(device)
    b, h, w = default_shapes(device)[0]
    if size is not None:
        h, w = parse_size(size) if not isinstance(size, tuple) else size
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer; got {batch!r}")
        b = batch
    _, t = data.synthetic_cracks(b, h, w, density=density, seed=SEED, device=device)
    mask = t.bool().reshape(b, 1, h, w)

    def fastseg_edt():
        return edt_mod.edt(mask)

    def scipy_edt():
        masks = mask.cpu().numpy()
        out = np.empty(masks.shape, np.float64)
        for i in range(masks.shape[0]):
            out[i, 0] = ndimage.distance_transform_edt(~masks[i, 0])
        return torch.from_numpy(out)

    report = {"device": str(device), "shape": f"{b}x1x{h}x{w}", "environment": environment(device), "results": {}}
    fns = {"fastseg": fastseg_edt, "fastseg_sq": lambda: edt_mod.edt(mask, squared=True), "scipy": scipy_edt}
    times = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up; a multi-second call (SciPy at GPU sizes) needs only one
        start = time.perf_counter()
        out = fn()
        sync(device)
        if name == "scipy":
            want = out
        if time.perf_counter() - start <= SLOW_STEP_S:
            for _ in range(warmup - 1):
                fn()
    for _ in range(repeat):
        for name, fn in fns.items():  # round robin: load falls on both alike
            if _timed_enough(times[name]):
                continue
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    same = torch.equal(edt_mod.edt(mask, dtype=torch.float64).cpu(), want)  # bit-identical in float64
    same = same and torch.equal(edt_mod.edt(mask, squared=True, dtype=torch.float64).cpu(), want.square().round())
    mpix = b * h * w / 2**20
    for name, ts in times.items():
        med = statistics.median(ts)
        report["results"][name] = {"median_s": med, "ms_per_1024_image": 1000 * med / mpix, "repeat": len(ts)}
    report["speedup_vs_scipy"] = report["results"]["scipy"]["median_s"] / report["results"]["fastseg"]["median_s"]
    report["equal"] = same
    return report
