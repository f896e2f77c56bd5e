"""fastseg.edt against SciPy (exactly), MONAI's distance field and SciPy's binary erosion."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from conftest import requires_cuda
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fastseg.edt import boundary_field, edt, empty_fill, inner_boundary


def scipy_edt(masks: np.ndarray, to: str, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """SciPy's distances and exact squared distances for each image of ``[N, C, *spatial]``.

    The squared distance comes from SciPy's nearest-pixel indices (no square-root round trip).
    Images without a pixel of the target set get NaN (checked separately).
    """
    dist = np.full(masks.shape, np.nan)
    sq = np.full(masks.shape, np.nan)
    spatial = masks.shape[2:]
    grid = np.indices(spatial)
    s = spacing if spacing is not None else (1.0,) * len(spatial)
    for idx in np.ndindex(*masks.shape[:2]):
        fg = masks[idx] != 0
        target = fg if to == "foreground" else ~fg
        if not target.any():
            continue
        # SciPy: distance of every nonzero input pixel to the nearest zero -> zeros = target set.
        d, ft = ndi.distance_transform_edt(~target, sampling=spacing, return_indices=True)
        dist[idx] = d
        sq[idx] = sum(((grid[a] - ft[a]) * s[a]) ** 2 for a in range(len(spatial)))
    return dist, sq


def assert_equals_scipy(mask: torch.Tensor, spacing=None):
    for to in ("foreground", "background"):
        want, want_sq = scipy_edt(mask.numpy(), to, spacing)
        got = edt(mask, to=to, spacing=spacing, dtype=torch.float64).numpy()
        got_sq = edt(mask, to=to, spacing=spacing, squared=True, dtype=torch.float64).numpy()
        got32 = edt(mask, to=to, spacing=spacing).numpy()
        ok = ~np.isnan(want)
        assert np.array_equal(got[ok], want[ok]), f"to={to}: max err {np.abs(got[ok] - want[ok]).max()}"
        assert np.array_equal(got32[ok], want[ok].astype(np.float32))
        if spacing is None:
            assert np.array_equal(got_sq[ok], want_sq[ok])
            assert np.array_equal(got_sq[ok], np.round(got_sq[ok])), "squared distances are integers"
        else:
            np.testing.assert_allclose(got_sq[ok], want_sq[ok], rtol=1e-13, atol=0)


def _random(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 17, 23), (2, 1, 1, 19), (2, 1, 19, 1), (1, 1, 1, 1), (2, 2, 6, 5, 7), (3, 1, 30)],
    ids=["2d", "1xN", "Nx1", "1x1", "3d", "1d"],
)
def test_random_masks_equal_scipy(shape):
    assert_equals_scipy(_random(shape, 0.1))


def test_special_masks_equal_scipy():
    h, w = 15, 21
    m = torch.zeros(6, 1, h, w, dtype=torch.uint8)
    m[1] = 1  # full
    m[2, 0, 7, 10] = 1  # single pixel
    m[3, 0, :, 0] = 1  # vertical line on the border
    m[4, 0, 3, :] = 1  # horizontal line
    m[5, 0, torch.arange(h), torch.arange(h)] = 1  # diagonal
    assert_equals_scipy(m)


@pytest.mark.parametrize("spacing", [(0.5, 2.0), (3.0, 1.0), (1.5, 0.7, 2.0), 2.5])
def test_anisotropic_spacing_equals_scipy(spacing):
    shape = (2, 1, 9, 11) if not isinstance(spacing, tuple) or len(spacing) == 2 else (2, 1, 5, 6, 7)
    nd = len(shape) - 2
    sampling = (spacing,) * nd if not isinstance(spacing, tuple) else spacing
    mask = _random(shape, 0.08, seed=3)
    assert_equals_scipy(mask, sampling)
    # A single number means the same spacing on every axis.
    assert torch.equal(edt(mask, spacing=spacing), edt(mask, spacing=sampling))


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 9), st.integers(1, 9))))
def test_hypothesis_masks_equal_scipy(masks):
    assert_equals_scipy(torch.from_numpy(masks))


def test_empty_images_get_the_diagonal():
    # Hand values: a 3 x 4 image's bounding-box diagonal is 5; with spacing (2, 1) it is sqrt(36 + 16).
    mask = torch.zeros(2, 1, 3, 4, dtype=torch.bool)
    mask[1, 0, 1, 1] = True
    d = edt(mask)
    assert torch.all(d[0] == 5.0)
    assert torch.all(edt(mask, squared=True)[0] == 25.0)
    assert torch.allclose(edt(mask, spacing=(2.0, 1.0))[0], torch.tensor(math.sqrt(52.0)))
    assert empty_fill((3, 4)) == 5.0 and empty_fill((3, 4), squared=True) == 25.0
    # The fill exceeds every distance inside any image of that size.
    assert float(d[1].max()) < 5.0
    # A full image measured to the background is empty too.
    assert torch.all(edt(torch.ones(1, 1, 3, 4), to="background") == 5.0)


def test_mask_dtypes_and_values():
    m = _random((2, 1, 8, 9), 0.2, seed=5)
    want = edt(m)
    assert torch.equal(edt(m.to(torch.uint8)), want)
    assert torch.equal(edt(m.float() * 0.3), want), "any nonzero value is foreground"
    assert edt(m).dtype == torch.float32 and edt(m, dtype=torch.float64).dtype == torch.float64
    assert edt(m, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_large_squared_distances_are_exact_in_float64():
    # One pixel at the start of a 1 x 4200 line (and a 2-D corner case): the squared distances pass
    # 2**24, where float32 stops holding every integer; float64 output keeps them exact.
    line = torch.zeros(1, 1, 1, 4200, dtype=torch.bool)
    line[..., 0] = True
    d = edt(line, squared=True, dtype=torch.float64)
    assert d[0, 0, 0, -1].item() == 4199**2 and 4199**2 > 2**24
    assert torch.equal(d[0, 0, 0], torch.arange(4200, dtype=torch.float64) ** 2)
    corner = torch.zeros(1, 1, 40, 3000, dtype=torch.bool)
    corner[0, 0, 0, 0] = True
    assert edt(corner, squared=True, dtype=torch.float64)[0, 0, -1, -1].item() == 39**2 + 2999**2


def test_argument_errors():
    with pytest.raises(ValueError, match="to"):
        edt(torch.zeros(1, 1, 3, 3), to="crack")
    with pytest.raises(ValueError, match=r"\[B, C, \*spatial\]"):
        edt(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="spacing"):
        edt(torch.zeros(1, 1, 3, 3), spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        edt(torch.zeros(1, 1, 3, 3), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(TypeError, match="mask"):
        edt(np.zeros((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        edt(torch.zeros(1, 1, 3, 3), dtype=torch.int32)
    with pytest.raises(TypeError, match="squared must be a bool; got numpy.bool"):
        edt(torch.zeros(1, 1, 3, 3), squared=np.bool_(True))


@pytest.mark.parametrize("backend", ["auto", "scipy"])
def test_spacing_beyond_the_largest_diagonal_is_refused(backend):
    """A 3 x 4 image's diagonal is 5 spacing units: 5 * 2e14 = 1e15 is the first length refused
    (squared distances would reach the Triton kernels' 1e30 "no target" marker), and 1e200 no
    longer overflows a float on the way."""
    from fastseg.edt import MAX_DIAGONAL, boundary_field, empty_fill

    mask = torch.zeros(1, 1, 3, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    assert MAX_DIAGONAL == 1e15
    assert edt(mask, spacing=1.9e14, backend=backend)[0, 0, -1, -1].item() == pytest.approx(math.hypot(2, 3) * 1.9e14)
    for spacing in (2e14, 1e200, (1.0, 1e300)):
        with pytest.raises(ValueError, match="spacing .* must be below 1e\\+15"):
            edt(mask, spacing=spacing, backend=backend)
    with pytest.raises(ValueError, match="spacing"):
        boundary_field(mask, spacing=1e200)
    with pytest.raises(ValueError, match="spacing"):
        empty_fill((3, 4), 1e200)
    for spacing in (5e-324, 1e-160, (1.0, 1.4e-154), 0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="spacing values must be finite and >= 1.49e-154"):
            edt(mask, spacing=spacing, backend=backend)
    tiny = edt(mask, spacing=1.5e-154, backend=backend, dtype=torch.float64)
    assert tiny[0, 0, 0, 1].item() == 1.5e-154 and tiny[0, 0, -1, -1].item() == pytest.approx(math.hypot(2, 3) * 1.5e-154)


def test_boundary_field_equals_monai_distance_field():
    from monai.losses import HausdorffDTLoss

    m = _random((4, 1, 13, 17), 0.15, seed=7).float()
    m[2] = 0  # single class: MONAI gives 0
    m[3] = 1
    want = HausdorffDTLoss().distance_field(m)
    got = boundary_field(m)
    assert torch.equal(got, want.float())
    assert torch.all(got[2:] == 0)


def _brute_field(mask: np.ndarray, valid: np.ndarray, spacing) -> np.ndarray:
    """Distance of each valid pixel to the nearest valid pixel of the other class, over all pairs;
    0 at ignored pixels and in single-class images."""
    out = np.zeros(mask.shape)
    points = np.argwhere(valid)
    classes = mask[valid]
    if classes.all() or not classes.any():
        return out
    for point, cls in zip(points, classes):
        other = points[classes != cls]
        out[tuple(point)] = np.sqrt((((other - point) * np.asarray(spacing)) ** 2).sum(axis=1).min())
    return out


@pytest.mark.parametrize("spacing", [None, (0.5, 1.5)])
def test_boundary_field_with_valid_leaves_ignored_pixels_out_of_both_classes(spacing):
    m = _random((4, 1, 7, 9), 0.3, seed=21)
    valid = _random((4, 1, 7, 9), 0.7, seed=22)
    m[1] = True  # all crack, holes of ignored pixels: single class
    valid[3] = False
    valid[3, 0, 0, 0] = valid[3, 0, 6, 8] = True  # two valid pixels
    m[3, 0, 0, 0], m[3, 0, 6, 8] = True, False
    got = boundary_field(m, valid=valid, spacing=spacing, dtype=torch.float64)
    for b in range(4):
        want = _brute_field(m[b, 0].numpy(), valid[b, 0].numpy(), spacing or (1.0, 1.0))
        np.testing.assert_allclose(got[b, 0].numpy(), want, rtol=1e-15, atol=0)
    assert torch.all(got[1] == 0) and got[3, 0, 0, 0].item() == pytest.approx(math.hypot(6, 8) if spacing is None else math.hypot(3, 12))
    assert torch.equal(boundary_field(m, valid=torch.ones_like(m)), boundary_field(m))
    with pytest.raises(TypeError, match="valid"):
        boundary_field(m, valid=valid.float())
    with pytest.raises(ValueError, match="valid"):
        boundary_field(m, valid=valid[:2])


def test_inner_boundary_with_valid_sees_no_background_at_ignored_pixels():
    """A crack pixel next to an ignored pixel is not on the boundary; next to a valid background
    pixel it is (SciPy dilation of the valid background, the outside counting as nothing)."""
    m = _random((3, 1, 9, 10), 0.5, seed=23)
    valid = _random((3, 1, 9, 10), 0.8, seed=24)
    m[0] = True
    struct = ndi.generate_binary_structure(2, 1)
    got = inner_boundary(m, valid=valid).numpy()
    for b in range(3):
        mask, ok = m[b, 0].numpy(), valid[b, 0].numpy()
        want = mask & ok & ndi.binary_dilation(~mask & ok, struct, border_value=0)
        assert np.array_equal(got[b, 0], want)
    assert not got[0].any()  # all crack: ignored holes open no boundary
    assert torch.equal(inner_boundary(m, valid=torch.ones_like(m)), inner_boundary(m))


def test_inner_boundary_equals_scipy_erosion():
    m = _random((3, 2, 11, 14), 0.5, seed=11)
    m[0, 0] = True  # full image: the border is not a boundary
    struct = ndi.generate_binary_structure(2, 1)
    got = inner_boundary(m).numpy()
    for idx in np.ndindex(*m.shape[:2]):
        mask = m[idx].numpy()
        want = mask & ~ndi.binary_erosion(mask, struct, border_value=1)
        assert np.array_equal(got[idx], want)
    assert not got[0, 0].any()
    m3 = _random((1, 1, 5, 6, 7), 0.6, seed=2)
    cube = m3[0, 0].numpy()
    want3 = cube & ~ndi.binary_erosion(cube, ndi.generate_binary_structure(3, 1), border_value=1)
    assert np.array_equal(inner_boundary(m3)[0, 0].numpy(), want3)


def test_eager_calls_skip_the_distance_map_op_and_intercepted_calls_keep_it(monkeypatch):
    """A plain eager call computes the maps directly; under a ``TorchDispatchMode`` (and
    torch.compile, tests/test_compile.py) they come from ``fastseg::distance_map``. Both equal SciPy."""
    import fastseg.edt as fastseg_edt
    from conftest import OpNames

    calls = []
    real = fastseg_edt._distance_map_op
    monkeypatch.setattr(fastseg_edt, "_distance_map_op", lambda *a: calls.append(1) or real(*a))
    mask = _random((2, 1, 9, 11), 0.1, seed=6)
    _, want_sq = scipy_edt(mask.numpy(), "foreground")
    assert np.array_equal(edt(mask, squared=True, dtype=torch.float64).numpy(), want_sq)
    assert calls == []
    with OpNames() as seen:
        got = edt(mask, squared=True, dtype=torch.float64)
    assert calls and "fastseg.distance_map.default" in seen.names
    assert np.array_equal(got.numpy(), want_sq)


@pytest.fixture
def images_split_over_threads(monkeypatch):
    """The native EDT with fewer images than threads: each image's passes split over 3 threads
    (from any image size, so small test images take that path)."""
    from fastseg import _native_edt

    if _native_edt.load() is None:
        pytest.skip("no C compiler: the native EDT is not built")
    monkeypatch.setattr(_native_edt, "SPLIT_IMAGE_PIXELS", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    calls = []
    real = _native_edt._split_image
    monkeypatch.setattr(_native_edt, "_split_image", lambda *a: calls.append(1) or real(*a))
    yield calls
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "shape", [(1, 1, 37, 53), (2, 1, 8, 41), (1, 2, 1, 29), (1, 1, 29, 1), (1, 1, 9, 10, 11), (2, 1, 30), (1, 1, 1, 1)],
    ids=["2d", "two images", "1xN", "Nx1", "3d", "1d", "1x1"],
)
def test_images_split_over_threads_equal_scipy(images_split_over_threads, shape):
    assert_equals_scipy(_random(shape, 0.05, seed=4))
    assert images_split_over_threads, "the split path ran"


def test_special_images_split_over_threads_equal_scipy_and_monai(images_split_over_threads):
    from monai.losses import HausdorffDTLoss

    h, w = 15, 21
    for fill in ("empty", "full", "pixel", "line"):
        m = torch.zeros(1, 1, h, w, dtype=torch.uint8)
        if fill == "full":
            m[:] = 1
        elif fill == "pixel":
            m[0, 0, 7, 10] = 1
        elif fill == "line":
            m[0, 0, :, 0] = 1
        assert_equals_scipy(m)
        field = HausdorffDTLoss().distance_field(m.float())
        assert torch.equal(boundary_field(m), field.float()), fill
    field = HausdorffDTLoss().distance_field(_random((1, 1, 9, 10), 0.3, seed=8).float())
    assert torch.equal(boundary_field(_random((1, 1, 9, 10), 0.3, seed=8)), field.float())
    assert images_split_over_threads, "the split path ran"


@requires_cuda
def test_cuda_tensors_round_trip():
    m = _random((2, 1, 33, 47), 0.05, seed=1)
    got = edt(m.cuda(), squared=True)
    assert got.is_cuda
    want, want_sq = scipy_edt(m.numpy(), "foreground")
    assert np.array_equal(got.cpu().double().numpy(), want_sq)


def _run_python(code: str, tmp_path, **env) -> str:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "FASTSEG_CACHE_DIR": str(tmp_path / "cache"), **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_native_build_is_shared_by_threads_that_ask_at_once(tmp_path):
    """Threads asking during the first build wait for it (one used to find no library and fail)."""
    code = """
import threading, torch
from fastseg.edt import edt
m = torch.rand(1, 1, 64, 64) > 0.9
res = []
ts = [threading.Thread(target=lambda: res.append(bool(torch.equal(edt(m, backend="native"), edt(m, backend="scipy")))))
      for _ in range(3)]
[t.start() for t in ts]
[t.join() for t in ts]
print(res)
"""
    assert _run_python(code, tmp_path).strip() == "[True, True, True]"


def test_native_edt_in_a_forked_child_after_the_parent_used_its_threads(tmp_path):
    """The parent's thread pool object survives a fork without its threads: the child builds its own."""
    code = """
import os, torch
from fastseg.edt import edt
torch.set_num_threads(2)
m = torch.rand(4, 1, 64, 64) > 0.9
want = edt(m, backend="scipy")
assert torch.equal(edt(m, backend="native"), want)
pid = os.fork()
if pid == 0:
    os._exit(0 if torch.equal(edt(m, backend="native"), want) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    assert _run_python(code, tmp_path).strip() == "0"


def test_native_edt_in_a_child_forked_while_a_thread_loads_the_library(tmp_path):
    """The parent's load lock, held at the fork by a thread that builds the library, must not
    leave the child waiting for ever: the child loads the library itself."""
    code = """
import os, signal, torch
from fastseg import _native_edt
from fastseg.edt import edt
m = torch.rand(2, 1, 16, 16) > 0.9
want = edt(m, backend="scipy")
_native_edt._LOAD_LOCK.acquire()  # as a thread inside load() holds it
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    os._exit(0 if torch.equal(edt(m, backend="native"), want) else 3)
_, status = os.waitpid(pid, 0)
_native_edt._LOAD_LOCK.release()
print(os.waitstatus_to_exitcode(status))
"""
    assert _run_python(code, tmp_path).strip() == "0"


def test_native_build_reads_cc_as_words_and_says_when_disabled(tmp_path):
    code = """
import torch
from fastseg import _native_edt
from fastseg.edt import edt
m = torch.rand(1, 1, 9, 9) > 0.8
assert _native_edt._compiler() == ["cc", "-O1"]
assert torch.equal(edt(m, backend="native"), edt(m, backend="scipy"))
print("ok")
"""
    assert _run_python(code, tmp_path, CC="cc -O1").strip() == "ok"
    code = """
import torch
from fastseg.edt import edt
try:
    edt(torch.zeros(1, 1, 3, 3, dtype=torch.bool), backend="native")
except RuntimeError as err:
    print(err)
"""
    assert "FASTSEG_NATIVE off" in _run_python(code, tmp_path, FASTSEG_NATIVE="0")
