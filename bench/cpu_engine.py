"""CPU timing and peak memory of the fused torch path against the eager reference.

    python bench/cpu_engine.py [--shape 8 1 1024 1024] [--repeats 3] [--losses hybrid_focal_margin unified_focal]

One forward+backward step per call: fp32 logits (requires grad) and uint8 targets with ~2 %
foreground (thin random lines). Every (loss, implementation) runs in its own subprocess, so the
peak resident memory of the step is measured cleanly: the peak RSS counter is reset
(``/proc/self/clear_refs``) just before the first step, and the peak above that point is
reported. glibc's malloc runs with its defaults: buffers of 32 MiB and more (every
full-size tensor here) are mmapped and go back to the OS when freed, smaller ones come from the
heap and are reused (a fixed ``MALLOC_MMAP_THRESHOLD_`` would also fix the trim threshold, and
the heap would be trimmed and re-faulted on every chunk, a slowdown no user sees). Time: the median of ``repeats`` steps
after the measured one. The functions are importable (``step``, ``measure``) for bench suites.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

IMPLS = ("reference", "torch")


def make_inputs(shape, seed: int = 0):
    """Logits around the usual training range and a sparse crack-like uint8 target."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g) * 2 - 2
    t = torch.zeros(shape, dtype=torch.uint8)
    B, C, H, W = shape
    rows = torch.randint(0, H, (B, C, max(1, H // 50)), generator=g)
    for b in range(B):
        for c in range(C):
            t[b, c, rows[b, c]] = 1  # horizontal lines: ~2 % of the pixels
    return z, t


def loss_fn(loss: str, impl: str):
    if impl == "reference":
        import fastseg.reference as R

        return getattr(R, loss)
    import fastseg.functional as FS

    fn = getattr(FS, loss)
    return lambda z, t: fn(z, t, backend=impl)


def step(fn, z, t) -> None:
    z.grad = None
    loss = fn(z, t)
    loss.backward()


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure(loss: str, impl: str, shape, repeats: int = 3) -> dict:
    """Run in a fresh process (see the module docstring): ms per step and peak MiB of one step.

    The peak is the resident memory the step adds above the inputs (z, t), the gradient of z
    (32 MiB at 8x1x1024x1024 fp32) included.
    """
    z, t = make_inputs(shape)
    z.requires_grad_()
    fn = loss_fn(loss, impl)
    small = [s if i < 2 else 16 for i, s in enumerate(shape)]
    step(fn, *(x.detach().clone().requires_grad_(x.is_floating_point()) for x in make_inputs(small)))  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    step(fn, z, t)
    first = time.perf_counter() - t0
    peak = _rss_kib("VmHWM") - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(fn, z, t)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"loss": loss, "impl": impl, "shape": list(shape), "ms": 1e3 * times[len(times) // 2],
            "ms_min": 1e3 * times[0], "first_ms": 1e3 * first, "peak_mib": peak / 1024, "threads": torch.get_num_threads()}


def measure_in_subprocess(loss, impl, shape, repeats) -> dict:
    env = dict(os.environ)
    code = (
        "import json,sys; sys.path.insert(0, %r); from cpu_engine import measure; "
        "print(json.dumps(measure(%r, %r, %r, %d)))" % (os.path.dirname(os.path.abspath(__file__)), loss, impl, list(shape), repeats)
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[8, 1, 1024, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--losses", nargs="+", default=["hybrid_focal_margin", "unified_focal"])
    args = ap.parse_args(argv)
    for loss in args.losses:
        res = {impl: measure_in_subprocess(loss, impl, args.shape, args.repeats) for impl in IMPLS}
        ref, fused = res["reference"], res["torch"]
        print(
            f"{loss:22s} reference {ref['ms']:8.1f} ms {ref['peak_mib']:7.1f} MiB | torch path {fused['ms']:8.1f} ms "
            f"{fused['peak_mib']:7.1f} MiB | speed-up {ref['ms'] / fused['ms']:.2f}x, memory 1/{ref['peak_mib'] / max(fused['peak_mib'], 1e-9):.1f}"
        )
        print(json.dumps(res))


if __name__ == "__main__":
    main()
