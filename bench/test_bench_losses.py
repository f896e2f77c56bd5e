"""Forward+backward step of each loss and contender, timed by pytest-benchmark.

The same cases and contender factories as ``fastseg bench`` (:mod:`fastseg.benchmark`); a
contender that does not implement a loss, or whose library is missing, is skipped with the reason.
``fastseg bench`` adds what pytest-benchmark does not measure: memory, bytes per pixel, the error
against the float64 reference.
"""

import pytest
import torch

from fastseg import benchmark as fb


def test_loss_step(benchmark, bench_case, contender, bench_device, bench_inputs):
    kind, factory = fb.CONTENDERS[contender]
    try:
        fn = factory(bench_case, bench_device)
    except fb.Unavailable as why:
        pytest.skip(str(why))
    z0, t = bench_inputs
    z = z0.detach().clone().requires_grad_(True)

    def one_step():
        loss = fb.step(fn, z, t)
        fb.sync(bench_device)
        return loss

    benchmark.group = bench_case.id
    benchmark.extra_info.update(contender=contender, kind=kind, pixels=bench_case.pixels, shape=bench_case.shape)
    rounds = 3 if torch.device(bench_device).type == "cpu" else 20
    loss = benchmark.pedantic(one_step, rounds=rounds, warmup_rounds=1, iterations=1)
    assert torch.isfinite(loss) and z.grad is not None and torch.isfinite(z.grad).all()
