"""The fused-loss Triton kernels (``fastseg.kernels.fused_loss``) against an independent float64 oracle.

Without CUDA the kernels run under ``TRITON_INTERPRET=1`` (set by conftest); with CUDA they run on
the device. The oracle below is written from the table of ``fastseg/engine/spec.py`` with plain
torch float64 ops (``logsigmoid``, ``sigmoid(-z)``, ``**``), and its derivatives come from
autograd of that formula, never from the kernels' closed forms. Shapes stay tiny: a few hundred
interpreted programs at most.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.engine.kernel_params import KernelParams, kernel_forms, parameter_values
from fastseg.engine.spec import NUM_QUANTITIES, Quantity as Q, TermParams
from fastseg.kernels import fused_loss
from fastseg.kernels.fused_loss import backward_constexprs, forward_constexprs, fused_loss_backward, fused_loss_forward

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL = tuple(range(NUM_QUANTITIES))
RICH = TermParams(g_fg=2.0, m=0.5, g_bg=2.0, gce=0.5, dibe_g=2.0, dibe_alpha=0.3, dibe_beta=0.7)
ODD = TermParams(g_fg=0.5, m=1.0, g_bg=1.5, gce=1.5, dibe_g=0.75, dibe_alpha=0.6, dibe_beta=0.2)


# ------------------------------------------------------------------ float64 oracle


def oracle_pixels(z, t, params, *, weight=None, distance=None):
    """Per-pixel ``s_k`` in float64 as ``[K_all, B, C, N]`` (unmasked), straight from the spec table."""
    t = t.double()
    w = torch.ones_like(z) if weight is None else weight.double()
    d = torch.zeros_like(z) if distance is None else distance.double()
    p, q = torch.sigmoid(z), torch.sigmoid(-z)
    nlp, nlq = -F.logsigmoid(z), -F.logsigmoid(-z)
    nlpm = -F.logsigmoid(z - params.m)
    yhat = (p >= 0.5).detach()
    g, a, b = params.dibe_g, params.dibe_alpha, params.dibe_beta
    # the branch a pixel does not take is evaluated at a harmless base (0 ** 0.75 would give a NaN
    # gradient through torch.where at |z| = 80, where p rounds to 1 in float64)
    u = torch.where(yhat, 0.5, 1 - p ** (1 + a))
    v = torch.where(~yhat, 0.5, 1 - q ** (1 + b))
    dibe_fg = torch.where(yhat, q**g * nlp, u**g * (1 + a) * nlp)
    dibe_bg = torch.where(~yhat, p**g * nlq, v**g * (1 + b) * nlq)
    s = {
        Q.TP: p * t,
        Q.SUM_P: p,
        Q.SUM_T: t + 0 * z,
        Q.SUM_PP: p**2,
        Q.SUM_TT: t**2 + 0 * z,
        Q.COUNT: torch.ones_like(z) + 0 * z,
        Q.FG_CE: w * t * q**params.g_fg * nlpm,
        Q.BG_CE: w * (1 - t) * p**params.g_bg * nlq,
        Q.EL_FG: w * t * nlp**params.gce,
        Q.EL_BG: w * (1 - t) * nlq**params.gce,
        Q.DIBE_FG: w * t * dibe_fg,
        Q.DIBE_BG: w * (1 - t) * dibe_bg,
        Q.SS_FG: (t - p) ** 2 * t,
        Q.SS_BG: (t - p) ** 2 * (1 - t),
        Q.D_FP: d * p * (1 - t),
        Q.D_SQERR: d * (p - t) ** 2,
        Q.FP: p * (1 - t),
        Q.FN: q * t,
        Q.TN: q * (1 - t),
    }
    return [s[Q(k)] for k in range(NUM_QUANTITIES)]


def oracle(z, t, coeffs, quantities, params, *, valid=None, weight=None, distance=None):
    """``(S [G, K], dL/dz [B, C, N])`` in float64 with ``L = sum(coeffs * S)``."""
    z64 = z.detach().double().requires_grad_(True)
    B, C, N = z.shape
    pix = oracle_pixels(z64, t.expand(B, C, N), params, weight=weight, distance=distance)
    cols = []
    for k in quantities:
        s = pix[k]
        if valid is not None:
            s = torch.where(valid.expand(B, C, N).bool(), s, torch.zeros((), dtype=s.dtype))
        cols.append(s.reshape(B * C, N).sum(1))
    S = torch.stack(cols, dim=1)
    (grad,) = torch.autograd.grad((S * coeffs.double()).sum(), z64, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(z64)
    return S.detach(), grad


def assert_close_scaled(actual, expected, rtol, name):
    """Elementwise ``|a - e| <= rtol * (|e| + max|e|)``: a relative error that tolerates sums near 0."""
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert torch.isfinite(actual).all(), f"{name}: non-finite values at {torch.nonzero(~torch.isfinite(actual))[:5].tolist()}"
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30), msg=lambda m: f"{name}: {m}")


def make_inputs(shape, *, target="bool", logit_scale=4.0, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(shape, generator=gen, dtype=torch.float64) * logit_scale).to(dtype)
    u = torch.rand(shape, generator=gen)
    if target == "bool":
        t = u < 0.3
    elif target == "uint8":
        t = (u < 0.3).to(torch.uint8)
    elif target == "soft":
        t = u.float()
    elif target == "zeros":
        t = torch.zeros(shape, dtype=torch.uint8)
    elif target == "ones":
        t = torch.ones(shape, dtype=torch.uint8)
    else:
        raise AssertionError(target)
    return z.to(DEVICE), t.to(DEVICE)


def run_and_compare(z, t, quantities, params, *, rtol_fwd, rtol_bwd, valid=None, weight=None, distance=None, name=""):
    G = z.shape[0] * z.shape[1]
    coeffs = torch.randn(G, len(quantities), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    S_ref, g_ref = oracle(z.cpu(), t.cpu(), coeffs, quantities, params, valid=_cpu(valid), weight=_cpu(weight), distance=_cpu(distance))
    kw = dict(quantities=tuple(quantities), params=params, valid=valid, weight=weight, distance=distance)
    S = fused_loss_forward(z, t, **kw)
    assert S.shape == (G, len(quantities))
    assert S.dtype == (torch.float64 if z.dtype == torch.float64 else torch.float32)
    assert_close_scaled(S, S_ref, rtol_fwd, f"{name} forward")
    grad = fused_loss_backward(z, t, coeffs.to(device=z.device, dtype=S.dtype), **kw)
    assert grad.shape == z.shape and grad.dtype == z.dtype
    assert_close_scaled(grad, g_ref, rtol_bwd, f"{name} backward")
    return S, grad


def _cpu(x):
    return None if x is None else x.cpu()


# ------------------------------------------------------------------ every quantity, one at a time


@pytest.mark.parametrize("params", [TermParams(), RICH, ODD], ids=["default", "rich", "odd"])
@pytest.mark.parametrize("k", ALL, ids=[q.name for q in Q])
def test_each_quantity_alone(k, params):
    z, t = make_inputs((2, 3, 37), target="soft", seed=k)
    distance = torch.rand(2, 3, 37, generator=torch.Generator().manual_seed(5)).to(DEVICE) * 3
    run_and_compare(z, t, (k,), params, rtol_fwd=2e-5, rtol_bwd=2e-5, distance=distance, name=Q(k).name)


# ------------------------------------------------------------------ all quantities together


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (1, 1, 3 * 517), (2, 3, 37), (3, 1, 5)],
    ids=["1x1", "3x517", "2x3x37", "3x1x5"],
)
@pytest.mark.parametrize("target", ["bool", "uint8", "soft", "zeros", "ones"])
def test_all_quantities_shapes_targets(shape, target):
    z, t = make_inputs(shape, target=target)
    distance = torch.rand(shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    run_and_compare(z, t, ALL, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, distance=distance, name=f"{shape} {target}")


def test_float64_logits_are_computed_in_float64():
    z, t = make_inputs((2, 3, 37), target="soft", dtype=torch.float64)
    distance = torch.rand(2, 3, 37, dtype=torch.float64).to(DEVICE)
    run_and_compare(z, t, ALL, RICH, rtol_fwd=1e-11, rtol_bwd=1e-11, distance=distance, name="fp64")


@pytest.mark.parametrize(
    "dtype, rtol_bwd", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)], ids=["fp16", "bf16"]
)
def test_half_logits(dtype, rtol_bwd):
    # The oracle sees the same rounded logits; sums accumulate in fp32, the gradient is stored in z's dtype.
    z, t = make_inputs((2, 3, 37), target="uint8", dtype=dtype)
    distance = torch.rand(2, 3, 37).to(DEVICE)
    S, grad = run_and_compare(z, t, ALL, RICH, rtol_fwd=2e-5, rtol_bwd=rtol_bwd, distance=distance, name=str(dtype))
    assert S.dtype == torch.float32


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2),
    C=st.integers(1, 3),
    N=st.integers(1, 70),
    quantities=st.lists(st.sampled_from(ALL), min_size=1, max_size=6, unique=True),
    g=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]),
    m=st.sampled_from([0.0, 0.5, 1.5]),
    gce=st.sampled_from([0.3, 1.0, 2.0]),
    alpha=st.sampled_from([0.0, 0.3, 0.7]),
    target=st.sampled_from(["bool", "uint8", "soft"]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_sweep(B, C, N, quantities, g, m, gce, alpha, target, masked, seed):
    params = TermParams(g_fg=g, m=m, g_bg=g, gce=gce, dibe_g=g, dibe_alpha=alpha, dibe_beta=1 - alpha)
    z, t = make_inputs((B, C, N), target=target, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    valid = (torch.rand(B, C, N, generator=gen) > 0.25).to(DEVICE) if masked else None
    weight = (torch.rand(B, C, N, generator=gen) + 0.5).to(DEVICE) if masked else None
    distance = torch.rand(B, C, N, generator=gen).to(DEVICE)
    run_and_compare(
        z, t, tuple(quantities), params, rtol_fwd=2e-5, rtol_bwd=5e-5, valid=valid, weight=weight, distance=distance
    )


# ------------------------------------------------------------------ masks, weights, layouts


def test_valid_mask_weight_and_distance():
    shape = (2, 3, 37)
    z, t = make_inputs(shape, target="soft")
    gen = torch.Generator().manual_seed(3)
    valid = (torch.rand(shape, generator=gen) > 0.3).to(DEVICE)
    valid[1, 2] = False  # a fully ignored group: zero sums, zero gradient
    weight = (torch.rand(shape, generator=gen) * 2).to(DEVICE)
    distance = torch.rand(shape, generator=gen).to(DEVICE)
    z[~valid] = float("nan")  # ignored pixels must not leak, whatever they hold
    S, grad = run_and_compare(
        z.nan_to_num(0.0), t, ALL, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, valid=valid, weight=weight, distance=distance
    )
    S_nan = fused_loss_forward(z, t, quantities=ALL, params=RICH, valid=valid, weight=weight, distance=distance)
    torch.testing.assert_close(S_nan, S, rtol=0, atol=0)
    assert (S[1 * 3 + 2] == 0).all()
    assert (grad[1, 2] == 0).all()
    assert (grad[~valid] == 0).all()


def test_uint8_valid_and_broadcast_operands():
    # t, valid and weight given as [B, 1, N] broadcast over C (stride 0, no copy).
    B, C, N = 2, 3, 29
    z, _ = make_inputs((B, C, N))
    t = (torch.rand(B, 1, N) < 0.4).to(DEVICE)
    valid = (torch.rand(B, 1, N) > 0.2).to(torch.uint8).to(DEVICE)
    weight = torch.rand(B, 1, N).to(DEVICE) + 0.5
    run_and_compare(z, t, ALL[:14], RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, valid=valid, weight=weight, name="broadcast")


@pytest.mark.parametrize("layout", ["channel_slice", "inner_slice", "transposed", "expanded_z"])
def test_strided_logits(layout):
    B, C, N = 2, 3, 41
    base = torch.randn(B, 2 * C, N + 7, dtype=torch.float64).mul(4).float().to(DEVICE)
    if layout == "channel_slice":
        z = base[:, ::2, :N]
    elif layout == "inner_slice":
        z = base[:, :C, 3 : 3 + N]
    elif layout == "transposed":  # inner dim not unit-stride: the launcher copies
        z = base[:, :C, :N].transpose(1, 2).contiguous().transpose(1, 2)
    else:  # one image broadcast over the batch (stride 0 on B)
        z = base[:1, :C, :N].expand(B, C, N)
    assert layout == "transposed" or z.stride(-1) == 1
    t = (torch.rand(B, C, N) < 0.3).to(DEVICE)
    run_and_compare(z, t, (Q.TP, Q.SUM_P, Q.SUM_T, Q.FG_CE, Q.BG_CE, Q.COUNT), RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, name=layout)


def test_strided_coefficients():
    z, t = make_inputs((2, 3, 37))
    quantities = (Q.TP, Q.SUM_P, Q.DIBE_FG)
    wide = torch.randn(3, 6, dtype=torch.float32)  # [K, G] storage, read as [G, K] through strides
    coeffs = wide.t().to(DEVICE)
    assert not coeffs.is_contiguous()
    _, g_ref = oracle(z.cpu(), t.cpu(), coeffs.cpu(), quantities, RICH)
    grad = fused_loss_backward(z, t, coeffs, quantities=quantities, params=RICH)
    assert_close_scaled(grad, g_ref, 2e-5, "strided coeffs")


def test_quantity_order_and_repeats():
    z, t = make_inputs((2, 3, 37), target="soft")
    quantities = (Q.SUM_T, Q.FG_CE, Q.TP, Q.SUM_T, Q.TP)
    run_and_compare(z, t, quantities, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, name="repeats")


# ------------------------------------------------------------------ numerics at the edges


@pytest.mark.parametrize("params", [RICH, ODD], ids=["rich", "odd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_extreme_logits_are_finite_and_exact(params, dtype):
    # |z| = 80: p rounds to 0 or 1, yet every sum and derivative stays finite and matches float64
    # (the softplus and sigmoid(-z) forms keep e^-80 alive).
    z = torch.tensor([80.0, -80.0, 80.0, -80.0, 0.0, 30.0, -30.0, 17.0]).repeat(2).view(1, 2, 8).to(dtype).to(DEVICE)
    t = torch.tensor([1, 1, 0, 0, 1, 0, 1, 1] * 2, dtype=torch.uint8).view(1, 2, 8).to(DEVICE)
    distance = torch.full((1, 2, 8), 0.5).to(DEVICE)
    S, grad = run_and_compare(z, t, ALL, params, rtol_fwd=2e-5, rtol_bwd=2e-3, distance=distance, name="extreme")
    assert torch.isfinite(S).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("gce", [0.1, 0.5, 1.7])
def test_el_powers_of_pixels_beyond_float32_underflow(gce):
    """At |z| > 87 ``-log p`` underflows float32 (``e^-|z|`` is below its smallest normal number)
    while ``(-log p)^gce = e^(-gce |z|)`` is still 1e-5 for gce = 0.1 at |z| = 110: the kernels take
    ``log(-log p)`` as ``-|z|`` there (they gave 0, and the torch path ``tiny^gce``, 2e-4), and the
    derivative ``gce (-log p)^gce (q / -log p)`` with the ratio 1 (it gave 0)."""
    z = torch.tensor([[[100.0, 110.0, -100.0, -110.0, 88.0, 95.0, -104.0, 3.0]]])
    t = torch.tensor([[[1, 1, 0, 0, 1, 1, 0, 1]]], dtype=torch.uint8)
    params = TermParams(gce=gce)
    coeffs = torch.tensor([[1.0, 0.5]])
    quantities = (Q.EL_FG, Q.EL_BG)
    S = fused_loss_forward(z.to(DEVICE), t.to(DEVICE), quantities=quantities, params=params)
    grad = fused_loss_backward(z.to(DEVICE), t.to(DEVICE), coeffs.to(DEVICE), quantities=quantities, params=params)
    S_ref, g_ref = oracle(z.double(), t, coeffs.double(), quantities, params)
    # atol: float32's subnormal range (e^(-1.7 * 100) rounds to 0)
    torch.testing.assert_close(S.double().cpu(), S_ref, rtol=1e-5, atol=1e-40)
    torch.testing.assert_close(grad.double().cpu(), g_ref, rtol=1e-4, atol=1e-40)


def test_confident_pixels_keep_tiny_losses():
    # -log p at z = 20 is ~2e-9: log(1 + e) would round it to 0 in fp32, and EL's (-log p)^(gce - 1)
    # derivative would explode. The accurate log1p keeps the value and the small gradient.
    z = torch.tensor([[[20.0, 40.0, -20.0, -40.0]]]).to(DEVICE)
    t = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.uint8).to(DEVICE)
    params = TermParams(gce=0.3)
    coeffs = torch.ones(1, 2)
    S = fused_loss_forward(z, t, quantities=(Q.EL_FG, Q.EL_BG), params=params)
    grad = fused_loss_backward(z, t, coeffs.to(DEVICE), quantities=(Q.EL_FG, Q.EL_BG), params=params)
    S_ref, g_ref = oracle(z.cpu(), t.cpu(), coeffs, (Q.EL_FG, Q.EL_BG), params)
    torch.testing.assert_close(S.double().cpu(), S_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad.double().cpu(), g_ref, rtol=1e-4, atol=0)


# ------------------------------------------------------------------ tiles, reduction, determinism


def test_multi_tile_deterministic_and_atomic():
    # N = 5000 spans five 1024-lane tiles: per-tile partials plus the fixed-order reduction.
    z, t = make_inputs((1, 2, 5000), target="soft")
    quantities = (Q.TP, Q.SUM_P, Q.SUM_T, Q.COUNT, Q.FG_CE, Q.BG_CE)
    S, _ = run_and_compare(z, t, quantities, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, name="multi-tile")
    assert (S[:, 3] == 5000).all()
    S_atomic = fused_loss_forward(z, t, quantities=quantities, params=RICH, deterministic=False)
    torch.testing.assert_close(S_atomic, S, rtol=1e-5, atol=1e-4)


def test_deterministic_mode_is_bitwise_repeatable():
    z, t = make_inputs((2, 1, 4500), target="soft")
    kw = dict(quantities=ALL[:14], params=RICH)
    coeffs = torch.randn(2, 14).to(DEVICE)
    a = fused_loss_forward(z, t, **kw)
    b = fused_loss_forward(z, t, **kw)
    ga = fused_loss_backward(z, t, coeffs, **kw)
    gb = fused_loss_backward(z, t, coeffs, **kw)
    assert torch.equal(a, b) and torch.equal(ga, gb)


_INT64_SCRIPT = r"""
import json, sys, torch
from fastseg.engine.spec import Quantity as Q, TermParams
from fastseg.kernels import fused_loss
from fastseg.kernels.fused_loss import backward_constexprs, forward_constexprs, fused_loss_backward, fused_loss_forward
device = sys.argv[1]
values, t, coeffs = (torch.tensor(x) for x in json.loads(sys.stdin.read()))
try:
    storage = torch.empty(2**31 + 8, dtype=torch.float16, device=device)
except (RuntimeError, MemoryError):
    print("SKIP"); raise SystemExit(0)
z = storage.as_strided((3, 1, 4), (2**30, 4, 1))
z.copy_(values.to(device=device, dtype=torch.float16))
params = TermParams(g_fg=2.0, m=0.5, g_bg=2.0)
quantities = (Q.TP, Q.SUM_P, Q.FG_CE, Q.BG_CE)
t = t.to(device=device, dtype=torch.uint8)
S = fused_loss_forward(z, t, quantities=quantities, params=params)
grad = fused_loss_backward(z, t, coeffs.to(device=device, dtype=torch.float32), quantities=quantities, params=params)
print(json.dumps([S.double().cpu().tolist(), grad.double().cpu().tolist()]))
"""


def test_int64_offsets_with_a_huge_batch_stride():
    # Image b = 2 starts at element 2 * 2**30 = 2**31 of a (virtual, mostly untouched) 4 GiB
    # float16 storage: an int32 offset would wrap to a negative address. Run in a subprocess so a
    # regression fails this test instead of crashing the session with a bad memory access.
    import json
    import os
    import subprocess
    import sys

    values = torch.tensor([[[3.0, -2.0, 0.5, 7.0]], [[-1.0, 1.0, 2.0, -4.0]], [[6.0, -6.0, 0.25, -0.5]]])
    t = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 1, 1]], [[1, 1, 0, 0]]], dtype=torch.uint8)
    coeffs = torch.randn(3, 4)
    payload = json.dumps([values.tolist(), t.tolist(), coeffs.tolist()])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _INT64_SCRIPT, DEVICE], input=payload, capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, f"kernel run failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    if proc.stdout.strip() == "SKIP":
        pytest.skip("cannot reserve 4 GiB of (virtual) memory")
    S, grad = (torch.tensor(x, dtype=torch.float64) for x in json.loads(proc.stdout.strip().splitlines()[-1]))
    params = TermParams(g_fg=2.0, m=0.5, g_bg=2.0)
    S_ref, g_ref = oracle(values.half(), t, coeffs, (Q.TP, Q.SUM_P, Q.FG_CE, Q.BG_CE), params)
    assert_close_scaled(S, S_ref, 2e-5, "int64 forward")
    assert_close_scaled(grad, g_ref, 2e-3, "int64 backward")


# ------------------------------------------------------------------ interface


def test_empty_inputs():
    z = torch.zeros(1, 2, 0).to(DEVICE)
    t = torch.zeros(1, 2, 0, dtype=torch.uint8).to(DEVICE)
    S = fused_loss_forward(z, t, quantities=(Q.TP, Q.COUNT), params=TermParams())
    assert S.shape == (2, 2) and (S == 0).all()
    grad = fused_loss_backward(z, t, torch.ones(2, 2).to(DEVICE), quantities=(Q.TP, Q.COUNT), params=TermParams())
    assert grad.shape == (1, 2, 0)
    S0 = fused_loss_forward(torch.zeros(0, 2, 5).to(DEVICE), torch.zeros(0, 2, 5).to(DEVICE), quantities=(Q.TP,), params=TermParams())
    assert S0.shape == (0, 1)


def test_launch_wrapper_is_used_for_every_kernel():
    z, t = make_inputs((1, 1, 5000))
    wrapped = []

    def wrapper(kernel):
        wrapped.append(kernel)
        return kernel

    fused_loss_forward(z, t, quantities=(Q.TP, Q.SUM_P), params=TermParams(), launch_wrapper=wrapper)
    fused_loss_backward(z, t, torch.ones(1, 2).to(DEVICE), quantities=(Q.TP, Q.SUM_P), params=TermParams(), launch_wrapper=wrapper)
    names = [getattr(k, "__name__", None) or k.fn.__name__ for k in wrapped]
    assert names == ["_fused_loss_forward_kernel", "_reduce_partials_kernel", "_fused_loss_backward_kernel"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(quantities=()), ValueError, "quantities"),
        (dict(quantities=(len(Q),)), ValueError, "quantities"),  # one past the last id
        (dict(quantities=(Q.D_FP,)), ValueError, "distance"),
        (dict(params=(0.0,)), TypeError, "params"),
        (dict(valid=torch.ones(2, 3, 5)), TypeError, "valid"),
        (dict(weight=torch.ones(2, 3, 4)), ValueError, "weight"),
        (dict(t=torch.ones(2, 3, 5, dtype=torch.int32)), TypeError, "t must be"),
        (dict(z=torch.ones(2, 3, 5, dtype=torch.int64)), TypeError, "z must be"),
        (dict(z=torch.ones(2, 15)), ValueError, "z must be"),
    ],
)
def test_argument_errors(kwargs, error, match):
    args = dict(z=torch.zeros(2, 3, 5), t=torch.zeros(2, 3, 5), quantities=(Q.TP,), params=TermParams())
    args.update(kwargs)
    z, t = args.pop("z"), args.pop("t")
    with pytest.raises(error, match=match):
        fused_loss_forward(z, t, **args)


def test_backward_coefficient_shape_error():
    z, t = torch.zeros(2, 3, 5), torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="coeffs"):
        fused_loss_backward(z, t, torch.zeros(6, 2), quantities=(Q.TP,), params=TermParams())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_more_than_2_31_pixels():
    N = 2**31 + 1000
    free, _ = torch.cuda.mem_get_info()
    if free < 5 * N + 2**30:  # the peak: uint8 targets, bf16 logits and their bf16 gradient
        pytest.skip("not enough device memory")
    t = torch.zeros(1, 1, N, dtype=torch.uint8, device="cuda")
    t[..., -1500:] = 1
    z = torch.zeros(1, 1, N, dtype=torch.bfloat16, device="cuda")  # p = 0.5 everywhere
    S = fused_loss_forward(z, t, quantities=(Q.SUM_T, Q.COUNT, Q.SUM_P), params=TermParams())
    assert S[0, 0].item() == 1500 and S[0, 1].item() == pytest.approx(N, rel=1e-6)
    assert S[0, 2].item() == pytest.approx(N / 2, rel=1e-6)
    del z
    zs = torch.full((1, 1, N), 2.0, dtype=torch.bfloat16, device="cuda")
    grad = fused_loss_backward(zs, t, torch.ones(1, 1, device="cuda"), quantities=(Q.SUM_P,), params=TermParams())
    p = torch.sigmoid(torch.tensor(2.0)).item()
    assert grad[0, 0, -1].float().item() == pytest.approx(p * (1 - p), rel=1e-2)
    assert grad[0, 0, 0].float().item() == pytest.approx(p * (1 - p), rel=1e-2)


# ------------------------------------------------------------------ parameters are runtime arguments

#: Each parameter of ODD moved to another value of the same form (no exponent becomes 0, 1 or 2).
ODD_MOVED = TermParams(g_fg=0.8, m=0.3, g_bg=2.5, gce=0.7, dibe_g=1.25, dibe_alpha=0.15, dibe_beta=0.45)


@pytest.mark.parametrize("per_element", [False, True], ids=["groups", "per-element"])
def test_a_new_parameter_value_needs_no_new_kernel(per_element):
    """A margin schedule or an alpha search changes values, not forms: the constexprs (the compile
    key, besides dtypes) stay the same, so every value runs the kernel compiled for the first."""
    kw = dict(fp64=False, has_valid=True, has_weight=True, has_dist=True, block=256, per_element=per_element)
    assert forward_constexprs(ALL, ODD, atomic=False, **kw) == forward_constexprs(ALL, ODD_MOVED, atomic=False, **kw)
    assert backward_constexprs(ALL, ODD, **kw) == backward_constexprs(ALL, ODD_MOVED, **kw)
    # exponents of 0, 1 and 2 are compiled in (a new form, one new kernel)
    squared = dataclasses.replace(ODD, g_bg=2.0)
    assert forward_constexprs(ALL, ODD, atomic=False, **kw) != forward_constexprs(ALL, squared, atomic=False, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parameter_values_reach_the_kernel_at_run_time(dtype):
    """Two parameter sets of one form through the same specialisation: each matches the oracle of
    its own values (a value baked in from the first call would fail the second)."""
    z, t = make_inputs((2, 1, 300), dtype=dtype, seed=5)
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    for params in (ODD, ODD_MOVED):
        run_and_compare(z, t, ALL, params, rtol_fwd=rtol, rtol_bwd=rtol, distance=torch.rand_like(z), name=str(params))


def test_parameter_values_are_the_fields_read_in_float64_and_the_rest_defaults():
    values = parameter_values(ALL, ODD, "cpu")
    assert values.dtype == torch.float64 and values.tolist() == list(dataclasses.astuple(ODD))
    default = dataclasses.astuple(TermParams())
    assert parameter_values((Q.TP, Q.COUNT), ODD, "cpu").tolist() == list(default)  # neither reads a parameter
    margin_only = parameter_values((Q.FG_CE,), ODD, "cpu").tolist()
    assert margin_only == [ODD.g_fg, ODD.m] + list(default[2:])


@pytest.mark.parametrize("x", [float("inf"), float("nan"), 1e39, -1e39])
def test_parameters_float32_cannot_carry_are_rejected(x):
    with pytest.raises(ValueError, match="finite float32 numbers; got m="):
        parameter_values(ALL, dataclasses.replace(ODD, m=x), "cpu")
    z, t = make_inputs((1, 1, 8))
    with pytest.raises(ValueError, match="finite float32"):
        fused_loss_forward(z, t, quantities=(Q.FG_CE,), params=dataclasses.replace(ODD, m=x))


def test_kernel_params_values_must_be_the_float64_array_on_the_logits_device():
    z, t = make_inputs((1, 1, 8))
    forms = kernel_forms(ALL, ODD)
    for bad in (torch.zeros(7, dtype=torch.float32), torch.zeros(6, dtype=torch.float64), [0.0] * 7):
        with pytest.raises(TypeError, match=r"KernelParams.values must be a float64 tensor of shape \(7,\)"):
            fused_loss_forward(z, t, quantities=ALL[:6], params=KernelParams(forms, bad))
    with pytest.raises(TypeError, match=r"params must be a fastseg.engine.spec.TermParams \(or KernelParams\); got dict"):
        fused_loss_forward(z, t, quantities=ALL[:6], params={"m": 0.5})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_a_margin_schedule_compiles_one_kernel():
    z, t = make_inputs((2, 1, 4096))
    kernel = fused_loss._fused_loss_forward_kernel
    cache = kernel.device_caches[torch.cuda.current_device()][0]
    for m in (0.25, 0.5, 0.75, 1.0):
        fused_loss_forward(z, t, quantities=(Q.FG_CE, Q.BG_CE, Q.COUNT), params=TermParams(m=m, g_bg=2.0))
        if m == 0.25:
            compiled = len(cache)
    assert len(cache) == compiled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_parameter_values_are_cached_on_the_device():
    """A training step copies nothing to the device: the array of a set of values is made once."""
    first = parameter_values(ALL, ODD, "cuda")
    assert first.is_cuda and first.tolist() == list(dataclasses.astuple(ODD))
    assert parameter_values(ALL, ODD, "cuda") is first
    assert parameter_values(ALL, ODD_MOVED, "cuda").tolist() == list(dataclasses.astuple(ODD_MOVED))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_parameter_values_are_cached_per_stream():
    """Each stream gets its own copy, enqueued on it: another stream could read one before it landed."""
    first = parameter_values(ALL, ODD, "cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        on_side = parameter_values(ALL, ODD, "cuda")
        assert parameter_values(ALL, ODD, "cuda") is on_side
    assert on_side is not first
    side.synchronize()
    assert on_side.tolist() == first.tolist() == list(dataclasses.astuple(ODD))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_of_new_parameter_values_replays_them():
    """Values first seen inside a stream capture are written by fill kernels the graph records."""
    z, t = make_inputs((2, 1, 4096))
    quantities = (Q.FG_CE, Q.BG_CE, Q.COUNT)
    params = TermParams(m=0.4321, g_bg=1.6789)  # new values; the kernel of their form is compiled below
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fused_loss_forward(z, t, quantities=quantities, params=TermParams(m=0.25, g_bg=1.5))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        S = fused_loss_forward(z, t, quantities=quantities, params=params)
    S.zero_()
    graph.replay()
    expected, _ = oracle(z.cpu(), t.cpu(), torch.ones(2, 3), quantities, params)
    assert_close_scaled(S, expected, 2e-5, "captured")


# ------------------------------------------------------------------ one group per element


@pytest.mark.parametrize("G", [2, 300, 2100], ids=["tiny", "one-tile", "multi-tile"])
def test_per_element_groups_read_each_pixel_as_its_own_group(G):
    """``[G, 1, 1]`` inputs (``reduction="none"``): one row of sums per element, per-element coefficients."""
    z, t = make_inputs((G, 1, 1), target="soft", seed=G)
    gen = torch.Generator().manual_seed(5)
    valid = (torch.rand((G, 1, 1), generator=gen) > 0.2).to(DEVICE)
    weight = (torch.rand((G, 1, 1), generator=gen) * 2).to(DEVICE)
    distance = torch.rand((G, 1, 1), generator=gen).to(DEVICE)
    S, grad = run_and_compare(
        z, t, ALL, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, valid=valid, weight=weight, distance=distance, name="per-element"
    )
    assert (S[~valid.view(-1)] == 0).all() and (grad[~valid] == 0).all()


def test_per_element_groups_with_several_channels():
    z, t = make_inputs((2, 3, 1), target="soft", seed=13)
    run_and_compare(z, t, ALL, RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, distance=torch.rand(2, 3, 1).to(DEVICE), name="B x C")


def test_per_element_groups_from_a_strided_view():
    base, t = make_inputs((40, 3, 1), target="bool", seed=9)
    z = base[:, 1:2]  # [40, 1, 1] with group stride 3: the row is not contiguous
    run_and_compare(z, t[:, 1:2], (Q.FG_CE, Q.BG_CE, Q.COUNT), RICH, rtol_fwd=2e-5, rtol_bwd=2e-5, name="strided")
