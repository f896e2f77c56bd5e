"""The ``fastseg`` command (also ``python -m fastseg``).

    fastseg bench      time forward+backward of the losses: fused vs reference vs peers
    fastseg validate   fused vs reference, every loss, on this device; exit 1 on any failure
    fastseg kernels    ahead-of-time compile the Triton kernels and report registers/spills
    fastseg --version  print the version

Everything heavy is imported inside the subcommand, so ``fastseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        _usage_error(f"--device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        _usage_error("--device cuda requested but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        _usage_error(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)


def _check_outputs(args, flags=("json", "markdown", "plot")) -> None:
    """Fail before any measuring when an output file could not be written (a missing or read-only
    folder, a folder given as the file, ``--plot`` without matplotlib): a long run is not lost at
    its end."""
    import importlib.util

    for flag in flags:
        path = getattr(args, flag, None)
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            _usage_error(f"--{flag} {path!r} is a folder; give a file name")
        if not os.path.isdir(folder):
            _usage_error(f"--{flag} {path!r}: folder {folder!r} does not exist")
        if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            _usage_error(f"--{flag} {path!r} is not writable")
    if getattr(args, "plot", None) and importlib.util.find_spec("matplotlib") is None:
        _usage_error("--plot needs matplotlib (pip install matplotlib)")


def _usage_error(message: str):
    """Exit with status 2, as argparse does for a bad argument."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _interpreter_for_cpu(backend: str, device: str) -> None:
    """``--backend triton`` on CPU tensors runs the kernels in the Triton interpreter, which must be
    switched on before triton is first imported (by fastseg.functional, imported after this)."""
    if backend == "triton" and device == "cpu":
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("warning: triton was imported before TRITON_INTERPRET=1 could be set", file=sys.stderr)
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time forward+backward of each loss: fastseg fused vs reference vs torch.compile vs peers",
        description="Time forward+backward of each loss on synthetic crack batches (or CrackForest tiles). "
        "Defaults scale with the device: CPU 8x1x1024x1024, CUDA 16x1x2048x2048 and 4x1x4096x4096.",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--loss", nargs="+", metavar="NAME", help="losses to time; a+b times the sum of catalog losses a and b (default: the compound losses, focal, dice, "
                        "tversky, the distance losses and focal+dice)")
    p.add_argument("--contender", nargs="+", metavar="NAME",
                   help="contenders (default: all of fastseg fastseg_separate fastseg_inductor reference compiled "
                        "fastseg_compiled monai kornia torchvision smp; fastseg_separate: a sum of losses as one fused "
                        "call per term; fastseg_inductor: backend='inductor', CPU only; fastseg_compiled: "
                        "torch.compile(fastseg))")
    p.add_argument("--batch", type=int, help="images per batch (default: per device)")
    p.add_argument("--size", help="image size N or HxW (default: per device)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="logits dtype")
    p.add_argument("--scope", default="image", choices=("image", "batch"), help="reduction scope of region terms")
    p.add_argument("--data", default="synthetic", choices=("synthetic", "crackforest"), help="input images")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "torch", "inductor"),
                   help="backend of the fused contenders (fastseg, fastseg_separate)")
    p.add_argument("--repeat", type=int, help="timed steps per contender (default: 3 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps first, at least 1: the first step compiles and is "
                                               "checked (default: 1 on CPU, 3 on CUDA)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats: a smoke test")
    p.add_argument("--no-check", action="store_true", help="skip the error column (no float64 reference run)")
    p.add_argument("--json", metavar="PATH", help="write the results and environment as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write a markdown table")
    p.add_argument("--plot", metavar="PATH", help="write a PNG plot of time and memory (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--edt", action="store_true",
                   help="time the exact EDT (fastseg.edt vs SciPy per image) on crack masks instead of the losses")


def _validate_parser(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check fastseg's fused losses against the reference on this device",
        description="Compare the value and gradient of every loss (fused vs float64 reference) over dtypes, odd "
        "sizes, scopes, soft labels, ignore masks, crack-free and all-crack images. Exit status 1 when any "
        "comparison fails.",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--backend", default="auto", choices=("auto", "triton", "torch", "inductor"), help="backend of fastseg.functional")
    p.add_argument("--dtype", nargs="+", choices=("float32", "float16", "bfloat16", "float64"),
                   help="dtypes (default: all the device supports)")
    p.add_argument("--loss", nargs="+", metavar="NAME", help="losses (default: all)")
    p.add_argument("--contender", metavar="MODULE[:ATTR]",
                   help="validate another implementation: a module (or an object in it) with one function per loss")
    p.add_argument("--quick", action="store_true", help="one small size instead of four")
    p.add_argument("--compiled", action="store_true",
                   help="run the contender under torch.compile(fullgraph=True), one compiled function per loss, dtype "
                        "and label kind (implies --quick; every variant compiles: minutes per dtype)")
    p.add_argument("--verbose", action="store_true", help="print every comparison, not only the failures")
    p.add_argument("--json", metavar="PATH", help="write every comparison as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fastseg", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"fastseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{bench,validate,kernels}")
    _bench_parser(sub)
    _validate_parser(sub)
    sub.add_parser("kernels", add_help=False, help="AOT-compile the Triton kernels; registers/spills table (see fastseg kernels --help)")
    return parser


#: Options of ``bench`` that ``bench --edt`` does not read, with their defaults.
_NOT_EDT = {"loss": None, "contender": None, "dtype": "float32", "scope": "image", "data": "synthetic",
            "backend": "auto", "no_check": False, "markdown": None, "plot": None}


def bench(args) -> int:
    from . import benchmark

    if args.edt:
        ignored = [f"--{name.replace('_', '-')}" for name, default in _NOT_EDT.items() if getattr(args, name) != default]
        if ignored:
            verb = "does" if len(ignored) == 1 else "do"
            _usage_error(f"--edt times the distance transform only; {', '.join(ignored)} {verb} not apply to it")
    _check_outputs(args)
    device = _device(args.device)
    _interpreter_for_cpu(args.backend, device)
    cuda = device.startswith("cuda")
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1; got {args.threads}", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    if args.batch is not None and args.batch < 1:
        _usage_error(f"--batch must be >= 1; got {args.batch}")
    if args.repeat is not None and args.repeat < 1:
        _usage_error(f"--repeat must be >= 1; got {args.repeat}")
    if args.warmup is not None and args.warmup < 1:
        _usage_error(f"--warmup must be >= 1 (the first step compiles and is checked); got {args.warmup}")
    repeat = args.repeat if args.repeat is not None else 2 if args.quick else 20 if cuda else 3
    warmup = args.warmup if args.warmup is not None else 1 if args.quick or not cuda else 3
    if args.edt:
        return _bench_edt(args, device, repeat, warmup)
    try:
        cases = benchmark.default_cases(device, losses=args.loss, batch=args.batch, size=args.size, dtype=args.dtype,
                                        data=args.data, scope=args.scope, quick=args.quick)
        contenders = args.contender
        factories = None
        if args.backend != "auto":
            factories = {
                "fastseg": lambda case, dev: benchmark.fused_contender(case, dev, backend=args.backend),
                "fastseg_separate": lambda case, dev: benchmark.separate_contender(case, dev, backend=args.backend),
            }
        # the JSON is rewritten after every case: a run stopped by a time limit keeps what it measured
        save = (lambda partial: benchmark.write_json(partial, args.json)) if args.json else None
        report = benchmark.run(cases, contenders, device=device, repeat=repeat, warmup=warmup, check=not args.no_check,
                               progress=not args.no_progress, factories=factories, command=args.command_line,
                               on_case=save)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # --data crackforest without the archive
        print(f"error: {err} (for this command: set FASTSEG_CRACKFOREST=PATH)", file=sys.stderr)
        return 2
    print(benchmark.table(report))
    if args.json:
        benchmark.write_json(report, args.json)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(benchmark.markdown(report))
    if args.plot:
        try:
            benchmark.plot(report, args.plot)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


def _bench_edt(args, device: str, repeat: int, warmup: int) -> int:
    import json

    from . import benchmark

    size = (32, 48) if args.quick and args.size is None else args.size
    try:
        batch = args.batch if args.batch is not None else 2 if args.quick else None
        report = benchmark.edt_benchmark(device, batch=batch, size=size, repeat=repeat, warmup=warmup)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"EDT of {report['shape']} crack masks on {report['device']} (equal to SciPy: {report['equal']})")
    for name, r in report["results"].items():
        print(f"  {name:10s} {1000 * r['median_s']:9.1f} ms per call  {r['ms_per_1024_image']:8.2f} ms per 1024x1024 image")
    print(f"  speedup vs SciPy: {report['speedup_vs_scipy']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["equal"] else 1


def validate(args) -> int:
    from . import validate as val
    from .benchmark import ProgressBar

    if args.contender and args.backend != "auto":
        _usage_error("--backend chooses fastseg's backend; with --contender the contender runs as it is")
    _check_outputs(args, ("json",))
    device = _device(args.device)
    _interpreter_for_cpu(args.backend, device)
    try:
        if args.contender:
            lookup, name = val.module_lookup(args.contender), args.contender
        else:
            lookup, name = val.functional_lookup(args.backend), f"fastseg.functional (backend={args.backend})"
        if args.compiled:
            name = f"torch.compile({name})"
        names = args.loss or val.loss_names(lambda n: lookup(n) is not None)
        dtypes = args.dtype or val.supported_dtypes(__import__("torch").device(device))
        bar = ProgressBar(len(names) * len(dtypes), enabled=not args.no_progress)
        report = val.run(lookup=lookup, contender=name, device=device, dtypes=dtypes, losses=args.loss,
                         quick=args.quick, progress=bar.update, compiled=args.compiled)
        bar.close()
    except (ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(val.summary_table(report, verbose=args.verbose))
    if args.json:
        val.write_json(report, args.json)
    return 1 if report.failed else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "kernels":
        from . import kernel_report

        return int(kernel_report.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    args.command_line = " ".join(["fastseg", *argv])
    return bench(args) if args.command == "bench" else validate(args)


if __name__ == "__main__":
    raise SystemExit(main())
