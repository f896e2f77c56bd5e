"""A native exact EDT for CPU tensors: the separable lower envelope in C, built on first use.

The C code below computes, along the first axis, the distance to the nearest target pixel of
every line by a forward and a backward sweep over whole rows of the other axes (every access
contiguous), then applies Felzenszwalb and Huttenlocher's 1-D squared distance transform (the
lower envelope of the parabolas ``f(p) + (q - p)^2``) along every other axis: the contiguous last
axis line by line, a middle axis (3-D) eight neighbouring lines at a time (whole cache lines).
(Scanning the contiguous axis first and gathering columns for the envelope, as an earlier version
did, took 15-25 % longer: 15.2 against 13.0 ms per 1024x1024 crack mask on one thread, 24.5
against 19.4 ms for a boundary field.) A batch is split over threads by
images, or, with fewer images than threads, each image's passes by lines (a Python thread pool:
ctypes releases the GIL; no OpenMP, whose spinning worker threads would fight torch's own OpenMP
runtime for the cores). For unit spacing every value is an
integer held in float64 (exact below ``2**53``), so the squared distances equal SciPy's exactly
and their square roots (float64, rounded once to the output dtype) are bit-identical to
``scipy.ndimage.distance_transform_edt``.
Intersections of parabolas are rationals with denominators below ``2 n``; float64 separates them,
so the envelope is the exact one (ties pick either parabola, with the same value).

It is compiled once per machine with the system C compiler (``$CC``, default ``cc``) into
``$FASTSEG_CACHE_DIR`` (default ``~/.cache/fastseg``) and loaded with ctypes, which releases the
GIL during the call. Where no compiler works, :func:`load` warns once (``RuntimeWarning``) and
returns ``None``, and :mod:`fastseg.edt` uses SciPy instead; ``FASTSEG_NATIVE=0`` (or ``false``,
``no``, ``off``) chooses SciPy without the warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from ._checks import env_flag

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* d[q] = min_p f[p] + (q - p)^2 over the finite f[p]; INFINITY if none. v, z: n + 1 scratch. */
static void dt1d(const double *f, double *d, int64_t n, int64_t *v, double *z) {
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (isinf(f[q])) continue;
        double hq = f[q] + (double)q * (double)q, s = -INFINITY;
        while (k >= 0) {
            int64_t p = v[k];
            s = (hq - (f[p] + (double)p * (double)p)) / (2.0 * (double)(q - p));
            if (s <= z[k]) k--; else break;
        }
        if (k < 0) s = -INFINITY;
        k++;
        v[k] = q;
        z[k] = s;
    }
    if (k < 0) {
        for (int64_t q = 0; q < n; q++) d[q] = INFINITY;
        return;
    }
    z[k + 1] = INFINITY;
    int64_t j = 0;
    for (int64_t q = 0; q < n; q++) {
        while (z[j + 1] < (double)q) j++;
        double dq = (double)(q - v[j]);
        d[q] = dq * dq + f[v[j]];
    }
}

#define BLOCK 8

/* Squared distance to the nearest target along axis 0 for the lines lo:hi of the other axes
   (0 = target, INFINITY elsewhere): a forward and a backward sweep over those columns of whole
   rows, so every access is contiguous. */
static int sweep_axis0(double *a, int64_t n, int64_t inner, int64_t lo, int64_t hi) {
    int64_t width = hi - lo;
    int64_t *near = malloc(sizeof(int64_t) * (width > 0 ? width : 1));
    if (!near) return 1;
    for (int64_t j = 0; j < width; j++) near[j] = -1;
    for (int64_t q = 0; q < n; q++) {
        double *row = a + q * inner + lo;
        for (int64_t j = 0; j < width; j++) {
            if (row[j] == 0.0) near[j] = q;
            else if (near[j] >= 0) row[j] = (double)(q - near[j]) * (double)(q - near[j]);
        }
    }
    for (int64_t j = 0; j < width; j++) near[j] = -1;
    for (int64_t q = n - 1; q >= 0; q--) {
        double *row = a + q * inner + lo;
        for (int64_t j = 0; j < width; j++) {
            if (row[j] == 0.0) near[j] = q;
            else if (near[j] >= 0) {
                double d = (double)(near[j] - q) * (double)(near[j] - q);
                if (d < row[j]) row[j] = d;
            }
        }
    }
    free(near);
    return 0;
}

/* Elements after `axis` (its lines' stride) and the number of its lines. */
static void axis_layout(int ndim, const int64_t *shape, int axis, int64_t *inner, int64_t *outer) {
    int64_t in = 1, out = 1;
    for (int i = axis + 1; i < ndim; i++) in *= shape[i];
    for (int i = 0; i < axis; i++) out *= shape[i];
    *inner = in;
    *outer = out;
}

/* Independent jobs of the pass along `axis`: lines of the other axes for axis 0, lines of the
   contiguous last axis, or blocks of BLOCK neighbouring lines of a middle axis. */
int64_t fastseg_edt_jobs(int ndim, const int64_t *shape, int axis) {
    int64_t inner, outer;
    axis_layout(ndim, shape, axis, &inner, &outer);
    if (axis == 0) return inner;
    return inner == 1 ? outer : outer * ((inner + BLOCK - 1) / BLOCK);
}

/* Jobs lo:hi of the lower envelope along `axis` >= 1 (the contiguous last axis line by line, a
   middle axis BLOCK neighbouring lines at a time, whole cache lines). */
static int envelope_axis(double *a, int ndim, const int64_t *shape, int axis, int64_t lo, int64_t hi) {
    int64_t n = shape[axis], inner, outer;
    axis_layout(ndim, shape, axis, &inner, &outer);
    double *buf = malloc(sizeof(double) * (2 * BLOCK * n + n + 1));
    int64_t *v = malloc(sizeof(int64_t) * (n + 1));
    if (!buf || !v) {
        free(buf);
        free(v);
        return 1;
    }
    double *z = buf + 2 * BLOCK * n;
    if (inner == 1) {
        double *f = buf;
        for (int64_t o = lo; o < hi; o++) {
            double *line = a + o * n;
            for (int64_t q = 0; q < n; q++) f[q] = line[q];
            dt1d(f, line, n, v, z);
        }
    } else {
        int64_t blocks = (inner + BLOCK - 1) / BLOCK;
        double *f = buf, *d = buf + BLOCK * n;
        for (int64_t job = lo; job < hi; job++) {
            int64_t o = job / blocks, i0 = (job % blocks) * BLOCK;
            int64_t width = inner - i0 < BLOCK ? inner - i0 : BLOCK;
            double *base = a + o * n * inner + i0;
            for (int64_t q = 0; q < n; q++)
                for (int64_t b = 0; b < width; b++) f[b * n + q] = base[q * inner + b];
            for (int64_t b = 0; b < width; b++) dt1d(f + b * n, d + b * n, n, v, z);
            for (int64_t q = 0; q < n; q++)
                for (int64_t b = 0; b < width; b++) base[q * inner + b] = d[b * n + q];
        }
    }
    free(buf);
    free(v);
    return 0;
}

/* Jobs lo:hi (fastseg_edt_jobs) of the pass along `axis` of one image: the sweeps for axis 0,
   the lower envelope otherwise. The passes must run in axis order; the jobs of one pass are
   independent (callers may split them over threads). Returns 1 when out of memory. */
int fastseg_edt_pass(double *a, int ndim, const int64_t *shape, int axis, int64_t lo, int64_t hi) {
    if (axis == 0) return sweep_axis0(a, shape[0], fastseg_edt_jobs(ndim, shape, 0), lo, hi);
    return envelope_axis(a, ndim, shape, axis, lo, hi);
}

/* Elements lo:hi of the transform's input: 0 on the target set (foreground when to_fg), INFINITY
   elsewhere. */
void fastseg_edt_fill(const uint8_t *m, double *w, int to_fg, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) w[i] = ((m[i] != 0) == to_fg) ? 0.0 : INFINITY;
}

/* Elements lo:hi of the output from the squared distances w (plus w2, the other side of a
   boundary field, where not NULL): squared, or square roots taken in float64 and rounded once. */
void fastseg_edt_emit(const double *w, const double *w2, void *out, int out_double, int squared, int64_t lo,
                      int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        double v = w2 ? w[i] + w2[i] : w[i];  /* one of the two is 0 */
        if (!squared) v = sqrt(v);
        if (out_double) ((double *)out)[i] = v;
        else ((float *)out)[i] = (float)v;
    }
}

/* mask: [count, *shape] bytes, nonzero = foreground. out: float32 (out_double = 0) or float64.
   mode 0: distance to the nearest foreground pixel; 1: to the nearest background pixel; images
   without such a pixel get `fill`. mode 2: the two-sided boundary field (distance to the nearest
   pixel of the other class), 0 on images holding one class. squared: squared distances, else
   their float64 square roots rounded once to the output type. Images run one after another
   (one image-sized float64 work buffer per transform); callers split a batch over threads, or
   one image's passes (fastseg_edt_pass). */
int fastseg_edt(const uint8_t *mask, void *out, int out_double, int64_t count, int ndim, const int64_t *shape,
                int mode, int squared, double fill) {
    int64_t size = 1;
    for (int i = 0; i < ndim; i++) size *= shape[i];
    double *work = malloc(sizeof(double) * size * (mode == 2 ? 2 : 1));
    if (!work) return 1;
    size_t out_size = out_double ? sizeof(double) : sizeof(float);
    for (int64_t img = 0; img < count; img++) {
        const uint8_t *m = mask + img * size;
        void *o = (char *)out + img * size * out_size;
        int64_t fg = 0;
        for (int64_t i = 0; i < size; i++) fg += m[i] != 0;
        int passes = mode == 2 ? 2 : 1;
        int empty = mode == 0 ? fg == 0 : mode == 1 ? fg == size : (fg == 0 || fg == size);
        if (empty) {
            double v = mode == 2 ? 0.0 : fill;
            for (int64_t i = 0; i < size; i++) {
                if (out_double) ((double *)o)[i] = v;
                else ((float *)o)[i] = (float)v;
            }
            continue;
        }
        for (int p = 0; p < passes; p++) {
            double *w = work + p * size;
            fastseg_edt_fill(m, w, mode == 0 || (mode == 2 && p == 0), 0, size);
            for (int axis = 0; axis < ndim; axis++)
                if (fastseg_edt_pass(w, ndim, shape, axis, 0, fastseg_edt_jobs(ndim, shape, axis))) {
                    free(work);
                    return 1;
                }
        }
        fastseg_edt_emit(work, mode == 2 ? work + size : NULL, o, out_double, squared, 0, size);
    }
    free(work);
    return 0;
}
"""

_LIB = None
_TRIED = False
_LOAD_LOCK = threading.Lock()  # a second thread waits for the first one's build instead of finding nothing


def _cache_dir() -> Path:
    configured = os.environ.get("FASTSEG_CACHE_DIR")
    if configured:
        return Path(configured)
    try:
        return Path.home() / ".cache" / "fastseg"
    except RuntimeError:  # no $HOME and no passwd entry (a container under an arbitrary UID)
        return Path(tempfile.gettempdir()) / "fastseg-cache"


def _compiler() -> list[str]:
    """``$CC`` split into words (``ccache gcc``, ``gcc -O0``), default ``cc``."""
    return shlex.split(os.environ.get("CC") or "cc")


def _build() -> tuple[Path | None, str]:
    """``(path of the shared library, "")``, or ``(None, why it could not be built)``. The file name
    holds a digest of the source, the machine and the compiler, so a cache directory shared between
    machines (a network home) never hands one machine another's library."""
    key = "\0".join([SOURCE, platform.machine(), sys.platform, " ".join(_compiler())])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    out = _cache_dir() / f"edt_{digest}.so"
    if out.exists():
        return out, ""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / "edt.c"
        src.write_text(SOURCE)
        lib = Path(tmp) / "edt.so"
        compiler = _compiler()
        cmd = [*compiler, "-O3", "-fPIC", "-shared", str(src), "-o", str(lib), "-lm"]
        name = " ".join(compiler)
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            return None, f"{name!r} could not run ({error})"
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            return None, f"{name!r} failed with exit status {done.returncode}{': ' + output if output else ''}"
        os.replace(lib, out)  # atomic: concurrent builders agree on one file
        return out, ""


def disabled() -> bool:
    """``FASTSEG_NATIVE=0`` (or false/no/off): SciPy instead, without trying to build."""
    return not env_flag("FASTSEG_NATIVE", True)


def load():
    """The compiled library (``fastseg_edt``), or ``None`` when it cannot be built or is disabled.
    Built once per process (other threads wait for it); any failure falls back to SciPy with a
    warning, never an exception."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    with _LOAD_LOCK:
        if not _TRIED:
            _LIB = None if disabled() else _load()
            _TRIED = True
    return _LIB


def _load():
    try:
        path, why = _build()
        if path is None:
            _warn_fallback(why)
            return None
        lib = ctypes.CDLL(str(path))
        shape_p, i64, vp = ctypes.POINTER(ctypes.c_int64), ctypes.c_int64, ctypes.c_void_p
        signatures = {
            "fastseg_edt": (ctypes.c_int, [vp, vp, ctypes.c_int, i64, ctypes.c_int, shape_p, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_double]),
            "fastseg_edt_jobs": (i64, [ctypes.c_int, shape_p, ctypes.c_int]),
            "fastseg_edt_pass": (ctypes.c_int, [vp, ctypes.c_int, shape_p, ctypes.c_int, i64, i64]),
            "fastseg_edt_fill": (None, [vp, vp, ctypes.c_int, i64, i64]),
            "fastseg_edt_emit": (None, [vp, vp, vp, ctypes.c_int, ctypes.c_int, i64, i64]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        return lib
    except Exception as error:  # noqa: BLE001  (a cache directory that cannot be made, a corrupt file, ...)
        _warn_fallback(f"the compiled library could not be built or loaded ({type(error).__name__}: {error})")
        return None


def _warn_fallback(why: str) -> None:
    warnings.warn(
        f"fastseg: the native CPU distance transform is unavailable: {why}. CPU distance maps fall "
        "back to SciPy (exact, several times slower). Install a C compiler or set CC to one; set "
        "FASTSEG_NATIVE=0 to choose SciPy without this warning.",
        RuntimeWarning,
        stacklevel=3,
    )


MODES = {"foreground": 0, "background": 1, "field": 2}


#: Pixels per image from which an image's passes are split over threads when a batch has fewer
#: images than threads (below it, handing the parts to the pool costs more than it saves).
SPLIT_IMAGE_PIXELS = 1 << 16


def distance_map(mask: np.ndarray, mode: str, *, squared: bool, fill: float, double: bool, threads: int) -> np.ndarray:
    """Unit-spacing distances of each image of ``mask`` (``[N, *spatial]``, nonzero = foreground).

    ``mode``: ``"foreground"`` / ``"background"`` (distance to the nearest such pixel; ``fill`` on
    images without one) or ``"field"`` (two-sided boundary field, 0 on single-class images).
    float64 with ``double`` else float32; squared or not. Requires :func:`load` to have succeeded.

    Threads: a batch of at least ``threads`` images is split over them by images; a smaller batch
    of large images (a single image, a 3-D volume) runs its images one after another, each pass
    split over the threads by lines.
    """
    lib = load()
    mask = np.ascontiguousarray(mask)
    if mask.dtype != np.uint8:
        mask = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)
    out = np.empty(mask.shape, np.float64 if double else np.float32)
    count, ndim = mask.shape[0], mask.ndim - 1
    shape = (ctypes.c_int64 * ndim)(*mask.shape[1:])
    threads = max(1, int(threads))
    if count < threads and mask[0].size >= SPLIT_IMAGE_PIXELS:
        for image, image_out in zip(mask, out):
            _split_image(lib, image.reshape(-1), image_out.reshape(-1), mode, squared, fill, double, ndim, shape,
                         threads)
        return out

    def run(lo: int, hi: int) -> int:  # images lo:hi; ctypes releases the GIL during the call
        return lib.fastseg_edt(mask[lo:hi].ctypes.data, out[lo:hi].ctypes.data, int(double), hi - lo, ndim, shape,
                               MODES[mode], int(squared), float(fill))

    _check(_split(run, count, threads))
    return out


def _split_image(lib, mask: np.ndarray, out: np.ndarray, mode: str, squared: bool, fill: float, double: bool,
                 ndim: int, shape, threads: int) -> None:
    """One image (flat ``mask`` and ``out``) with each pass's jobs split over ``threads``."""
    size = mask.size
    foreground = int(np.count_nonzero(mask))
    empty = {"foreground": foreground == 0, "background": foreground == size}.get(mode, foreground in (0, size))
    if empty:
        out[...] = 0.0 if mode == "field" else fill
        return
    sides = (True, False) if mode == "field" else (mode == "foreground",)
    work = np.empty((len(sides), size), np.float64)
    for side, w in zip(sides, work):
        _split(lambda lo, hi: lib.fastseg_edt_fill(mask.ctypes.data, w.ctypes.data, int(side), lo, hi) or 0, size,
               threads)
        for axis in range(ndim):
            jobs = lib.fastseg_edt_jobs(ndim, shape, axis)
            _check(_split(lambda lo, hi: lib.fastseg_edt_pass(w.ctypes.data, ndim, shape, axis, lo, hi), jobs,
                          threads))
    second = work[1].ctypes.data if len(sides) == 2 else None
    _split(lambda lo, hi: lib.fastseg_edt_emit(work[0].ctypes.data, second, out.ctypes.data, int(double),
                                               int(squared), lo, hi) or 0, size, threads)


def _split(run, count: int, threads: int) -> list[int]:
    """``run(lo, hi)`` over ``threads`` even parts of ``range(count)`` (in this thread when one
    part); their return codes."""
    threads = max(1, min(threads, count))
    if threads == 1:
        return [run(0, count)]
    bounds = [count * i // threads for i in range(threads + 1)]
    return list(_pool(threads).map(run, bounds[:-1], bounds[1:]))


def _check(codes: list[int]) -> None:
    if any(codes):
        raise MemoryError("fastseg native EDT: out of memory")


_POOL = None
_POOL_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """In a forked child: the parent's pool object and load lock came along, their threads did not
    (a task submitted to the pool, or a lock held by a parent's thread building the library at
    the fork, would wait for ever)."""
    global _POOL, _LOAD_LOCK, _POOL_LOCK
    _POOL = None
    _LOAD_LOCK, _POOL_LOCK = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _pool(threads: int):
    """A process-wide thread pool for splitting batches over images: as many workers as CPUs (started
    as tasks need them), replaced by a larger one only for more threads than CPUs (the old one is
    left to its tasks: another thread may be submitting to it)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < threads:
            from concurrent.futures import ThreadPoolExecutor

            workers = max(threads, os.cpu_count() or 1)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastseg-edt")
        return _POOL
