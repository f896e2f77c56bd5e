"""The fused losses through the Triton kernels (backend="triton") against the reference.

On a machine without CUDA the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set in
conftest.py), so sizes stay tiny; with CUDA the same cases run on the GPU. The reference is the
independent oracle; tolerances are those of tests/test_functional.py (float64: 1e-10 relative;
float32 logits vs the float64 reference: value 2e-5, gradient 2e-4 of its largest entry).
"""

from __future__ import annotations

import inspect
import os

import pytest
import torch
from conftest import OpNames
from test_functional import PARAMS, compare, targets

import fastseg.functional as FS
import fastseg.reference as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LOSSES = [name for name in FS.__all__ if name not in R.distance.__all__]


def _takes(name: str, arg: str) -> bool:
    return arg in inspect.signature(getattr(R, name)).parameters


def _inputs(shape, kind, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    return z.to(DEVICE), targets(shape, kind, gen).to(DEVICE)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_float64_matches_reference(name):
    z, t = _inputs((2, 1, 5, 7), "hard")
    compare(name, z, t, backend="triton", **PARAMS.get(name, {}))


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_float32_soft_labels_and_ignore(name):
    shape = (2, 2, 3, 4, 5)  # 3-D, two channels
    z, t = _inputs(shape, "soft", seed=1)
    ignore = (torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.25).to(DEVICE)
    ignore[1, 1] = True  # one fully ignored image-channel
    kw = dict(PARAMS.get(name, {}), ignore=ignore)
    if _takes(name, "scope"):
        kw["scope"] = "batch"
    compare(name, z, t, backend="triton", dtype=torch.float32, rtol=2e-5, grad_rtol=2e-4, **kw)


@pytest.mark.parametrize("kind", ["crack_free", "all_crack"])
@pytest.mark.parametrize("name", ["hybrid_focal_margin", "unified_focal", "dibe", "dice", "focal_tversky", "exp_log"])
def test_crack_free_all_crack_and_extreme_logits(name, kind):
    z, t = _inputs((2, 1, 3, 517), kind, seed=3)
    z = z.sign() * 80  # |z| = 80: sigmoid saturates in float32
    compare(name, z, t, backend="triton", dtype=torch.float32, rtol=2e-5, grad_rtol=2e-4, **PARAMS.get(name, {}))


@pytest.mark.parametrize("name", ["bce", "focal", "asymmetric_focal_margin", "dibe_dis", "adaptive_wce"])
def test_pointwise_reduction_none_and_weight(name):
    shape = (2, 1, 6, 9)
    z, t = _inputs(shape, "hard", seed=4)
    weight = torch.rand(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(DEVICE)
    compare(name, z, t, backend="triton", reduction="none", weight=weight, **PARAMS.get(name, {}))


def test_one_pixel_images():
    z, t = _inputs((3, 1, 1, 1), "hard", seed=6)
    for name in ("dice", "hybrid_focal_margin", "bce"):
        compare(name, z, t, backend="triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_match_the_float32_reference(dtype):
    z, t = _inputs((2, 1, 4, 33), "hard", seed=7)
    z = z.to(dtype).double()  # the same (rounded) logits for both
    ulp = 2e-3 if dtype == torch.float16 else 1.6e-2
    compare("hybrid_focal_margin", z, t, backend="triton", dtype=dtype, ref_dtype=torch.float32, rtol=1e-5, grad_rtol=ulp)


def test_deterministic_mode_is_bitwise_repeatable():
    z, t = _inputs((2, 1, 40, 60), "hard", seed=8)  # several tiles per image
    runs = []
    for _ in range(2):
        x = z.float().detach().requires_grad_()
        loss = FS.unified_focal(x, t, backend="triton")
        loss.backward()
        runs.append((loss.detach(), x.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_double_backward_raises():
    z, t = _inputs((1, 1, 4, 4), "hard", seed=9)
    x = z.detach().requires_grad_()
    (g,) = torch.autograd.grad(FS.dice(x, t, backend="triton"), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_backend_triton_runs_the_kernels(monkeypatch):
    import fastseg.kernels.fused_loss as kernels

    calls = []
    for launcher in ("fused_loss_forward", "fused_loss_backward"):
        real = getattr(kernels, launcher)
        monkeypatch.setattr(kernels, launcher, lambda *a, _real=real, _n=launcher, **k: calls.append(_n) or _real(*a, **k))
    z, t = _inputs((1, 1, 4, 4), "hard", seed=10)
    x = z.detach().requires_grad_()
    FS.hybrid_focal_margin(x, t, backend="triton").backward()
    assert calls == ["fused_loss_forward", "fused_loss_backward"]


def test_backend_triton_goes_through_the_op_pair_of_this_machine():
    """CUDA machines (and tests/test_triton_ops.py's re-run of this file) register the
    ``triton_op`` pair, which torch.compile traces into; elsewhere the opaque ``custom_op`` pair
    runs the same kernels."""
    z, t = _inputs((1, 1, 4, 4), "hard", seed=10)
    x = z.detach().requires_grad_()
    with OpNames() as seen:
        FS.dice(x, t, backend="triton").backward()
    cuda_ops = torch.cuda.is_available() and hasattr(torch.library, "triton_op")  # torch >= 2.6
    triton_ops = cuda_ops or os.environ.get("FASTSEG_TEST_TRITON_OPS") == "1"
    pair = ("fused_sums_triton", "fused_grad_triton") if triton_ops else ("fused_sums", "fused_grad")
    assert {name for name in seen.names if name.startswith("fastseg.")} == {f"fastseg.{op}.default" for op in pair}


# ------------------------------------------------------------------ CUDA only: graphs and compile
from conftest import requires_cuda, requires_two_gpus  # noqa: E402


def _captured_step(loss_fn, x):
    """``loss_fn(x)`` and its backward captured in one CUDA graph (after a warm-up that compiles
    the kernels on a side stream) and replayed once: ``(loss, x.grad)``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (kernel compilation) outside the capture
        for _ in range(2):
            x.grad = None
            loss_fn(x).backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        loss = loss_fn(x)
        loss.backward()
    graph.replay()
    torch.cuda.synchronize()
    return loss, x.grad


@requires_cuda
@pytest.mark.parametrize("name", ["hybrid_focal_margin", "unified_focal", "dice", "hausdorff_dt"])
def test_cuda_graph_capture_of_forward_and_backward(name):
    z, t = _inputs((2, 1, 64, 96), "hard", seed=11)
    x = z.float().detach().requires_grad_()
    loss, grad = _captured_step(lambda v: getattr(FS, name)(v, t), x)
    xr = z.detach().requires_grad_()
    ref = getattr(R, name)(xr, t)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), xr.grad, rtol=0, atol=2e-4 * xr.grad.abs().max().item())


@requires_cuda
def test_cuda_graph_capture_with_a_precomputed_distance():
    # distance= is value-checked in eager mode; that check reads the map back to the host, which a
    # capture forbids, so it is skipped there. The map: SciPy's two-sided boundary field.
    import numpy as np
    import scipy.ndimage as ndi

    z, t = _inputs((2, 1, 64, 96), "hard", seed=13)
    masks = t.cpu().numpy()
    field = np.stack([[ndi.distance_transform_edt(m) + ndi.distance_transform_edt(~m) for m in img] for img in masks])
    field = torch.from_numpy(field).to(DEVICE)
    field32 = field.float()
    x = z.float().detach().requires_grad_()
    loss, grad = _captured_step(lambda v: FS.hausdorff_dt(v, t, distance=field32), x)
    xr = z.detach().requires_grad_()
    ref = R.hausdorff_dt(xr, t, distance=field)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), xr.grad, rtol=0, atol=2e-4 * xr.grad.abs().max().item())


@requires_cuda
def test_cuda_torch_compile_fullgraph_traces_the_triton_ops(monkeypatch):
    # cuDNN may run the convolution in TF32 (its default), and eager and Inductor may pick
    # different algorithms for it: full fp32 keeps the comparison about the loss.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1).cuda()
    images, t = _inputs((2, 1, 32, 48), "hard", seed=12)
    images = images.float()

    def step(x):
        return FS.hybrid_focal_margin(model(x), t)

    eager = step(images)
    (g_eager,) = torch.autograd.grad(eager, model.weight)
    compiled = torch.compile(step, fullgraph=True)
    out = compiled(images)
    (g_compiled,) = torch.autograd.grad(out, model.weight)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-4, atol=1e-6)


@requires_cuda
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_cuda_compiled_margin_schedule_under_cuda_graphs_follows_the_reference(backend):
    """A margin that changes between calls of a step compiled with mode="reduce-overhead" (CUDA
    graphs): every value reaches the kernels, none is replayed from an earlier recording."""
    z, t = _inputs((2, 1, 32, 48), "hard", seed=14)
    torch._dynamo.reset()
    step = torch.compile(lambda x, m: FS.hybrid_focal_margin(x, t, m=m, backend=backend), mode="reduce-overhead")
    for m in (0.5, 0.9, 0.5, 1.3, 0.9):
        for _ in range(3):  # CUDA-graph trees record on a later call than the first
            x = z.float().detach().requires_grad_()
            loss = step(x, m)
            loss.backward()
        xr = z.detach().requires_grad_()
        ref = R.hybrid_focal_margin(xr, t, m=m)
        ref.backward()
        torch.testing.assert_close(loss.detach().double(), ref.detach(), rtol=2e-5, atol=1e-7)
        torch.testing.assert_close(x.grad.double(), xr.grad, rtol=0, atol=2e-4 * xr.grad.abs().max().item())


@requires_two_gpus
@pytest.mark.parametrize("name", ["hybrid_focal_margin", "dice", "hausdorff_dt"])
def test_tensors_on_a_gpu_that_is_not_current(name):
    """Triton launches on the current device: a batch on cuda:1 while cuda:0 is current must still
    be read by kernels on cuda:1 (the fused pass, its backward and the EDT of hausdorff_dt)."""
    z, t = _inputs((2, 1, 40, 56), "hard", seed=17)
    torch.cuda.set_device(0)
    x = z.float().to("cuda:1").requires_grad_()
    loss = getattr(FS, name)(x, t.to("cuda:1"))
    loss.backward()
    assert loss.device == x.grad.device == torch.device("cuda:1")
    xr = z.detach().cpu().requires_grad_()
    ref = getattr(R, name)(xr, t.cpu())
    ref.backward()
    torch.testing.assert_close(loss.double().cpu(), ref.detach(), rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(x.grad.double().cpu(), xr.grad, rtol=0, atol=2e-4 * xr.grad.abs().max().item())
