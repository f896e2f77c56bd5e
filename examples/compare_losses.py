"""Train the same U-Net with several fastseg losses (same budget, same seeds) and compare them.

    python examples/compare_losses.py --epochs 2 --steps-per-epoch 150 --out examples/results
    python examples/compare_losses.py --only bce,dice --epochs 1 --steps-per-epoch 20 --out /tmp/cmp

The losses are those of the seeds' comparison tables (seed 000 Tables 1-3, seed 001 Table 5):
BCE, Dice, BceDice, Focal, Focal Tversky, Unified Focal, seed 000's Hybrid Focal (aF + FT, which is
Hybrid Focal Margin with m = 0: the baseline of seed 000's claim), Hybrid Focal Margin with
m = 0.5, 1.0 and 1.5, DIBE and the distance loss of seed 003. A loss that :mod:`fastseg.functional` does not
offer runs with the eager oracle of :mod:`fastseg.reference` (marked in the table), or is skipped
with a note when neither has it. Each run starts from the same initial weights (``torch.manual_seed``)
and sees the same crops (``numpy`` generator seeded alike); ``--seeds 0 1 2`` repeats everything
per seed and reports mean and standard deviation.

Written to ``--out``: ``comparison.md`` (the command, the budget and the table, metrics in % as the
seeds print them), ``comparison.json`` (every run's metrics, loss history and timing) and
``comparison.png`` (grouped bars of IoU, F1, ODS, OIS and OII; needs matplotlib). The JSON is
rewritten after every run, and ``--resume`` skips runs it already holds, so an interrupted
comparison can continue.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

# (label, fastseg.functional name, parameters). Parameters left out take the catalog defaults.
LOSSES: list[tuple[str, str, dict]] = [
    ("BCE", "bce", {}),
    ("Dice", "dice", {}),
    ("BceDice", "bce_dice", {}),
    ("Focal", "focal", {}),
    ("Focal Tversky", "focal_tversky", {}),
    ("Unified Focal (asym.)", "unified_focal", {}),
    ("Hybrid Focal (HFM m=0)", "hybrid_focal_margin", {"m": 0.0}),
    ("HFM m=0.5", "hybrid_focal_margin", {"m": 0.5}),
    ("HFM m=1.0", "hybrid_focal_margin", {"m": 1.0}),
    ("HFM m=1.5", "hybrid_focal_margin", {"m": 1.5}),
    ("DIBE", "dibe", {}),
    ("Distance loss", "distance_loss", {}),
]

COLUMNS = [("iou", "IoU"), ("f1", "F1"), ("recall", "Recall"), ("precision", "Precision"), ("ods_f1", "ODS F1"), ("ois_f1", "OIS F1")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="examples/results", help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full comparison per seed")
    parser.add_argument("--only", default=None, help="comma-separated fastseg.functional names or labels to run")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in OUT/comparison.json")
    _common.add_common_args(parser)
    return parser


def selected(only: str | None) -> list[tuple[str, str, dict]]:
    if not only:
        return LOSSES
    keys = {k.strip() for k in only.split(",")}
    chosen = [e for e in LOSSES if e[0] in keys or e[1] in keys]
    if not chosen:
        raise ValueError(f"--only matches none of {', '.join(e[1] for e in LOSSES)}; got {only!r}")
    return chosen


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per label: mean and std over seeds of every metric."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        row = {"label": label, "loss": mine[0]["loss"], "params": mine[0]["params"], "n": len(mine),
               "impl": mine[0].get("impl", "functional"),
               "seconds": float(np.mean([r["seconds"] for r in mine]))}
        for key in [k for k, _ in COLUMNS] + ["oii"]:
            vals = np.array([r["metrics"][key] for r in mine], dtype=float)
            row[key] = float(vals.mean())
            row[key + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict], header: list[str], skipped: list[str], impl: str = "functional") -> str:
    best = {k: max(r[k] for r in rows) for k, _ in COLUMNS}
    multi = any(r["n"] > 1 for r in rows)

    def cell(r, k, scale=100.0, digits=2):
        text = f"{scale * r[k]:.{digits}f}"
        if multi:
            text += f" ± {scale * r[k + '_std']:.{digits}f}"
        unique = sum(x[k] == best.get(k) for x in rows) < len(rows)
        return f"**{text}**" if scale == 100.0 and r[k] == best.get(k) and unique else text

    lines = list(header)
    lines.append("| Loss | fastseg call | " + " | ".join(t for _, t in COLUMNS) + " | OII | s/run |")
    lines.append("|---|---|" + "---:|" * (len(COLUMNS) + 2))
    for r in rows:
        call = f"`{r['loss']}({_fmt_params(r['params'])})`" if r["params"] else f"`{r['loss']}`"
        if r["impl"] != impl:
            call += f" ({r['impl']})"
        cells = [cell(r, k) for k, _ in COLUMNS] + [cell(r, "oii", 1.0, 3), f"{r['seconds']:.0f}"]
        lines.append(f"| {r['label']} | {call} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("IoU, F1, recall and precision in % at threshold 0.5 from the confusion counts pooled over the "
                 "validation split; ODS/OIS F1 in % over the threshold grid (tolerance in the budget line); OII "
                 "(seed 001 eq 13-15) in [-1, 1], 0 = balanced FP and FN, > 0 more misses than false alarms. "
                 "Best of each column in bold.")
    if skipped:
        lines.append("")
        lines.append(f"Skipped (not in fastseg.{impl}): " + ", ".join(skipped) + ".")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the comparison plot (pip install matplotlib)", file=sys.stderr)
        return False
    keys = [("iou", "IoU"), ("f1", "F1"), ("ods_f1", "ODS F1"), ("ois_f1", "OIS F1"), ("oii", "OII")]
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(rows)), 4.5))
    for i, (k, name) in enumerate(keys):
        vals = [r[k] for r in rows]
        errs = [r[k + "_std"] for r in rows]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, vals, width, yerr=errs if any(errs) else None, label=name)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels([r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("metric value")
    ax.set_title("CrackForest validation, same U-Net, budget and seeds per loss", fontsize=10)
    ax.legend(fontsize=8, ncol=len(keys))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        entries = selected(args.only)
    except ValueError as err:
        parser.error(str(err))
    # A loss missing from the chosen module falls back to the eager oracle (marked in the table).
    impl_of = {}
    for _, name, _ in entries:
        for impl in dict.fromkeys([args.impl, "reference"]):
            if name in _common.loss_names(impl):
                impl_of[name] = impl
                break
    skipped = [f"{label} (`{name}`)" for label, name, _ in entries if name not in impl_of]
    entries = [e for e in entries if e[1] in impl_of]
    chosen_impl = args.impl
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "comparison.json"
    runs = json.loads(json_path.read_text())["runs"] if args.resume and json_path.exists() else []
    done = {(r["label"], r["seed"]) for r in runs}
    train, val = _common.load_data(args.data, args.crackforest)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]).as_posix())] + (sys.argv[1:] if argv is None else list(argv)))
    started = time.strftime("%Y-%m-%d %H:%M")
    wall = time.perf_counter()
    for seed in args.seeds:
        for label, name, params in entries:
            if (label, seed) in done:
                continue
            args.seed, args.impl = seed, impl_of[name]
            result = _common.run_experiment(args, name, params, train, val, label=f"{label} seed {seed}")
            result.update(label=label, seed=seed, impl=impl_of[name])
            runs.append(result)
            print(f"{label:24s} seed {seed}  {_common.format_metrics(result['metrics'])}  ({result['seconds']:.0f} s)", flush=True)
            json_path.write_text(json.dumps({"command": command, "args": vars(args), "runs": runs}, indent=1))
    args.impl = chosen_impl
    rows = summarize(runs)
    device = _common.pick_device(args.device)
    n_val = min(len(val.names), args.max_val or len(val.names))
    import torch

    header = [
        "# Loss comparison on CrackForest",
        "",
        f"Command: `{command}`",
        "",
        f"Budget per run: {args.epochs} epochs x {args.steps_per_epoch} steps, batch {args.batch_size} of "
        f"{args.crop}x{args.crop} random crops with flips ({args.epochs * args.steps_per_epoch * args.batch_size} crops), "
        f"Adam lr {args.lr} (warm-up + cosine), U-Net widths {args.widths} "
        f"({runs[0]['n_parameters'] if runs else '?'} parameters), seeds {args.seeds}. "
        f"Data: {len(train.names)} training / {n_val} validation images ({'CrackForest 001-090' if args.data is None else args.data}). "
        f"ODS/OIS: {args.thresholds} thresholds, tolerance {args.tolerance} px. Losses: fastseg.{args.impl}.",
        "",
        f"Machine: {platform.machine()} {device.type}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f", {torch.get_num_threads()} torch threads")
        + f", torch {torch.__version__}; started {started}, this invocation {time.perf_counter() - wall:.0f} s.",
        "",
    ]
    (out / "comparison.md").write_text(markdown(rows, header, skipped, args.impl))
    plot(rows, out / "comparison.png")
    print((out / "comparison.md").read_text())
    return rows


if __name__ == "__main__":
    main()
