"""Data-parallel training with a batch-scope loss whose statistics span every rank (``scope="global"``).

    torchrun --nproc-per-node 2 examples/ddp_train.py                  # CPU: gloo, 2 processes
    torchrun --nproc-per-node 2 examples/ddp_train.py --steps 50 --loss DiceLoss
    torchrun --nproc-per-node 4 examples/ddp_train.py --compile        # GPUs: NCCL, one GPU per rank
    python examples/ddp_train.py                                       # one process (a 1-rank group)

Each step draws one global batch of ``--batch-size`` synthetic crack images
(:func:`fastseg.data.synthetic_cracks`: the input is a noisy view of a crack map, the target the
map), identical on every rank, and each rank trains on its own shard of it (rank ``r`` takes
images ``r, r + W, ...``), as a ``DistributedSampler`` would give. The model, a small plain CNN
without BatchNorm, is wrapped in ``DistributedDataParallel``. The loss is a ``fastseg.losses``
module with ``scope="global"``: every rank all-reduces its ``[C, K]`` statistics once per step
(nothing per pixel crosses ranks), so all ranks compute the loss of the *global* batch, and
each rank's backward gives the exact gradient of that loss w.r.t. its own logits. DDP averages
parameter gradients over the ``W`` ranks, so the script backpropagates ``loss * W``
(``fastseg.distributed.world_size()``) to get exactly the gradient single-process training on the
whole batch would get (see :mod:`fastseg.distributed`).

Printed per step by rank 0, for every rank (gathered, for the log only): the global loss (the
same on every rank) and, for comparison, the loss a per-rank batch scope would have given on
that rank's shard (what peer libraries compute under DDP). At the first step rank 0 also checks
that the averaged DDP parameter gradients equal those of a single process on the whole batch, and
prints the largest difference (``--no-check`` skips it).

Backend: NCCL when CUDA is available (rank ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``), else gloo on
the CPU. Started without torchrun, the script initialises a one-rank gloo group itself.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import fastseg.distributed  # noqa: E402
import fastseg.losses  # noqa: E402
from fastseg.data import synthetic_cracks  # noqa: E402


def make_model() -> nn.Module:
    """A small fully convolutional net: noisy crack map in, one logit per pixel out."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 1, 1),
    )


def global_batch(step: int, size: int, crop: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch (identical on every rank): noisy inputs, crack masks."""
    logits, masks = synthetic_cracks(size, crop, crop, seed=seed * 100_003 + step)
    gen = torch.Generator().manual_seed(seed + step)
    x = torch.sigmoid(logits) + 0.3 * torch.randn(logits.shape, generator=gen)
    return x.to(device), masks.to(device)


def init_distributed() -> tuple[int, int, torch.device]:
    """Process group from torchrun's environment, or a one-rank gloo group; (rank, world, device)."""
    cuda = torch.cuda.is_available()
    if "RANK" in os.environ:
        backend = "nccl" if cuda else "gloo"
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device if cuda else None)
    else:
        init_file = Path(tempfile.mkdtemp()) / "init"
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=1)
        device = torch.device("cuda" if cuda else "cpu")
    return dist.get_rank(), dist.get_world_size(), device


def check_gradients(model: nn.Module, ddp_grads, criterion_batch: nn.Module, x, t) -> float:
    """Largest |DDP gradient - single-process gradient on the whole batch| (rank 0, step 0)."""
    single = copy.deepcopy(model)
    single.zero_grad()
    criterion_batch(single(x), t).backward()
    return max((g - p.grad).abs().max().item() for g, p in zip(ddp_grads, single.parameters()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", default="HybridFocalMarginLoss",
                    help="a loss of fastseg.losses by class or functional name (DiceLoss or dice)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="global batch, split over the ranks")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model and the loss")
    ap.add_argument("--no-check", dest="check", action="store_false", help="skip the step-0 gradient check")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    rank, world, device = init_distributed()
    try:
        if args.batch_size < world:
            raise SystemExit(f"--batch-size ({args.batch_size}) must be at least the number of ranks ({world})")
        try:
            criterion = fastseg.losses.build({"name": args.loss, "scope": "global"})  # summed over every rank
            local_view = fastseg.losses.build({"name": args.loss, "scope": "batch"})  # one rank's batch alone
        except (TypeError, ValueError) as error:
            raise SystemExit(f"--loss: {error}") from None
        torch.manual_seed(args.seed)                    # the same initial weights on every rank
        base = make_model().to(device)
        initial = copy.deepcopy(base)
        model = nn.parallel.DistributedDataParallel(base, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        scale = fastseg.distributed.world_size()        # DDP averages gradients over the ranks

        def step_fn(x, t):
            logits = model(x)
            loss = criterion(logits, t)
            (loss * scale).backward()
            return loss.detach(), logits.detach()

        if args.compile:
            step_fn = torch.compile(step_fn)
        if rank == 0:
            print(f"{world} rank(s), backend {dist.get_backend()}, device {device.type}, loss {criterion!r}")
        for step in range(args.steps):
            x, t = global_batch(step, args.batch_size, args.crop, args.seed, device)
            xs, ts = x[rank::world], t[rank::world]     # this rank's shard
            opt.zero_grad(set_to_none=True)
            loss, logits = step_fn(xs, ts)
            local = local_view(logits, ts).detach()
            # for the log only: every rank's (global loss, per-rank batch loss), gathered on rank 0
            pairs = [torch.empty(2, device=device) for _ in range(world)]
            dist.all_gather(pairs, torch.stack([loss.float(), local.float()]))
            if rank == 0:
                glob = "  ".join(f"{p[0].item():.6f}" for p in pairs)
                per_rank = "  ".join(f"{p[1].item():.6f}" for p in pairs)
                print(f"step {step:3d}  global loss per rank: {glob}   per-rank batch loss: {per_rank}", flush=True)
            if step == 0 and args.check and rank == 0:
                grads = [p.grad for p in model.parameters()]
                diff = check_gradients(initial, grads, local_view, x, t)
                print(f"step   0 check: max |DDP gradient - single-process gradient| = {diff:.3e}", flush=True)
            opt.step()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
