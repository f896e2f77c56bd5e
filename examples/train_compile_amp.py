"""fastseg inside a training loop with torch.compile and mixed precision (AMP).

    python examples/train_compile_amp.py                      # GPU: compile + fp16 AMP; CPU: plain fp32
    python examples/train_compile_amp.py --compile --amp      # force both (CPU: bf16 autocast)
    python examples/train_compile_amp.py --loss HybridFocalMarginLoss --m 1.0 --steps 200

What it shows, in the ~30 lines of :func:`train_loop`:

- the loss is an ``nn.Module`` from :mod:`fastseg.losses`, built once, its arguments checked in
  ``__init__`` (``--loss`` names the class, extra ``--name value`` options are its arguments;
  :func:`fastseg.losses.build` makes it);
- ``torch.compile`` wraps model *and* loss in one step function; fastseg's fused losses are
  registered custom ops, so the graph does not break at the loss;
- under ``torch.autocast`` the logits arrive in fp16 (CUDA) or bf16 (CPU); fastseg accumulates
  in fp32 internally and returns an fp32 loss, and the gradient comes back in the logits' dtype;
  a ``GradScaler`` guards fp16 gradients against underflow.

Without a GPU both switches default to off, so the script runs anywhere in a minute or two.
The model and data are those of ``_common`` (CrackForest, 70/20 split); a validation pass with
:mod:`fastseg.metrics` ends the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import fastseg.losses  # noqa: E402


def train_loop(model, criterion, train_split, normalize, *, steps, batch_size, crop, lr, device, amp, compile, seed=0):
    """The training loop a user would write; returns the loss of every step."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def step_fn(x, t):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            logits = model(x)                # fp16/bf16 under autocast
            return criterion(logits, t)      # fastseg: fp32 accumulation, fp32 scalar out

    if compile:
        step_fn = torch.compile(step_fn)
    rng = np.random.default_rng(seed)
    losses = []
    bar = _common.Progress(steps, "train")
    for i in range(steps):
        imgs, masks = _common.random_batch(train_split, batch_size, crop, rng)
        x = normalize(imgs).to(device, non_blocking=True)
        t = torch.from_numpy(np.ascontiguousarray(masks)).to(device)[:, None]  # uint8 target is fine
        loss = step_fn(x, t)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        bar.update(i + 1, loss=float(np.mean(losses[-20:])))
    return losses


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0], epilog="Extra --name value options are the loss's arguments.")
    parser.add_argument("--loss", default="HybridFocalMarginLoss",
                        help="a loss of fastseg.losses by class or functional name (HybridFocalMarginLoss or hybrid_focal_margin)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on with CUDA")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: on with CUDA")
    parser.add_argument("--crackforest", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--max-val", type=int, default=None)
    args, extra = parser.parse_known_args(argv)
    device = _common.pick_device(args.device)
    compile = device.type == "cuda" if args.compile is None else args.compile
    amp = device.type == "cuda" if args.amp is None else args.amp
    try:
        criterion = fastseg.losses.build({"name": args.loss, **_common.parse_loss_params(extra)})
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    train, val = _common.load_data(args.data, args.crackforest)
    if args.max_val:
        val = _common.Split(val.images[: args.max_val], val.masks[: args.max_val], val.names[: args.max_val])
    torch.manual_seed(0)
    model = _common.UNet()
    normalize = _common.Normalizer(train.images)
    print(f"device {device}, compile {compile}, amp {amp} ({'fp16' if device.type == 'cuda' else 'bf16'}), loss {criterion!r}")
    start = time.perf_counter()
    losses = train_loop(model, criterion, train, normalize, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                        lr=args.lr, device=device, amp=amp, compile=compile)
    seconds = time.perf_counter() - start
    probs = _common.predict(model, val.images, normalize, device)
    metrics = _common.evaluate(probs, val.masks)
    print(f"{args.steps} steps in {seconds:.1f} s (first loss {losses[0]:.4f}, last 20 mean {np.mean(losses[-20:]):.4f})")
    print(_common.format_metrics(metrics))
    return {"losses": losses, "metrics": metrics, "seconds": seconds, "compile": compile, "amp": amp}


if __name__ == "__main__":
    main()
