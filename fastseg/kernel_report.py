"""The kernel compile gate: ahead-of-time compile every fused-loss kernel specialisation, no GPU needed.

``python -m fastseg kernels [--json]`` (or ``python -m fastseg.kernel_report``) compiles, for sm_80
and sm_90, each kernel specialisation that the loss catalog uses (the quantity set and
:class:`~fastseg.engine.spec.TermParams` of every loss of ``LOSSES.md``, logits fp32/fp16/bf16,
uint8/float targets, with and without an ignore mask and a weight map) with
``triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", cc, 32))``,
then reads each cubin's resource usage with ``cuobjdump --dump-resource-usage`` (the binary ships
in the triton wheel, ``triton/backends/nvidia/bin``) and reports, per kernel, registers per
thread, spilled bytes (the ``STACK`` frame plus ``LOCAL`` memory: both 0 when nothing spills),
static shared memory (cuobjdump ``SHARED``, column ``smem``) and the dynamic shared memory the
launch requests (triton's ``metadata.shared``, column ``dsmem``: the reduction scratch). The gate passes (exit status 0) only when no kernel spills.

What gets compiled: every tile width the launchers can pick (128 to 1024 lanes, one warp per 128:
:data:`fastseg.kernels._utils.TILE_WIDTHS`), since ptxas's register budget depends on the block
size and the widest tile does not bound the others; each in the specialisation Triton's launcher
compiles for a contiguous binary batch (:func:`runtime_specialisation`: unit sizes compiled in,
pointers and sizes marked divisible by 16, so loads vectorise; column ``align``), and the
general one (strided views, odd widths, several channels) where noted below. By default each
catalog entry is compiled in a covering design: every logits dtype with uint8 targets, plus fp32
logits with float targets, an ignore mask and (for losses with pointwise terms) a weight map, the
last also in the general specialisation, as are the reduction and EDT kernels; ``--full``
compiles the whole product (logits x targets x mask x weight x atomics x alignment). Triton's
cache makes repeated runs fast. Compilation needs triton's compiler and ``ptxas``/``cuobjdump`` (both in the
wheel) but no driver and no device; it cannot run under ``TRITON_INTERPRET=1`` (kernels are then
interpreted functions), so in that case the work runs in a subprocess without the variable.
"""

from __future__ import annotations

import argparse
import importlib.util
import concurrent.futures as futures
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastseg.engine.spec import Quantity as Q
from fastseg.engine.spec import TermParams
from fastseg.kernels._utils import TILE_WIDTHS, block_and_warps
from fastseg.kernels.edt import ENVELOPE_LINES, SWEEP_TILE

ARCHS = (80, 90)
LOGITS = ("fp32", "fp16", "bf16")
TARGETS = ("u8", "fp32")
EDT_SWEEP_BLOCK_N = tuple(1 << e for e in range(4, SWEEP_TILE.bit_length()))  # sweep tile widths: 16 ... SWEEP_TILE
_NOT_PIXEL_KERNELS = ("reduce", "edt", "edt_sweep")
EDT_MAPS = ("fp32", "fp64")  # float32 maps where exact, float64 otherwise (kernels.edt.map_dtype)

#: Losses made of these quantities alone also run ``reduction="none"`` (one group per element).
POINTWISE = frozenset({Q.FG_CE, Q.BG_CE, Q.EL_FG, Q.EL_BG, Q.DIBE_FG, Q.DIBE_BG, Q.COUNT})


def _catalog() -> tuple[tuple[str, tuple[int, ...], TermParams], ...]:
    """Every loss of the catalog as the launchers see it: its plan's quantities and parameters."""
    from fastseg import functional as F
    from fastseg import losses as L

    plans = {
        # pointwise (weighted, balanced and adaptive WCE weight the same two sums in the epilogue)
        "bce": F.bce_plan(),
        "focal": F.focal_plan(),
        "asymmetric_focal": F.asymmetric_focal_plan(),
        "asymmetric_margin": F.asymmetric_margin_plan(),
        "asymmetric_focal_margin": F.asymmetric_focal_margin_plan(),
        "focal_margin": F.focal_margin_plan(),
        "el_ce": F.el_ce_plan(),
        "el_ce_gce0.3": F.el_ce_plan(gamma_ce=0.3),
        "dibe_dis": F.dibe_dis_plan(),
        # region (Dice, Jaccard, Tversky, focal Tversky, DIBE_Reg, log-cosh Dice share one set)
        "dice": F.dice_plan(),
        "squared_dice": F.squared_dice_plan(),
        "sensitivity_specificity": F.sensitivity_specificity_plan(),
        # compound (BceDice, Combo and Holistic share BCE + Dice sums)
        "bce_dice": F.bce_dice_plan(),
        "exp_log": F.exp_log_plan(),
        "hybrid_focal": F.hybrid_focal_plan(),
        "hybrid_focal_seed000": F.hybrid_focal_plan(asymmetric=True),
        "unified_focal_symmetric": F.unified_focal_plan(asymmetric=False),
        "unified_focal_asymmetric": F.unified_focal_plan(),
        "hybrid_focal_margin": F.hybrid_focal_margin_plan(),
        "hybrid_focal_margin_symmetric": F.hybrid_focal_margin_plan(symmetric=True),
        "dibe": F.dibe_plan(),
        # distance
        "distance_loss": F.distance_loss_plan(),
        "hausdorff_dt": F.hausdorff_dt_plan(),
        # sums of losses (fastseg.losses.CombinedLoss): one pass sums the union of their quantities
        "combined_focal_dice_distance": (L.FocalLoss() + L.DiceLoss() + L.DistanceLoss())._passes[0].plan,
    }
    every = TermParams(g_fg=2.0, m=0.5, g_bg=2.0, gce=0.3, dibe_g=2.0, dibe_alpha=0.3, dibe_beta=0.7)
    return tuple((name, plan.quantities, plan.params) for name, plan in plans.items()) + (
        ("combined_every_quantity", tuple(Q), every),
    )


CATALOG = _catalog()
"""(loss, quantity ids in engine order, TermParams) of every catalog entry the kernels serve, taken
from the plans :mod:`fastseg.functional` launches (so the gate compiles what runs)."""


class ToolchainUnavailable(RuntimeError):
    """Triton's compiler, ptxas or cuobjdump cannot be used on this machine."""


@dataclass(frozen=True)
class Variant:
    """One compiled specialisation of a kernel (hashable: used to de-duplicate)."""

    kernel: str  # "forward" | "backward" | "reduce" | "edt" (envelope) | "edt_sweep"
    quantities: tuple[int, ...]
    params: tuple[tuple[str, float], ...]
    logits: str = "fp32"
    target: str = "u8"
    valid: bool = False
    weight: bool = False
    atomic: bool = False
    per_element: bool = False  # reduction="none" of a pointwise loss: one group per element
    k: int = 0  # reduce kernel only
    block: int = 0  # forward / backward: the tile width (lanes)
    aligned: bool = True  # specialised as Triton's launcher does a contiguous binary batch (see runtime_specialisation)


@dataclass
class Row:
    kernel: str
    losses: list[str]
    quantities: str
    params: str
    logits: str
    target: str
    valid: bool
    weight: bool
    atomic: bool
    per_element: bool
    aligned: bool
    arch: str
    block: int
    warps: int
    registers: int = -1
    spill_bytes: int = -1
    shared_bytes: int = -1
    dynamic_shared_bytes: int = -1
    error: str = ""
    extra: dict = field(default_factory=dict)


def _weighted(quantities) -> bool:
    from fastseg.kernels.fused_loss import WEIGHTED

    return bool(set(quantities) & WEIGHTED)


def variants(full: bool = False, logits: tuple[str, ...] = LOGITS) -> dict[Variant, list[str]]:
    """Every specialisation to compile (for the given logits dtypes), mapped to the losses using it."""
    from fastseg.kernels.fused_loss import ZERO_DERIVATIVE, backward_constexprs, forward_constexprs

    out: dict[Variant, list[str]] = {}
    seen_constexprs: dict[tuple, Variant] = {}

    def add(v: Variant, loss: str) -> None:
        # Two variants with identical signature and constexprs are one compiled kernel.
        if v.kernel in _NOT_PIXEL_KERNELS:
            key = (v.kernel, v.k, v.logits, v.aligned)
        else:
            make = forward_constexprs if v.kernel == "forward" else backward_constexprs
            kw = dict(fp64=False, has_valid=v.valid, has_weight=v.weight, has_dist=True, block=v.block,
                      per_element=v.per_element)
            if v.kernel == "forward":
                kw["atomic"] = v.atomic
            ce = make(v.quantities, TermParams(**dict(v.params)), **kw)
            key = (v.kernel, v.logits, v.target, v.aligned, tuple(sorted(ce.items())))
        v = seen_constexprs.setdefault(key, v)
        out.setdefault(v, [])
        if loss not in out[v]:
            out[v].append(loss)

    for loss, quantities, params in CATALOG:
        quantities = tuple(int(k) for k in quantities)
        prm = tuple(sorted(asdict(params).items()))
        if full:
            combos = [
                (lg, tg, va, we, at)
                for lg in logits
                for tg in TARGETS
                for va in (False, True)
                for we in ((False, True) if _weighted(quantities) else (False,))
                for at in (False, True)
            ]
        else:
            first = logits[0]
            combos = [(lg, "u8", False, False, False) for lg in logits]
            combos.append((first, "fp32", True, _weighted(quantities), False))
            combos.append((first, "u8", False, False, True))
        per_element = (False, True) if set(quantities) <= POINTWISE else (False,)
        for (lg, tg, va, we, at), pe, block in itertools.product(combos, per_element, TILE_WIDTHS):
            if pe and at:
                continue
            # Every combination as a contiguous binary batch launches it; the general specialisation
            # (strided views, odd widths, C > 1) for all of them with --full, else for the heaviest.
            for aligned in (True, False) if full or (va and tg == "fp32") else (True,):
                add(Variant("forward", quantities, prm, lg, tg, va, we, at, pe, block=block, aligned=aligned), loss)
                if not at:
                    diff = tuple(k for k in quantities if k not in ZERO_DERIVATIVE)
                    add(Variant("backward", diff, prm, lg, tg, va, we and _weighted(diff), per_element=pe, block=block,
                                aligned=aligned), loss)
        for aligned in (True, False):
            add(Variant("reduce", (), (), k=len(quantities), aligned=aligned), loss)
    for maps, aligned in itertools.product(EDT_MAPS, (True, False)):  # the maps' dtype (kernels.edt.map_dtype): "logits" column
        add(Variant("edt", (), (), logits=maps, target="-", k=ENVELOPE_LINES, aligned=aligned), "edt")
        for block_n in EDT_SWEEP_BLOCK_N:
            add(Variant("edt_sweep", (), (), logits=maps, target="-", k=block_n, aligned=aligned), "edt")
    return out


def _signature_and_constexprs(v: Variant):
    """(kernel function, signature dict, constexpr dict) exactly as the launchers would launch it."""
    from fastseg.kernels import fused_loss as fl

    if v.kernel == "edt":
        from fastseg.kernels import edt as edt_kernels

        fn = edt_kernels._edt_envelope_kernel
        ce = {"BLOCK_LINES": v.k}
        ptrs = {"f_ptr": f"*{v.logits}", "out_ptr": f"*{v.logits}", "v_ptr": "*i32", "spacing_bits": "i64"}
        warps = max(1, v.k // 32)
    elif v.kernel == "edt_sweep":
        from fastseg.kernels import edt as edt_kernels

        fn = edt_kernels._edt_sweep_kernel
        ce = {"BLOCK_LINES": edt_kernels.sweep_blocks(v.k)[0], "BLOCK_N": v.k}
        ptrs = {"mask_ptr": "*u8", "out_ptr": f"*{v.logits}", "spacing_bits": "i64"}
        warps = edt_kernels.SWEEP_WARPS
    elif v.kernel == "reduce":
        fn = fl._reduce_partials_kernel
        ce = {"K": v.k, "KP": 1 << max(0, (v.k - 1).bit_length()), "BLOCK_T": fl.REDUCE_BLOCK_T}
        ptrs = {"part_ptr": "*fp32", "out_ptr": "*fp32"}
        warps = 4
    else:
        params = TermParams(**dict(v.params))
        common = dict(fp64=False, has_valid=v.valid, has_weight=v.weight, has_dist=True, block=v.block,
                      per_element=v.per_element)
        z = f"*{v.logits}"
        ptrs = {
            "z_ptr": z,
            "t_ptr": f"*{v.target}",
            "valid_ptr": "*u8" if v.valid else z,
            "weight_ptr": "*fp32" if v.weight else z,
            "dist_ptr": "*fp32" if set(v.quantities) & fl.NEEDS_DISTANCE else z,
            "params_ptr": "*fp64",
        }
        if v.kernel == "forward":
            fn = fl._fused_loss_forward_kernel
            ce = fl.forward_constexprs(v.quantities, params, atomic=v.atomic, **common)
            ptrs["out_ptr"] = "*fp32"
        else:
            fn = fl._fused_loss_backward_kernel
            ce = fl.backward_constexprs(v.quantities, params, **common)
            ptrs["c_ptr"] = "*fp32"
            ptrs["grad_ptr"] = z
        warps = block_and_warps(v.block)[1]
    signature = {}
    for name in fn.arg_names:
        signature[name] = "constexpr" if name in ce else ptrs.get(name, "i32")
    missing = [name for name in ce if name not in signature]
    if missing:
        raise RuntimeError(f"constexprs {missing} are not arguments of {fn.__name__}")
    if not v.aligned:
        return fn, signature, ce, {}, warps
    ones = ["C"]
    if v.kernel in ("forward", "backward") and v.block < max(TILE_WIDTHS):
        ones.append("n_tiles")  # one tile covers the row
    if v.kernel == "backward":
        ones.append("c_sk")  # the coefficients [B*C, K] are contiguous
    return (fn, *runtime_specialisation(fn.arg_names, signature, ce, ones, odd=("c_sg",)), warps)


def runtime_specialisation(arg_names, signature: dict, constexprs: dict, ones=(), odd=()):
    """``(signature, constexprs, attrs)`` as Triton's launcher specialises a typical launch.

    At a launch, Triton compiles an integer argument equal to 1 in as a constant and marks pointers
    and integers divisible by 16 (``tt.divisibility``), which lets it vectorise loads. The typical
    launch is a contiguous binary batch ``[16, 1, H, W]`` with ``W`` a multiple of 16: pointers,
    sizes and strides are multiples of 16 but for ``odd`` (the row stride of the coefficients,
    ``K`` quantities), and ``ones`` are 1 (the channel count; the tile count when one tile covers
    a row; unit strides). ``aligned=False`` variants compile the general specialisation instead
    (strided views, odd widths, several channels). ``tests/test_kernel_compile.py`` checks this
    model against Triton's own launcher on captured launches.
    """
    signature, constexprs = dict(signature), dict(constexprs)
    for name in ones:
        if name in signature and signature[name] != "constexpr":
            signature[name], constexprs[name] = "constexpr", 1
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(arg_names)
             if signature[name] != "constexpr" and name not in odd}
    return signature, constexprs, attrs


def _compile_cubin(fn, signature: dict, constexprs: dict, arch: int, warps: int,
                   options: dict | None = None, attrs: dict | None = None) -> tuple[bytes, int]:
    """The cubin of one specialisation and its dynamic shared memory (bytes, from triton's metadata);
    ``options``: the launch options the launcher passes besides ``num_warps``; ``attrs``: argument
    attributes (:func:`runtime_specialisation`; triton >= 3.3 only, older versions compile without)."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "constexprs" in inspect.signature(ASTSource.__init__).parameters:  # triton >= 3.3
        src = ASTSource(fn, signature, constexprs, attrs or None)
    else:  # triton 3.0-3.2: constexprs are "constants" and not part of the signature
        sig = {k: v for k, v in signature.items() if v != "constexpr"}
        try:
            src = ASTSource(fn, sig, constants=dict(constexprs))
        except TypeError:
            names = list(fn.arg_names)
            src = ASTSource(
                fn,
                {names.index(k): v for k, v in sig.items()},
                constants={names.index(k): v for k, v in constexprs.items()},
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, **(options or {})})
    return compiled.asm["cubin"], int(getattr(compiled.metadata, "shared", 0) or 0)


def _check_toolchain() -> None:
    """Raise :class:`ToolchainUnavailable` unless triton's NVIDIA backend, ptxas and cuobjdump are present."""
    try:
        import triton
        from triton.backends import backends
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as err:
        raise ToolchainUnavailable(f"triton is not importable: {err}") from err
    if "nvidia" not in backends:
        raise ToolchainUnavailable("triton has no NVIDIA backend")
    from shutil import which

    env = os.environ.get("TRITON_PTXAS_PATH")
    wheel = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ((env and Path(env).exists()) or wheel.exists() or which("ptxas")):
        raise ToolchainUnavailable("ptxas not found (expected in triton/backends/nvidia/bin)")
    cuobjdump_path()


def cuobjdump_path() -> Path:
    """The ``cuobjdump`` shipped in the triton wheel (or on PATH, or ``$TRITON_CUOBJDUMP_PATH``)."""
    env = os.environ.get("TRITON_CUOBJDUMP_PATH")
    if env and Path(env).exists():
        return Path(env)
    spec = importlib.util.find_spec("triton")
    if spec is not None and spec.origin:
        wheel = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if wheel.exists():
            return wheel
    from shutil import which

    found = which("cuobjdump")
    if found:
        return Path(found)
    raise ToolchainUnavailable("cuobjdump not found (expected in triton/backends/nvidia/bin)")


_USAGE = re.compile(r"Function\s+(\S+):\s*\n\s*(.*)")


def parse_resource_usage(text: str) -> dict[str, dict[str, int]]:
    """``{function: {"REG": .., "STACK": .., "SHARED": .., "LOCAL": ..}}`` from cuobjdump's output."""
    out = {}
    for name, fields in _USAGE.findall(text):
        out[name] = {k: int(v) for k, v in re.findall(r"([A-Z]+(?:\[\d+\])?):(\d+)", fields)}
    return out


def resource_usage(cubin: bytes) -> dict[str, dict[str, int]]:
    """Run ``cuobjdump --dump-resource-usage`` on a cubin and parse it."""
    tool = cuobjdump_path()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([str(tool), "--dump-resource-usage", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolchainUnavailable(f"cuobjdump failed: {proc.stderr.strip()[:500]}")
    return parse_resource_usage(proc.stdout)


def compile_variant(v: Variant, arch: int) -> dict:
    """Compile one specialisation for ``sm_<arch>``; returns registers, spill and shared bytes."""
    fn, signature, ce, attrs, warps = _signature_and_constexprs(v)
    options = None
    if v.kernel in ("edt", "edt_sweep"):
        from fastseg.kernels.edt import EXACT_ROUNDING as options
    cubin, dynamic_shared = _compile_cubin(fn, signature, ce, arch, warps, options, attrs)
    usage = resource_usage(cubin)
    if fn.__name__ not in usage:
        raise RuntimeError(f"cuobjdump reported no function {fn.__name__}: {sorted(usage)}")
    u = usage[fn.__name__]
    return {
        "registers": u.get("REG", -1),
        "spill_bytes": u.get("STACK", 0) + u.get("LOCAL", 0),
        "shared_bytes": u.get("SHARED", -1),
        "dynamic_shared_bytes": dynamic_shared,
        "block": ce.get("BLOCK", ce.get("BLOCK_T", 0)),
        "warps": warps,
    }


def _job(args):
    v, arch = args
    try:
        return compile_variant(v, arch), ""
    except ToolchainUnavailable:
        raise
    except Exception as err:  # noqa: BLE001 - a failed compile is a failed row of the report
        return None, f"{type(err).__name__}: {err}"[:400]


def _format_params(v: Variant) -> str:
    default = asdict(TermParams())
    return ",".join(f"{k}={val:g}" for k, val in v.params if default[k] != val)


def report(
    archs=ARCHS, *, full: bool = False, only: str | None = None, logits: tuple[str, ...] = LOGITS, jobs: int | None = None
) -> list[dict]:
    """Compile every catalog specialisation for each ``sm_<arch>`` and return one dict per kernel.

    Runs in a subprocess when ``TRITON_INTERPRET`` is set. Raises :class:`ToolchainUnavailable`
    when triton, ptxas or cuobjdump cannot be used.
    """
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return _report_in_subprocess(archs, full=full, only=only, logits=logits, jobs=jobs)
    _check_toolchain()
    todo = variants(full=full, logits=tuple(logits))
    if only:
        todo = {v: losses for v, losses in todo.items() if any(only in loss for loss in losses)}
    tasks = [(v, arch) for arch in archs for v in todo]
    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            results = list(pool.map(_job, tasks))
    else:
        results = [_job(task) for task in tasks]
    rows = []
    for (v, arch), (usage, error) in zip(tasks, results):
        row = Row(
            kernel=v.kernel,
            losses=todo[v],
            quantities={"reduce": f"K={v.k}", "edt": f"lines={v.k}", "edt_sweep": f"BLOCK_N={v.k}"}.get(v.kernel) or ",".join(Q(k).name for k in v.quantities),
            params=_format_params(v),
            logits=v.logits if v.kernel != "reduce" else "-",
            target=v.target if v.kernel not in _NOT_PIXEL_KERNELS else "-",
            valid=v.valid,
            weight=v.weight,
            atomic=v.atomic,
            per_element=v.per_element,
            aligned=v.aligned,
            arch=f"sm_{arch}",
            block=(usage or {}).get("block", v.block),
            warps=(usage or {}).get("warps", block_and_warps(v.block)[1] if v.block else 0),
            error=error,
        )
        if usage:
            row.registers, row.spill_bytes = usage["registers"], usage["spill_bytes"]
            row.shared_bytes, row.dynamic_shared_bytes = usage["shared_bytes"], usage["dynamic_shared_bytes"]
        d = asdict(row)
        d.pop("extra")
        rows.append(d)
    return rows


def _report_in_subprocess(archs, *, full, only, logits, jobs) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "fastseg.kernel_report", "--json", "--no-gate"]
    for arch in archs:
        cmd += ["--arch", str(arch)]
    if full:
        cmd.append("--full")
    if only:
        cmd += ["--only", only]
    for lg in logits:
        cmd += ["--logits", lg]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode == 3:
        raise ToolchainUnavailable(proc.stderr.strip()[-500:])
    if proc.returncode != 0:
        raise RuntimeError(f"kernel report subprocess failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def format_table(rows: list[dict]) -> str:
    """A fixed-width table, one line per compiled kernel."""
    head = ("arch", "kernel", "quantities", "params", "logits", "target", "mask", "weight", "atomic", "elem", "align",
            "block", "regs", "spill", "smem", "dsmem", "losses")
    lines = []
    for r in rows:
        lines.append(
            (
                r["arch"],
                r["kernel"],
                r["quantities"],
                r["params"] or "-",
                r["logits"],
                r["target"],
                "y" if r["valid"] else "-",
                "y" if r["weight"] else "-",
                "y" if r["atomic"] else "-",
                "y" if r["per_element"] else "-",
                "y" if r["aligned"] else "-",
                str(r["block"]) if r["block"] else "-",
                str(r["registers"]) if not r["error"] else "ERR",
                str(r["spill_bytes"]) if not r["error"] else "ERR",
                str(r["shared_bytes"]) if not r["error"] else "ERR",
                str(r["dynamic_shared_bytes"]) if not r["error"] else r["error"][:60],
                ",".join(r["losses"]),
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths[:-1]), "-" * len(head[-1]))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def gate_passes(rows: list[dict]) -> bool:
    """True when every kernel compiled and none spills."""
    return bool(rows) and all(not r["error"] and r["spill_bytes"] == 0 for r in rows)


def main(argv: list[str] | None = None) -> int:
    """``fastseg kernels``: print the resource table (or ``--json``); exit 0 iff no kernel spills.

    Exit status 1: a kernel spills or fails to compile; 3: the compile toolchain is unavailable.
    """
    parser = argparse.ArgumentParser(
        prog="fastseg kernels",
        description="AOT-compile every fused-loss kernel specialisation (no GPU needed) and report "
        "registers, spilled bytes and shared memory per kernel (cuobjdump --dump-resource-usage).",
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80 or 90 (repeatable; default both)")
    parser.add_argument("--full", action="store_true", help="compile the full product of dtypes, targets, masks, weights and atomics")
    parser.add_argument("--only", default=None, help="only specialisations used by losses whose name contains this text")
    parser.add_argument("--logits", action="append", choices=LOGITS, help="logits dtypes (repeatable; default all three)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile processes (default: CPU count)")
    parser.add_argument("--no-gate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    archs = tuple(args.arch) if args.arch else ARCHS
    unknown_archs = sorted(set(archs) - set(ARCHS))
    if unknown_archs:
        print(f"fastseg kernels: --arch must be one of {', '.join(map(str, ARCHS))}; got {unknown_archs}", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print(f"fastseg kernels: --jobs must be >= 1; got {args.jobs}", file=sys.stderr)
        return 2
    names = [name for name, _, _ in _catalog()] + ["edt"]
    if args.only is not None and not any(args.only and args.only in name for name in names):
        print(f"fastseg kernels: no catalog entry's name contains {args.only!r}. Entries: {', '.join(names)} "
              "(the losses not named share an entry's kernels: Jaccard, Tversky, focal Tversky, DIBE_Reg and "
              "log-cosh Dice those of dice; weighted BCE those of bce; Combo and Holistic those of bce_dice)",
              file=sys.stderr)
        return 2
    try:
        logits = tuple(dict.fromkeys(args.logits)) if args.logits else LOGITS
        rows = report(archs, full=args.full, only=args.only, logits=logits, jobs=args.jobs)
    except ToolchainUnavailable as err:
        print(f"fastseg kernels: compile toolchain unavailable: {err}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows))
        ok = gate_passes(rows)
        worst = max((r["registers"] for r in rows if not r["error"]), default=-1)
        print(f"\n{len(rows)} kernels, max {worst} registers/thread, {'no spills' if ok else 'SPILLS OR ERRORS'}")
    if args.no_gate:
        return 0
    return 0 if gate_passes(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
