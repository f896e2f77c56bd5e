"""OII-guided search of DIBE's alpha (seed 001, section 3.1.2, Fig. 4, Appendix B) with real training.

    python examples/oii_guidance.py --epochs 1 --steps-per-epoch 60
    python examples/oii_guidance.py --target 0.0 0.2 --bounds 0.1 0.9 --max-steps 4 --loss dibe

Each step trains the U-Net of ``_common`` from the same initial weights with
``fastseg.functional.dibe(alpha=a)`` (beta = 1 - a, set by the loss; alpha weights missed cracks,
beta false alarms, seed 001 eq 16), validates it, and hands the validation OII to
:func:`fastseg.guidance.oii_guidance`, which bisects alpha in ``--bounds`` until the OII lies in
``--target`` (default (0.3, 0.4) and [0.1, 0.9], the paper's). A positive OII means more missed
crack pixels than false alarms, so the search raises alpha; a negative OII lowers it.

Every step prints alpha, OII, IoU, F1 and the FP/FN counts; the end prints the chosen alpha and
writes ``guidance.json`` into ``--out``. Other loss parameters pass through (``--theta 0.5``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import fastseg.guidance  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0], epilog="Extra --name value options are loss parameters.")
    parser.add_argument("--loss", default="dibe", help="a fastseg.functional loss with an 'alpha' parameter (default dibe)")
    parser.add_argument("--target", type=float, nargs=2, default=(0.3, 0.4), metavar=("M0", "M1"), help="target OII interval")
    parser.add_argument("--bounds", type=float, nargs=2, default=(0.1, 0.9), metavar=("A", "B"), help="alpha range")
    parser.add_argument("--max-steps", type=int, default=4, help="at most this many trainings")
    parser.add_argument("--out", default="runs/oii_guidance", help="folder for guidance.json")
    _common.add_common_args(parser)
    parser.set_defaults(epochs=1, steps_per_epoch=60)
    return parser


def main(argv: list[str] | None = None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        params = _common.parse_loss_params(extra)
        if "alpha" in params:
            raise ValueError("alpha is what the search chooses; do not pass --alpha")
        _common.make_loss(args.loss, args.impl, alpha=0.5, **params)
    except ValueError as err:
        parser.error(str(err))
    train, val = _common.load_data(args.data, args.crackforest)
    print(f"OII guidance for {args.loss}: target {tuple(args.target)}, alpha in {tuple(args.bounds)}, "
          f"{args.epochs} x {args.steps_per_epoch} steps per training")
    print(f"{'step':>4} {'alpha':>7} {'OII':>7} {'IoU':>7} {'F1':>7} {'FP':>9} {'FN':>9} {'s':>5}")
    step = 0

    def train_and_validate(alpha: float) -> dict:
        nonlocal step
        step += 1
        result = _common.run_experiment(args, args.loss, {**params, "alpha": alpha}, train, val)
        m = result["metrics"]
        print(f"{step:>4} {alpha:>7.4f} {m['oii']:>7.3f} {m['iou']:>7.4f} {m['f1']:>7.4f} {m['fp']:>9.0f} {m['fn']:>9.0f} {result['seconds']:>5.0f}", flush=True)
        return m

    res = fastseg.guidance.oii_guidance(train_and_validate, target=tuple(args.target), bounds=tuple(args.bounds), max_steps=args.max_steps)
    status = "OII in the target interval" if res.converged else "not converged: the step closest to the interval"
    print(f"chosen alpha = {res.alpha:.4f} (OII {res.oii:.3f}, {status}; {len(res.steps)} trainings)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance.json").write_text(json.dumps({
        "loss": args.loss, "params": params, "target": list(args.target), "bounds": list(args.bounds),
        "alpha": res.alpha, "oii": res.oii, "converged": res.converged,
        "steps": [{"alpha": s.alpha, "oii": s.oii, "metrics": s.metrics} for s in res.steps],
        "budget": {k: getattr(args, k) for k in ("epochs", "steps_per_epoch", "batch_size", "crop", "lr", "seed")},
    }, indent=1))
    return res


if __name__ == "__main__":
    main()
