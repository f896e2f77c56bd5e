"""The Triton EDT kernel (interpreter on CPU, real kernel on CUDA) against SciPy, exactly."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import triton
import triton.language as tl
from conftest import TRITON_DEVICE, requires_cuda, requires_interpreter
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastseg.kernels.edt import _intersection, edt_squared, map_dtype

DEVICES = [pytest.param("cpu", marks=requires_interpreter), pytest.param("cuda", marks=requires_cuda)]


def scipy_squared_edt(masks: np.ndarray, spacing) -> np.ndarray:
    """Squared distance of every pixel to the nearest nonzero pixel of its image; inf if none."""
    out = []
    for mask in masks:
        if not mask.any():
            out.append(np.full(mask.shape, np.inf))
            continue
        dist, idx = ndi.distance_transform_edt(mask == 0, sampling=spacing, return_indices=True)
        # Squared distance from the nearest-pixel indices: exact, no sqrt round trip.
        grid = np.indices(mask.shape)
        out.append(sum(((grid[a] - idx[a]) * spacing[a]) ** 2 for a in range(mask.ndim)))
    return np.stack(out)


def assert_matches_scipy(masks: torch.Tensor, spacing, device):
    """Integer spacing: equal. Otherwise float64 maps holding SciPy's terms ``((x - v) s)^2``:
    equal in 2-D (the same two terms added), within an ulp of float64 in 3-D (added in another
    order), and equal once rounded to float32."""
    squares = edt_squared(masks.to(device), spacing)
    assert squares.dtype == map_dtype(tuple(masks.shape[1:]), spacing)
    got = squares.cpu().double().numpy()
    want = scipy_squared_edt(masks.numpy(), spacing)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    if all(float(s).is_integer() for s in spacing) or masks.ndim <= 3:
        assert np.array_equal(got[finite], want[finite]), np.abs(got - want)[finite].max()
    else:
        np.testing.assert_allclose(got[finite], want[finite], rtol=2.5e-16, atol=0)
    assert np.array_equal(got[finite].astype(np.float32), want[finite].astype(np.float32))


def _masks(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape",
    [(3, 17, 23), (2, 1, 19), (2, 19, 1), (1, 1, 1), (2, 6, 5, 7)],
    ids=["2d", "1xN", "Nx1", "1x1", "3d"],
)
def test_random_masks_equal_scipy(shape, device):
    assert_matches_scipy(_masks(shape, 0.1), (1.0,) * (len(shape) - 1), device)


@pytest.mark.parametrize("device", DEVICES)
def test_adversarial_masks_equal_scipy(device):
    h, w = 15, 21
    masks = torch.zeros(6, h, w, dtype=torch.bool)
    masks[1] = True  # full
    masks[2, 7, 10] = True  # single pixel in the middle
    masks[3, :, 0] = True  # vertical line on the border
    masks[4, 3, :] = True  # horizontal line
    masks[5, torch.arange(h), torch.arange(h)] = True  # diagonal
    assert_matches_scipy(masks, (1.0, 1.0), device)
    got = edt_squared(masks.to(device), (1.0, 1.0)).cpu()
    assert torch.isinf(got[0]).all(), "an image without target pixels is inf everywhere"


@pytest.mark.parametrize("device", DEVICES)
def test_lines_wider_than_one_sweep_tile_equal_scipy(device):
    """Rows wider than the sweep's tile: the nearest target is found across tile boundaries."""
    from fastseg.kernels.edt import sweep_blocks

    tile = sweep_blocks(10**6)[1]
    w = 2 * tile + 100
    masks = torch.zeros(2, 3, w, dtype=torch.bool)
    masks[0, 0, 5] = True  # only in the first tile: carried rightwards over two tiles
    masks[0, 1, w - 3] = True  # only in the last tile: carried leftwards
    masks[0, 2, [tile - 1, tile]] = True  # on both sides of a tile boundary
    masks[1, 1, tile + 7] = True  # a single pixel; the other rows reach it through the envelope
    assert_matches_scipy(masks, (1.0, 1.0), device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("density", [0.01, 0.3])
def test_lanes_at_different_envelope_depths_equal_scipy(density, device):
    """The envelope's lanes walk different lines in lockstep: sparse masks make some lanes pop
    deep while others push (their vertex stacks interleave in scratch), and 61 lines per image
    leave the last program of the strided pass with idle lanes."""
    assert_matches_scipy(_masks((3, 61, 47), density, seed=13), (1.0, 1.0), device)


@requires_cuda
@pytest.mark.parametrize("spacing, bytes_per_pixel", [((1.0, 1.0), 13), ((0.5, 0.3), 21)], ids=["float32", "float64"])
def test_cuda_edt_transient_memory(spacing, bytes_per_pixel):
    """Two maps (float32, or float64 with anisotropic spacing) and one int32 vertex buffer, plus the
    bool of the final inf fill."""
    masks = _masks((4, 512, 384), 0.01, seed=2).cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    edt_squared(masks, spacing)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra <= bytes_per_pixel * masks.numel() + 2**20, extra / masks.numel()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spacing", [(0.5, 2.0), (3.0, 1.0), (0.3, 1.7), (0.1, 0.1), (1.5, 0.7, 2.0), (0.1, 2.7, 0.3)])
def test_anisotropic_spacing_equals_scipy(spacing, device):
    shape = (2, 9, 11) if len(spacing) == 2 else (2, 5, 6, 7)
    assert_matches_scipy(_masks(shape, 0.08, seed=3), spacing, device)


@settings(max_examples=25, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 12))))
def test_hypothesis_masks_equal_scipy(masks):
    assert_matches_scipy(torch.from_numpy(masks), (1.0, 1.0), TRITON_DEVICE)


def test_uint8_and_float_masks_mean_nonzero():
    masks = _masks((2, 8, 9), 0.15, seed=5)
    want = torch.from_numpy(scipy_squared_edt(masks.numpy(), (1.0, 1.0))).float()
    for nonzero in (masks.to(torch.uint8) * 3, masks.float() * 0.5, masks.double() * -2.0):
        assert torch.equal(edt_squared(nonzero.to(TRITON_DEVICE), (1.0, 1.0)).cpu(), want)


def test_spacing_length_is_checked():
    with pytest.raises(ValueError, match="spacing"):
        edt_squared(torch.zeros(1, 4, 4, dtype=torch.bool), (1.0,))


@requires_cuda
def test_cuda_large_batch_equals_scipy():
    masks = _masks((4, 256, 320), 0.01, seed=7)
    assert_matches_scipy(masks, (1.0, 1.0), "cuda")


def test_map_dtype_is_float32_only_where_it_is_exact():
    """Hand values: float32 holds every integer below 2**24 = 16777216."""
    assert map_dtype((4096,), (1.0,)) == torch.float32  # 4095^2 = 16769025
    assert map_dtype((4097,), (1.0,)) == torch.float64  # 4096^2 = 2^24
    assert map_dtype((2897, 2897), (1.0, 1.0)) == torch.float32  # 2 * 2896^2 = 16773632
    assert map_dtype((2898, 2898), (1.0, 1.0)) == torch.float64  # 2 * 2897^2 = 16785218
    assert map_dtype((5, 5), (1.0, 0.5)) == torch.float64  # anisotropic: not integers


@pytest.mark.parametrize("device", DEVICES)
def test_lines_longer_than_4096_pixels_are_exact(device):
    """A 1 x 5000 line with one target pixel at its start: squared distances up to 4999^2, beyond
    float32's integers; the float64 maps give them exactly."""
    masks = torch.zeros(1, 1, 5000, dtype=torch.bool)
    masks[0, 0, 0] = True
    got = edt_squared(masks.to(device), (1.0, 1.0)).cpu()
    assert got.dtype == torch.float64
    assert torch.equal(got[0, 0], torch.arange(5000, dtype=torch.float64) ** 2)


@requires_cuda
def test_cuda_4096_pixel_crack_images_equal_scipy():
    """Squared distances beyond ``2**24`` (float64 maps): exact, and float32 heights ``f + q^2``
    would round (they did, before the maps switched)."""
    from fastseg.data import synthetic_cracks

    _, t = synthetic_cracks(2, 4096, 4096, density=0.002, seed=5)
    masks = t.reshape(2, 4096, 4096).bool()
    masks[1] = False
    masks[1, 0, 0] = True  # one corner pixel: squared distances up to 2 * 4095**2, beyond 2**24
    got = edt_squared(masks.cuda(), (1.0, 1.0)).cpu()
    assert got.dtype == torch.float64
    assert np.array_equal(got.numpy(), scipy_squared_edt(masks.numpy(), (1.0, 1.0)))


@triton.jit
def _intersection_kernel(fq_ptr, pq_ptr, fv_ptr, pv_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    s = _intersection(tl.load(fq_ptr + i), tl.load(pq_ptr + i), tl.load(fv_ptr + i), tl.load(pv_ptr + i))
    tl.store(out_ptr + i, s)


def test_parabola_intersections_are_correctly_rounded_at_4096_pixels():
    """The envelope's boundaries on long lines with large heights, against exact rationals."""
    gen = np.random.default_rng(4)
    n = 64
    q = gen.integers(3000, 4096, n)
    v = q - gen.integers(1, 3000, n)
    fq = gen.integers(0, 4095**2, n)
    fv = gen.integers(0, 4095**2, n)
    args = [torch.tensor(a, dtype=torch.float64, device=TRITON_DEVICE) for a in (fq, q, fv, v)]
    out = torch.empty(n, dtype=torch.float64, device=TRITON_DEVICE)
    _intersection_kernel[(1,)](*args, out, BLOCK=n)
    for got, a, b, c, d in zip(out.cpu().tolist(), fq, q, fv, v):
        exact = Fraction(int(a - c) + int(b * b - d * d), 2 * int(b - d))
        assert abs(Fraction(got) - exact) <= Fraction(math.ulp(float(exact))) / 2, (got, exact)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("to", ["foreground", "background"])
def test_public_edt_triton_backend_equals_scipy(to, device):
    from fastseg.edt import edt

    masks = _masks((2, 2, 9, 13), 0.1, seed=11)
    masks[0, 1] = to == "background"  # one image without any pixel of the `to` set
    got = edt(masks.to(device), to=to, backend="triton").cpu()
    for b in range(2):
        for c in range(2):
            target_set = masks[b, c] if to == "foreground" else ~masks[b, c]
            if not target_set.any():
                diagonal = (9**2 + 13**2) ** 0.5
                assert torch.all(got[b, c] == torch.tensor(diagonal, dtype=torch.float32))
                continue
            want = ndi.distance_transform_edt(~target_set.numpy())
            assert np.array_equal(got[b, c].numpy(), want.astype(np.float32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("squared", [False, True])
def test_public_edt_triton_backend_with_spacing_equals_scipy(squared, device):
    """float32 results equal SciPy's rounded once; float64 ones equal SciPy's (2-D: the same terms
    added), crack-free images included (their :func:`empty_fill` too, not a float32 rounding of it)."""
    from fastseg.edt import edt, empty_fill

    masks = _masks((2, 2, 9, 13), 0.1, seed=12)
    masks[1, 0] = False
    spacing = (0.3, 1.7)
    for dtype in (torch.float32, torch.float64):
        got = edt(masks.to(device), spacing=spacing, squared=squared, dtype=dtype, backend="triton").cpu()
        assert torch.all(got[1, 0] == torch.tensor(empty_fill((9, 13), spacing, squared=squared), dtype=dtype))
        for b, c in ((0, 0), (0, 1), (1, 1)):
            d = ndi.distance_transform_edt(~masks[b, c].numpy(), sampling=spacing)
            want = scipy_squared_edt(masks[b, c][None].numpy(), spacing)[0] if squared else d
            assert np.array_equal(got[b, c].numpy(), want.astype(got.numpy().dtype)), (b, c, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_distances_are_correctly_rounded_square_roots(device):
    """A line of 3000 pixels, its crack at pixel 0: distances sqrt(k^2 + 1) (the crack's row is
    one pixel up), each equal to SciPy's and NumPy's correctly rounded square root (torch's float64
    CPU sqrt is 1 ulp off for some, e.g. sqrt(2))."""
    from fastseg.edt import edt

    masks = torch.zeros(1, 1, 2, 3000, dtype=torch.bool)
    masks[0, 0, 0, 0] = True
    got = edt(masks.to(device), dtype=torch.float64, backend="triton").cpu()[0, 0, 1].numpy()
    k = np.arange(3000, dtype=np.float64)
    assert np.array_equal(got, np.sqrt(k * k + 1))
    assert np.array_equal(got, ndi.distance_transform_edt(~masks[0, 0].numpy())[1])


def test_triton_backend_on_cpu_without_the_interpreter_says_how_to_enable_it(tmp_path):
    """A process where triton was imported without ``TRITON_INTERPRET=1``: a clear error, not
    Triton's "0 active drivers"."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, fastseg.functional as F\n"
        "from fastseg.edt import edt\n"
        "for call in (lambda: edt(torch.ones(1, 1, 2, 2, dtype=torch.bool), backend='triton'),\n"
        "             lambda: F.dice(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), backend='triton')):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as err:\n"
        "        print('ERROR', err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, out.stdout + out.stderr
    assert all("TRITON_INTERPRET=1" in line for line in errors), errors


@pytest.mark.parametrize("device", DEVICES)
def test_the_envelope_never_pops_its_first_parabola(device):
    """A tiny spacing along the envelope's axis under huge heights puts an intersection below the
    first parabola's -1e30 boundary: popping it sent the lane's stack below 0 and the loop never
    ended. The kernel tests the stack depth instead."""
    masks = torch.zeros(1, 3, 2, dtype=torch.bool)
    masks[0, 0, 0] = masks[0, 1, 0] = masks[0, 2, 1] = True
    assert_matches_scipy(masks, (1e-3, 1e14), device)


def test_edt_kernels_compile_without_fused_multiply_adds():
    """Each product and sum rounded as written (as SciPy and the interpreter round them): the
    envelope's float64 PTX holds no fma (Triton fuses by default: 12 of them)."""
    import subprocess
    import sys

    code = """
import warnings, triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from fastseg.kernels import edt as K
sig = {"f_ptr": "*fp64", "out_ptr": "*fp64", "v_ptr": "*i32", "n_lines": "i32", "n": "i32", "inner": "i32",
       "spacing_bits": "i64", "BLOCK_LINES": "constexpr"}
counts = []
for options in ({}, K.EXACT_ROUNDING):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = triton.compile(ASTSource(K._edt_envelope_kernel, sig, {"BLOCK_LINES": K.ENVELOPE_LINES}),
                           target=GPUTarget("cuda", 90, 32), options={"num_warps": 1, **options})
    counts.append(c.asm["ptx"].count("fma."))
print(counts)
"""
    import os

    from fastseg import kernel_report

    try:
        kernel_report._check_toolchain()
    except kernel_report.ToolchainUnavailable as err:
        pytest.skip(f"compile toolchain unavailable: {err}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    default, exact = json.loads(done.stdout.strip().splitlines()[-1])
    assert default > 0 and exact == 0, (default, exact)
