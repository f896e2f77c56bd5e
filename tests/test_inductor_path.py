"""backend="inductor": the fused CPU passes compiled by Inductor, checked against the float64 reference.

Oracle: :mod:`fastseg.reference` (plain autograd, float64) for values and gradients; the fused
calls run in float32. The image size 131x131 (N = 17161 > ``inductor_path.BLOCK``) makes the
forward split each row into blocks with one padded pixel, so the padding mask is exercised too.
Every loss compiles two small C++ kernels on first use (a few seconds each on 2 cores).
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastseg.functional as FS
import fastseg.reference as R
from fastseg.engine import inductor_path
from fastseg.engine.function import resolve_backend

pytestmark = pytest.mark.slow

SHAPE = (2, 1, 131, 131)


def data(soft=False):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 3
    t = torch.rand(SHAPE, generator=g, dtype=torch.float64)
    t = t if soft else (t < 0.1).double()
    ignore = torch.rand(SHAPE, generator=g) < 0.2
    return z, t, ignore


CASES = {
    "hybrid_focal_margin": (FS.hybrid_focal_margin, R.hybrid_focal_margin, {}, False, False),
    "unified_focal": (FS.unified_focal, R.unified_focal, {}, False, False),
    "dice": (FS.dice, R.dice, {}, False, False),
    "dibe": (FS.dibe, R.dibe, {}, False, False),
    "bce_none": (FS.bce, R.bce, {"reduction": "none"}, False, False),
    "dice_ignore": (FS.dice, R.dice, {}, False, True),
    "hybrid_focal_margin_soft_ignore": (FS.hybrid_focal_margin, R.hybrid_focal_margin, {}, True, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_grad_match_float64_reference(name):
    fused, ref, kw, soft, use_ignore = CASES[name]
    z64, t64, ignore = data(soft)
    if use_ignore:
        kw = {**kw, "ignore": ignore}
    z = z64.float().requires_grad_()
    out = fused(z, t64.float(), backend="inductor", **kw)
    up = torch.rand_like(out)  # a generic upstream gradient (matters for reduction="none")
    (out * up).sum().backward()
    zr = z64.clone().requires_grad_()
    expected = ref(zr, t64, **kw)
    (expected * up.double()).sum().backward()
    torch.testing.assert_close(out.double(), expected.detach(), rtol=2e-5, atol=1e-6)
    scale = zr.grad.abs().max().item()
    torch.testing.assert_close(z.grad.double(), zr.grad, rtol=1e-4, atol=1e-5 * scale)


def test_rows_that_do_not_split_into_equal_blocks_keep_float32_accuracy():
    """179200-pixel rows: 11 blocks of 16290 and a 10-pixel tail. Padded to 11 equal blocks the
    rows were summed by a scalar loop, 4096 float32 additions in a row: 1e-4 off for constant
    logits (a zero-initialised output layer), 5x the float32 tolerance of ``fastseg validate``."""
    z = torch.full((3, 1, 512, 350), 3.25)
    t = torch.zeros(z.shape, dtype=torch.bool)
    want = R.bce(z.double(), t).item()
    got = FS.bce(z, t, backend="inductor").item()
    assert abs(got - want) <= 2e-5 * want, (got, want)


def test_deterministic_bitwise():
    z64, t64, ignore = data()
    runs = []
    for _ in range(2):
        z = z64.float().requires_grad_()
        loss = FS.hybrid_focal_margin(z, t64.bool(), ignore=ignore, backend="inductor")
        loss.backward()
        runs.append((loss.detach(), z.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_cpu_only_and_auto_unchanged():
    assert resolve_backend("auto", torch.zeros(1, 1, 1)) == "torch"
    assert resolve_backend("inductor", torch.zeros(1, 1, 1)) == "inductor"
    with pytest.raises(ValueError, match="inductor"):
        resolve_backend("inductor", torch.zeros(1, 1, 1, device="meta"))
    with pytest.raises(ValueError, match="inductor"):
        inductor_path._check_device(torch.zeros(1, device="meta"))


def test_outer_compile_has_no_graph_break():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(2, 1, 3, padding=1)
    x = torch.randn(2, 2, 12, 10)
    t = torch.rand(2, 1, 12, 10) < 0.2

    def step(x, t):
        return FS.hybrid_focal_margin(model(x), t, backend="inductor")

    explanation = torch._dynamo.explain(step)(x, t)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss_c = compiled(x, t)
    (g_c,) = torch.autograd.grad(loss_c, model.weight)
    # independent value: the float64 reference on the same model output
    out = model(x).double()
    loss_r = R.hybrid_focal_margin(out, t.double())
    (g_r,) = torch.autograd.grad(loss_r, model.weight)
    torch.testing.assert_close(loss_c.double(), loss_r, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(g_c, g_r, rtol=1e-4, atol=1e-6)


def test_dispatch_mode_runs_eager_and_leaves_compiled_fn_usable():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    z64, t64, _ = data()
    expected = R.dice(z64, t64)
    t8 = t64.to(torch.uint8)  # a variant no other test compiled: its first call is under the mode
    with Passthrough():
        under_mode = FS.dice(z64.float(), t8, backend="inductor")
    after = FS.dice(z64.float(), t8, backend="inductor")
    torch.testing.assert_close(under_mode.double(), expected, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(after.double(), expected, rtol=2e-5, atol=1e-6)


def test_a_hyperparameter_schedule_compiles_once():
    """The parameter values are an input of the compiled passes, not constants traced into them:
    three margins and two DIBE alphas compile one forward and one backward pass per loss (Dynamo
    counts no new graph), and every value still matches its own float64 reference."""
    from torch._dynamo.utils import counters

    z64, t64, _ = data()
    cases = [(FS.hybrid_focal_margin, R.hybrid_focal_margin, "m", (0.35, 0.8, 1.25)),
             (FS.dibe, R.dibe, "alpha", (0.15, 0.45))]
    for fused, ref, name, values in cases:
        for i, value in enumerate(values):
            z = z64.float().requires_grad_()
            out = fused(z, t64.float(), backend="inductor", **{name: value})
            out.backward()
            if i == 0:
                graphs = counters["stats"]["unique_graphs"]
            zr = z64.clone().requires_grad_()
            expected = ref(zr, t64, **{name: value})
            expected.backward()
            torch.testing.assert_close(out.double(), expected.detach(), rtol=2e-5, atol=1e-6)
            torch.testing.assert_close(z.grad.double(), zr.grad, rtol=1e-4, atol=1e-5 * zr.grad.abs().max().item())
        assert counters["stats"]["unique_graphs"] == graphs, f"{fused.__name__}: a new {name} compiled a new graph"


_SPECIAL_OR_NOT = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 0.3, 0.75, 2.5]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(_SPECIAL_OR_NOT), min_size=7, max_size=7), st.integers(0, 2**31 - 1))
def test_the_forms_decide_every_branch_of_the_formulas(values, seed):
    """The contract the compiled passes rest on: formulas branched for one parameter set and fed the
    numbers of another with equal :func:`param_forms` give exactly what the second set gives alone
    (a branch on anything but the forms would take the wrong expression)."""
    from fastseg.engine import torch_path as tp
    from fastseg.engine.spec import NUM_QUANTITIES, TermParams

    fields = list(TermParams.__dataclass_fields__)
    values[fields.index("gce")] = values[fields.index("gce")] or 0.5  # the EL exponent is > 0 (exp_log checks it)
    numbers = TermParams(**dict(zip(fields, values)))
    rng = random.Random(seed)
    others = {  # every non-special value swapped for another non-special one
        f: v if v in tp.SPECIAL_VALUES[f] else rng.choice([x for x in _SPECIAL_OR_NOT + [0.9, 1.7]
                                                           if x not in tp.SPECIAL_VALUES[f] and x != v])
        for f, v in zip(fields, values)
    }
    branches = TermParams(**others)
    assert tp.param_forms(branches) == tp.param_forms(numbers)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 300, generator=g, dtype=torch.float64) * 4
    t = torch.rand(2, 300, generator=g, dtype=torch.float64)
    d = torch.rand(2, 300, generator=g, dtype=torch.float64)
    qs = tuple(range(NUM_QUANTITIES))
    coef = {k: torch.randn(2, 1, generator=g, dtype=torch.float64) for k in qs if k not in tp._CONSTANT}

    def chunk(params, values=None):
        return tp._Chunk(z, t, None, None, d, params, torch.float64, values)

    assert torch.equal(torch.stack(tp._chunk_sums(chunk(branches, numbers), qs)),
                       torch.stack(tp._chunk_sums(chunk(numbers), qs)))
    assert torch.equal(tp._chunk_grad(chunk(branches, numbers), qs, coef), tp._chunk_grad(chunk(numbers), qs, coef))
