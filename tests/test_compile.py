"""torch.compile of a model + fused loss on CPU: one graph, no graph break, eager-equal results.

The fused ops are registered with torch.library (custom_op + register_fake + register_autograd),
so Dynamo records each as one node. ``torch._dynamo.explain`` and ``fullgraph=True`` (which
raises on any break) check that; the aot_eager backend (fast) and one Inductor compile (slower,
marked ``slow``, ~15 s on 2 cores) check the fake implementations and the autograd formula
against eager gradients.
"""

from __future__ import annotations

import pytest
import torch

import fastseg.functional as FS
from fastseg.losses import DiceLoss, DistanceLoss, FocalLoss, HybridFocalMarginLoss, UnifiedFocalLoss


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 2, 12, 10, generator=g), torch.rand(2, 1, 12, 10, generator=g) < 0.2


def grads(model, step, x, t):
    model.zero_grad()
    loss = step(x, t)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize(
    "make_loss",
    [
        lambda b: lambda z, t: FS.hybrid_focal_margin(z, t, backend=b),
        lambda b: lambda z, t: FS.unified_focal(z, t, backend=b, scope="batch"),
        lambda b: lambda z, t: FS.focal(z, t, backend=b, reduction="none").mean(),
        lambda b: lambda z, t: FS.dice(z, t, backend=b, ignore=t),
        lambda b: lambda z, t: FS.focal(z.half(), t, backend=b, weight=t.float() + 0.5),
        lambda b: HybridFocalMarginLoss(backend=b),
        lambda b: lambda z, t: FS.distance_loss(z, t, backend=b),
        lambda b: lambda z, t: FS.hausdorff_dt(z, t, backend=b),
        lambda b: lambda z, t: FS.distance_map_ce(z, t, backend=b),
        lambda b: lambda z, t: FS.shape_aware(z, t, backend=b),
        lambda b: 0.5 * FocalLoss(backend=b) + DiceLoss(backend=b) + 0.1 * DistanceLoss(backend=b),
    ],
    ids=["hybrid_focal_margin", "unified_focal_batch", "focal_none", "dice_ignore", "focal_fp16_weight", "module",
         "distance_loss", "hausdorff_dt", "distance_map_ce", "shape_aware", "combined"],
)
def test_no_graph_break_and_eager_equal(make_loss, backend):
    """backend "auto" under torch.compile on CPU traces the Inductor formulas into the graph (small
    inputs; tests/test_compile.py::test_auto_inside_torch_compile_runs_the_inductor_backend_on_cpu),
    "torch" calls the opaque op; eager calls run the torch path either way."""
    loss = make_loss(backend)
    model = tiny_model()
    x, t = inputs()

    def step(x, t):
        return loss(model(x), t)

    explanation = torch._dynamo.explain(step)(x, t)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    loss_c, grads_c = grads(model, compiled, x, t)
    loss_e, grads_e = grads(model, step, x, t)
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_inductor_fullgraph_training_step():
    model = tiny_model()
    crit = UnifiedFocalLoss(backend="torch")
    x, t = inputs()

    def step(x, t):
        return crit(model(x), t)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    loss_c, grads_c = grads(model, compiled, x, t)
    loss_e, grads_e = grads(model, step, x, t)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fake_shapes():
    """The fake implementations give the real ops' shapes and dtypes (checked by opcheck)."""
    from fastseg.engine.function import fused_grad, fused_sums

    z = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    t = torch.rand(2, 3, 7) < 0.5
    params = torch.tensor([0.0, 0.5, 2.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    args = (z, t, None, None, None, [0, 1, 2, 5, 6, 7], params, "torch", True)
    torch.library.opcheck(fused_sums, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    coeffs = torch.randn(6, 6, dtype=torch.float64)
    gargs = (z.detach(), t, coeffs, None, None, None, [0, 1, 2, 5, 6, 7], params, "torch")
    torch.library.opcheck(fused_grad, gargs, test_utils=("test_schema", "test_faketensor"))


def test_a_changing_float_hyperparameter_compiles_and_follows_the_reference():
    """A margin schedule (or the OII alpha search) passes a new float each call: Dynamo makes it a
    symbolic float after the first change, and the argument checks must still trace."""
    import fastseg.reference as R

    z, t = inputs()
    z = z[:, :1]
    compiled = torch.compile(lambda z, t, m: FS.hybrid_focal_margin(z, t, m=m, backend="torch"), backend="aot_eager",
                             fullgraph=True)
    for m in (0.5, 0.9, 1.3):
        torch.testing.assert_close(compiled(z, t, m), R.hybrid_focal_margin(z, t, m=m))
    # the check still runs (fullgraph=True turns the ValueError into Dynamo's Unsupported, same message)
    with pytest.raises((ValueError, torch._dynamo.exc.Unsupported), match="m must be >= 0.0; got -1.0"):
        compiled(z, t, -1.0)


@pytest.mark.parametrize(
    "name, param, values",
    [
        ("hybrid_focal_margin", "m", (0.5, 0.9, 1.3, 0.7, 1.1)),  # a kernel parameter
        ("dibe", "alpha", (0.3, 0.45, 0.6, 0.2, 0.5)),  # kernel parameter and epilogue factor
        ("unified_focal", "gamma", (0.5, 0.4, 0.3, 0.6)),  # an exponent in the epilogue
        ("hausdorff_dt", "alpha", (1.5, 2.5, 3.0)),  # an exponent of the distance maps
        ("adaptive_wce", "a", (10.0, 8.0, 12.0)),  # a base: a ** tensor (math.log of a symbolic float raised)
    ],
)
def test_a_hyperparameter_schedule_compiles_two_graphs_not_one_per_value(name, param, values):
    """Dynamo specializes the first value, then makes the float symbolic; the fused op takes it as
    a tensor input, so every later value reuses the second graph (a new value of a float argument
    of a torch.library op would be specialized: one graph per value, eager past the recompile limit)."""
    import torch._dynamo.testing

    import fastseg.reference as R

    z, t = inputs()
    z = z[:, :1]
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(lambda z, t, v: getattr(FS, name)(z, t, backend="torch", **{param: v}), backend=counter,
                             fullgraph=True)
    for v in values:
        x = z.clone().requires_grad_()
        loss = compiled(x, t, v)
        loss.backward()
        xr = z.double().requires_grad_()
        ref = getattr(R, name)(xr, t, **{param: v})
        ref.backward()
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(x.grad.double(), xr.grad, rtol=0, atol=1e-5 * xr.grad.abs().max().item())
    assert counter.frame_count == 2, f"{counter.frame_count} graphs for {len(values)} values of {param}"


def test_distance_map_op_fake_and_schema():
    from fastseg.edt import _distance_map_op

    fg = torch.rand(3, 9, 7) < 0.2
    for mode in ("foreground", "background", "field"):
        args = (fg, mode, [1.0, 1.0], False, torch.float32, "auto")
        torch.library.opcheck(_distance_map_op, args, test_utils=("test_schema", "test_faketensor"))


# --------------------------------------------------------------------------------------------
# backend="auto" inside torch.compile on CPU: the Inductor backend
# --------------------------------------------------------------------------------------------


def _fused_sums_backends(fn, *args) -> list[str]:
    """The ``backend`` argument of every ``fastseg::fused_sums`` call in Dynamo's graph of ``fn``."""
    seen = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function" and "fused_sums" in str(node.target):
                seen.append(node.args[7] if len(node.args) > 7 else node.kwargs["backend"])
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return seen


def test_auto_inside_torch_compile_runs_the_inductor_backend_on_cpu(monkeypatch):
    """Chunked eager code inside a compiled graph would be 2-3x slower than compiling the reference:
    small logits get the Inductor formulas traced into the caller's graph (no op), larger ones the
    op that runs the separately compiled passes, and without a C++ compiler the torch path."""
    from fastseg.engine import function, inductor_path

    z, t = inputs()
    z = z[:, :1]
    traced = []
    real = inductor_path.traced_forward
    monkeypatch.setattr(inductor_path, "traced_forward", lambda *a, **k: traced.append(1) or real(*a, **k))
    assert _fused_sums_backends(lambda z, t: FS.dice(z, t), z, t) == [] and traced
    monkeypatch.setattr(function, "TRACED_MAX_ELEMENTS", z.numel() - 1)
    traced.clear()
    assert _fused_sums_backends(lambda z, t: FS.dice(z, t), z, t) == ["inductor"] and not traced
    assert _fused_sums_backends(lambda z, t: FS.dice(z, t, backend="torch"), z, t) == ["torch"]
    monkeypatch.setattr(inductor_path, "_COMPILER_AVAILABLE", False)
    assert _fused_sums_backends(lambda z, t: FS.dice(z, t), z, t) == ["torch"]


def test_auto_in_torch_export_keeps_the_torch_path():
    """An exported program runs where no compiler may be: its fused op must not need Inductor."""

    class Loss(torch.nn.Module):
        def forward(self, z, t):
            return FS.dice(z, t)

    z, t = inputs()
    exported = torch.export.export(Loss(), (z[:, :1], t))
    backends = [n.args[7] for n in exported.graph.nodes if "fused_sums" in str(n.target)]
    assert backends == ["torch"]
    torch.testing.assert_close(exported.module()(z[:, :1], t), FS.dice(z[:, :1], t))


@pytest.mark.slow
@pytest.mark.parametrize("traced", [True, False], ids=["traced", "op"])
@pytest.mark.parametrize("name", ["hybrid_focal_margin", "dibe", "distance_loss"])
def test_compiled_training_step_with_the_default_backend_follows_the_reference(name, traced, monkeypatch):
    """torch.compile (Inductor) of model + loss, backend="auto", with the loss's formulas traced
    into the step's graph or behind the op: parameter gradients vs the float64 reference loss on
    the same model."""
    import fastseg.reference as R
    from fastseg.engine import function

    if not traced:
        monkeypatch.setattr(function, "TRACED_MAX_ELEMENTS", 0)
    model = tiny_model()
    x, t = inputs()
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, t: getattr(FS, name)(model(x), t), fullgraph=True)
    loss_c, grads_c = grads(model, compiled, x, t)
    model64 = tiny_model().double()
    loss_r, grads_r = grads(model64, lambda x, t: getattr(R, name)(model64(x), t), x.double(), t)
    torch.testing.assert_close(loss_c.double(), loss_r, rtol=2e-6, atol=1e-7)
    for a, b in zip(grads_c, grads_r):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6 * b.abs().max().item())


def test_a_margin_schedule_inside_torch_compile_compiles_the_caller_twice_and_the_passes_once():
    """The caller's graph compiles for the first value and once more with the value symbolic; the
    Inductor passes the fused op runs take the values as an input and were compiled by an eager
    call already (the same dispatch state either way): nothing else compiles."""
    import fastseg.reference as R
    from torch._dynamo.utils import counters

    z, t = inputs()
    z = z[:, :1]
    torch._dynamo.reset()
    FS.hybrid_focal_margin(z.clone().requires_grad_(), t, m=0.2, backend="inductor").backward()
    graphs = counters["stats"]["unique_graphs"]
    compiled = torch.compile(lambda z, t, m: FS.hybrid_focal_margin(z, t, m=m), backend="aot_eager", fullgraph=True)
    for m in (0.5, 0.9, 1.3, 0.7, 1.1):
        x = z.clone().requires_grad_()
        loss = compiled(x, t, m)
        loss.backward()
        xr = z.double().requires_grad_()
        ref = R.hybrid_focal_margin(xr, t, m=m)
        ref.backward()
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(x.grad.double(), xr.grad, rtol=0, atol=1e-5 * xr.grad.abs().max().item())
    assert counters["stats"]["unique_graphs"] - graphs == 2
