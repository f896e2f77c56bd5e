"""``scope="global"``: loss statistics summed over every rank of a ``torch.distributed`` group.

Why. Under ``DistributedDataParallel`` each rank sees only its shard of the batch, so a batch
Dice computed per rank is a per-shard Dice, and DDP's gradient averaging does not turn an average
of per-shard Dice losses into the Dice loss of the whole batch (nnU-Net's batch Dice had exactly
this bug). Pointwise losses have the same defect in a milder form: a per-rank mean over valid
pixels is not the global-batch mean when the ranks hold different numbers of valid (non-ignored)
pixels, and the class fractions of the balanced / adaptive weighted BCE are per-rank fractions.
A fused loss is ``L = epilogue(S)`` with ``S`` a tiny ``[groups, K]`` tensor of sums
(:mod:`fastseg.engine.spec`), and sums add across ranks: one all-reduce of ``S`` gives the
statistics of the global batch, and the epilogue evaluated on them is the global-batch loss.

What ``scope="global"`` does (region, compound and pointwise losses; ``fastseg.functional`` and
``fastseg.losses``):

- each rank sums its shard's statistics per channel, ``S_r [C, K]`` (``C * K`` floats: a few
  dozen bytes), and **one** all-reduce (sum) over the process group gives ``G = sum_r S_r``;
  nothing per pixel crosses ranks, and the backward pass adds no collective;
- the epilogue runs on ``G`` as scope ``"batch"`` would on the concatenated batch: region terms
  use the global TP/FP/FN, the pointwise terms of compound losses are divided by the **global**
  valid-pixel count (``COUNT`` is one of the summed statistics), class frequencies are global,
  and a channel counts as present when any rank holds a valid pixel of it. Every rank returns
  the same value, the loss of the global batch;
- pointwise losses (the catalog's, and the per-pixel distance losses ``hausdorff_dt``,
  ``distance_map_ce``, ``shape_aware``, whose maps are per image) take scope ``"batch"``, their
  default, or ``"global"`` (``"image"`` raises: a pointwise mean has no per-image form). With
  ``"global"``, ``"mean"`` is the sum of the per-pixel terms of every rank over the global
  valid-pixel count, ``"sum"`` the sum over every rank, and the class fractions of
  ``balanced_bce`` / ``adaptive_wce`` are those of the global batch. ``reduction="none"``
  returns this rank's per-pixel map, its rows of the global batch's map: the values of
  ``"batch"`` except that the class fractions (the only batch-level statistics of a pointwise
  loss) are global. The one all-reduce runs whatever the reduction and the loss, so every rank
  issues the same collectives;
- the collective is ``torch.distributed._functional_collectives.all_reduce``, so
  ``torch.compile`` (``fullgraph=True`` included) traces it into the graph; any backend
  works (NCCL on GPUs, gloo on CPU);
- the process group is the default one, or ``process_group=`` of the ``nn.Module`` losses (and of
  :func:`fastseg.functional.run_plan`);
- without an initialised process group (a single-process run, a notebook) the loss falls back
  to this process's statistics, i.e. ``scope="batch"``, with a ``UserWarning`` saying so (in
  eager mode: inside a ``torch.compile`` trace the warning is left out, as ``warnings.warn`` would
  break a ``fullgraph=True`` graph); with a group of one rank it is exactly ``"batch"``, silently.

Gradient, and DDP's averaging (the decision). The all-reduce is differentiated as what it is
with the other ranks' inputs held fixed: ``dG/dS_r = I``. So the coefficients of the fused
backward are ``c = dL/dG``, computed identically on every rank and **not** multiplied by the
world size ``W``, and rank ``r``'s gradient is exactly ``dL_global / dz_r``, the gradient of the
global-batch loss with respect to its own logits (the corresponding rows of the single-process
gradient on the concatenated batch). DDP then *averages* parameter gradients over ranks, which
gives ``(1/W) dL_global/dtheta``. To get exactly the single-process gradient, backpropagate
``loss * W``::

    loss = criterion(model(x), t)            # scope="global": the global-batch loss, same on every rank
    (loss * fastseg.distributed.world_size()).backward()   # DDP's 1/W averaging then gives dL/dtheta

(``world_size()`` is 1 without a process group, so the line is right everywhere; with a
learning rate tuned for a single process, the factor is what keeps it valid under DDP.) The
factor is left to the caller rather than hidden in the backward pass because the gradient of
the returned value must be its true gradient (gradcheck, manual all-reduce of gradients, FSDP
with a sum reduction, or no data parallelism at all). ``torch.distributed.nn.functional.all_reduce``
makes the other choice: its backward all-reduces the upstream gradients, which multiplies every
rank's gradient by ``W`` (and costs a second collective).

Exactness: all ranks receive the same all-reduced bits, so they evaluate the same epilogue; the
sums are those of one process up to the order of floating-point addition.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._checks import _first_level_outside_package
from .engine.plans import Stats
from .engine.spec import Quantity

__all__ = ["GLOBAL", "available", "world_size", "sum_across_ranks", "global_stats"]

#: The scope that synchronises the statistics across ranks.
GLOBAL = "global"

_FALLBACK_WARNING = (
    "scope='global' asks for statistics summed over every rank of a torch.distributed process group, "
    "but no process group is initialised (torch.distributed.init_process_group was not called): falling "
    "back to this process's statistics, the same as scope='batch'"
)


def available() -> bool:
    """Is ``torch.distributed`` built in and a default process group initialised?"""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _group(process_group):
    return torch.distributed.group.WORLD if process_group is None else process_group


def world_size(process_group=None) -> int:
    """Number of ranks of ``process_group`` (default: the default group); 1 without one.

    The factor to multiply a ``scope="global"`` loss by before ``backward()`` under DDP (see the
    module docstring).
    """
    if not available():
        return 1
    return torch.distributed.get_world_size(_group(process_group))


def sum_across_ranks(x: Tensor, process_group=None) -> Tensor:
    """``sum_r x_r`` over the ranks of ``process_group``; its gradient w.r.t. the local ``x`` is the
    identity (the other ranks' values are held fixed), so no collective runs in backward.

    Forward is one functional all-reduce (traceable by ``torch.compile``). The result is
    ``R + (x - x.detach())``: the value is exactly the all-reduced ``R`` (``x - x.detach()`` is 0
    for finite ``x``) on every rank, and autograd sees the identity on ``x``.
    """
    if world_size(process_group) == 1:
        return x
    from torch.distributed import _functional_collectives as funcol

    reduced = funcol.all_reduce(x.detach(), "sum", _group(process_group))
    reduced = funcol.wait_tensor(reduced) if hasattr(funcol, "wait_tensor") else reduced
    return reduced + (x - x.detach())


def global_stats(S: Tensor, quantities, B: int, C: int, P: int, *, per_pixel: bool = False,
                 process_group=None) -> Stats:
    """The :class:`~fastseg.engine.plans.Stats` of the global batch from this rank's ``S [B*C*P, K]``
    (the sums of ``quantities``, in that order), over the ranks of ``process_group`` (default: the
    default group).

    The local sums are first reduced to one row per channel (``[C, K]``; every epilogue needs
    only per-channel totals once the batch is pooled), then summed over the ranks with
    :func:`sum_across_ranks`; the view is scope ``"batch"`` over a batch of one "image" holding
    the global sums. Groups are marked present by the global valid-pixel count when the plan sums
    it (a rank without an ignore mask and one with must agree, so the flag cannot depend on the
    local mask). Without an initialised process group: a ``UserWarning`` and the local sums.

    ``per_pixel=True`` (``reduction="none"`` of a pointwise loss, ``P = N`` rows per image and
    channel): the view keeps this rank's per-pixel rows and answers ``channel``/``total`` (the
    class counts of balanced / adaptive WCE) with the global per-channel sums.
    """
    K = len(quantities)
    local = S.reshape(B, C, P, K).sum(dim=(0, 2))
    if not available():
        if not torch.compiler.is_compiling():  # warnings.warn would break a fullgraph trace
            warnings.warn(_FALLBACK_WARNING, UserWarning, stacklevel=_first_level_outside_package())  # the user's line
        total = local
    else:
        total = sum_across_ranks(local, process_group)
    masked = Quantity.COUNT in tuple(quantities)
    if per_pixel:
        return _PixelStats(S, quantities, B, C, P, total, masked)
    return Stats(total, quantities, 1, C, 1, "batch", masked=masked)


class _PixelStats(Stats):
    """This rank's per-pixel rows, with the per-channel sums ``totals [C, K]`` of the global batch."""

    def __init__(self, S: Tensor, quantities, B: int, C: int, P: int, totals: Tensor, masked: bool):
        super().__init__(S, quantities, B, C, P, "batch", masked)
        self.totals = totals.view(1, C, 1, len(quantities))

    def channel(self, q: Quantity) -> Tensor:
        return self.totals[..., self.index[q]]

    def total(self, q: Quantity) -> Tensor:
        return self.channel(q).sum()
