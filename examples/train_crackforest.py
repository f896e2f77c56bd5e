"""Train a small U-Net on CrackForest (or your own crack images) with any fastseg loss.

    python examples/train_crackforest.py --loss hybrid_focal_margin --margin 0.5
    python examples/train_crackforest.py --loss dibe --alpha 0.3 --epochs 5
    python examples/train_crackforest.py --data my_cracks/ --loss bce_dice --out runs/mine

Any option the script does not know (``--margin 0.5``, ``--scope batch``, ...) is passed to the
loss ``fastseg.functional.<loss>`` as a keyword argument; an unknown one is an error that lists the
loss's parameters. CrackForest's fixed split is 70 training and 20 validation images
(:func:`fastseg.data.load_crackforest`); ``--data DIR`` reads ``DIR/images`` and ``DIR/masks``.

Training uses random crops (``--crop``, default 128) with random flips, Adam with a warm-up + cosine
learning rate, and a progress bar per epoch. Evaluation runs the full validation images and
reports IoU, precision, recall, F1 (threshold 0.5, counts pooled over the split), ODS and OIS F1
(``--tolerance`` pixels, default 2) and OII. Written to ``--out``: ``model.pt`` (weights,
normalisation and config), ``metrics.json`` and ``predictions.png`` (image | prediction | ground
truth for ``--show`` validation images; needs matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog="Extra --name value options are loss parameters, e.g. --margin 0.5.",
    )
    parser.add_argument("--loss", default="hybrid_focal_margin",
                        help="a function of fastseg.functional (see --list-losses), or a weighted sum such as 0.5*focal+dice")
    parser.add_argument("--list-losses", action="store_true", help="print the available losses and exit")
    parser.add_argument("--out", default="runs/crackforest", help="output folder (checkpoint, metrics.json, predictions.png)")
    parser.add_argument("--show", type=int, default=4, help="validation images in predictions.png (0 = none)")
    return _common.add_common_args(parser)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.list_losses:
        print("\n".join(_common.loss_names(args.impl)))
        return {}
    try:
        loss_params = _common.parse_loss_params(extra)
        _common.make_loss(args.loss, args.impl, **loss_params)  # fail early on a bad name or parameter
    except ValueError as err:
        parser.error(str(err))
    train, val = _common.load_data(args.data, args.crackforest)
    print(f"data: {len(train.names)} training, {len(val.names)} validation images of {train.images.shape[1]}x{train.images.shape[2]}", file=sys.stderr)
    result = _common.run_experiment(args, args.loss, loss_params, train, val, out_dir=args.out, n_show=args.show)
    print(f"{result['n_parameters']} parameters, {result['seconds']:.1f} s")
    print(_common.format_metrics(result["metrics"]))
    print("wrote " + ", ".join(result["files"].values()))
    return result


if __name__ == "__main__":
    main()
