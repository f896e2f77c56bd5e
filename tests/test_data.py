"""fastseg.data: the CrackForest loader and helpers, and synthetic crack batches."""

import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.stats import mannwhitneyu
import torch

from fastseg import data as fdata
from fastseg.data import crackforest_tiles, load_crackforest, random_crops, synthetic_cracks

# ---------------------------------------------------------------------------------- CrackForest


@pytest.fixture(scope="module")
def cfd():
    try:
        return load_crackforest()
    except FileNotFoundError as err:  # a fresh clone without the shared data folder
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def raw(cfd):
    # The archive read directly with NumPy, as its README says: the independent reference.
    return np.load(fdata._resolve(None))


def test_crackforest_shapes_and_values(cfd, raw):
    assert cfd.images.shape == (90, 3, 320, 480) and cfd.images.dtype == torch.uint8
    assert cfd.masks.shape == (90, 1, 320, 480) and cfd.masks.dtype == torch.uint8
    assert cfd.ids.tolist() == list(range(1, 91))
    assert np.array_equal(cfd.images[7].permute(1, 2, 0).numpy(), raw["images"][7])
    assert np.array_equal(cfd.masks[:, 0].numpy(), raw["masks"])
    assert set(torch.unique(cfd.masks).tolist()) == {0, 1}
    # README: cracks cover about 1.6 % of the pixels, between 0.35 % and 6.3 % per image.
    per_image = cfd.masks.float().mean(dim=(1, 2, 3))
    assert abs(per_image.mean().item() - 0.016) < 0.001
    assert per_image.min().item() > 0.0034 and per_image.max().item() < 0.064


def test_float_images_are_scaled(cfd):
    floats = load_crackforest(dtype=torch.float32)
    assert floats.images.dtype == torch.float32
    assert torch.allclose(floats.images[3], cfd.images[3].float() / 255)
    assert floats.images.min() >= 0 and floats.images.max() <= 1


def test_split_is_fixed(cfd):
    train, val = cfd.split()
    assert train.ids.tolist() == list(range(1, 71)) and val.ids.tolist() == list(range(71, 91))
    assert torch.equal(val.masks[0], cfd.masks[70])
    small_train, small_val = cfd.split(train=10, val=5)
    assert len(small_train) == 10 and len(small_val) == 5
    with pytest.raises(ValueError, match="train"):
        cfd.split(train=80, val=20)


def test_missing_path_is_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_crackforest(missing)
    assert str(missing) in str(err.value) and "FASTSEG_CRACKFOREST" in str(err.value)
    monkeypatch.setenv("FASTSEG_CRACKFOREST", str(missing))
    with pytest.raises(FileNotFoundError, match="FASTSEG_CRACKFOREST"):
        load_crackforest()


def test_default_search_tries_shared_data_next_to_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSEG_CRACKFOREST", raising=False)
    monkeypatch.chdir(tmp_path)
    tried = [str(p) for p in fdata._candidates()]
    repo_parent = Path(fdata.__file__).resolve().parents[2]
    assert str(repo_parent / "shared" / "data" / "crackforest") in tried
    assert str(tmp_path / "shared" / "data" / "crackforest") in tried


def test_tiles_cut_the_photos(cfd):
    images, masks = crackforest_tiles(160, data=cfd)
    assert images.shape == (90 * 2 * 3, 3, 160, 160) and masks.shape == (540, 1, 160, 160)
    # Tile 4 is photo 0, row 1, column 1; tile 6 is photo 1, row 0, column 0.
    assert torch.equal(images[4], cfd.images[0, :, 160:320, 160:320])
    assert torch.equal(masks[6], cfd.masks[1, :, :160, :160])
    first, _ = crackforest_tiles((100, 200), 5, data=cfd)
    assert first.shape == (5, 3, 100, 200)


def test_tiles_larger_than_a_photo_are_mosaics(cfd):
    images, masks = crackforest_tiles(700, 2, data=cfd)
    assert images.shape == (2, 3, 700, 700) and masks.shape == (2, 1, 700, 700)
    # A 3 x 2 grid of photos: 0 1 / 2 3 / 4 5 for the first tile, 6.. for the second.
    assert torch.equal(images[0, :, :320, :480], cfd.images[0])
    assert torch.equal(masks[0, :, 320:640, 480:700], cfd.masks[3, :, :, :220])
    assert torch.equal(images[1, :, :320, :480], cfd.images[6])


def test_tiles_of_an_empty_data_set_are_a_clear_error():
    empty = fdata.CrackForest(torch.zeros(0, 3, 4, 5), torch.zeros(0, 1, 4, 5), torch.zeros(0, dtype=torch.long))
    for size, count in ((2, None), (2, 3), (9, 1)):
        with pytest.raises(ValueError, match="no images"):
            crackforest_tiles(size, count, data=empty)


def test_random_crops_are_windows_of_the_inputs():
    # Every pixel value is unique, so a crop's corner value tells where it was taken.
    images = torch.arange(3 * 2 * 20 * 30, dtype=torch.float32).reshape(3, 2, 20, 30)
    masks = (images[:, :1] % 7 == 0).to(torch.uint8)
    crops, crop_masks = random_crops(images, masks, (5, 8), 12, seed=4)
    assert crops.shape == (12, 2, 5, 8) and crop_masks.shape == (12, 1, 5, 8)
    for crop, crop_mask in zip(crops, crop_masks):
        n, c, y, x = np.unravel_index(int(crop[0, 0, 0]), images.shape)
        assert c == 0
        assert torch.equal(crop, images[n, :, y : y + 5, x : x + 8])
        assert torch.equal(crop_mask, masks[n, :, y : y + 5, x : x + 8])
    again, _ = random_crops(images, masks, (5, 8), 12, seed=4)
    assert torch.equal(crops, again)
    with pytest.raises(ValueError, match="size"):
        random_crops(images, masks, 40, 1)


# ----------------------------------------------------------------------------- synthetic cracks


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic over n_pos * n_neg (SciPy)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


@pytest.mark.parametrize("shape", [(4, 64, 64), (3, 96, 160), (2, 320, 480), (1, 512, 512)])
def test_foreground_fraction_in_range(shape):
    _, target = synthetic_cracks(*shape, seed=1)
    fraction = target.float().mean(dim=(1, 2, 3))
    assert target.shape == (shape[0], 1, *shape[1:]) and target.dtype == torch.uint8
    assert set(torch.unique(target).tolist()) <= {0, 1}
    assert fraction.min() >= 0.005 and fraction.max() <= 0.03, fraction


def test_density_controls_the_fraction():
    low = synthetic_cracks(4, 256, 256, density=0.005)[1].float().mean()
    mid = synthetic_cracks(4, 256, 256, density=0.015)[1].float().mean()
    high = synthetic_cracks(4, 256, 256, density=0.03)[1].float().mean()
    assert low < mid < high
    assert 0.5 * 0.03 < high < 1.2 * 0.03
    empty_logits, empty = synthetic_cracks(2, 64, 64, density=0.0)
    assert empty.sum() == 0 and torch.isfinite(empty_logits).all()


def test_seeds_are_checked():
    images, masks = torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)
    for call in (lambda seed: random_crops(images, masks, 4, 2, seed=seed), lambda seed: synthetic_cracks(1, 8, 8, seed=seed)):
        for bad in (2.7, "a", None, True):
            with pytest.raises(TypeError, match="seed must be an integer"):
                call(bad)
        for bad in (-1, 2**63 - 1, 2**64 - 1):
            with pytest.raises(ValueError, match="seed must lie in"):
                call(bad)
    with pytest.raises(TypeError, match="images must be a torch.Tensor; got numpy.ndarray"):
        random_crops(images.numpy(), masks, 4, 2)


def test_deterministic_per_seed():
    a = synthetic_cracks(2, 128, 96, seed=7)
    b = synthetic_cracks(2, 128, 96, seed=7)
    c = synthetic_cracks(2, 128, 96, seed=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_cracks_are_thin():
    _, target = synthetic_cracks(2, 384, 384, seed=3)
    for mask in target[:, 0].numpy().astype(bool):
        # Distance of every crack pixel to the nearest background pixel (SciPy).
        inside = ndi.distance_transform_edt(mask)[mask]
        assert np.mean(inside <= 3) > 0.97
        assert np.mean(inside <= 1) > 0.4, "many crack pixels touch the background"


def test_logits_look_like_an_imperfect_model():
    logits, target = synthetic_cracks(2, 256, 320, seed=5)
    z, t = logits.flatten().numpy(), target.flatten().numpy()
    auc = _auc(z, t)
    assert 0.9 < auc < 0.9999, auc  # informative, not perfect
    pred = z > 0
    tp, fp, fn = (pred & (t == 1)).sum(), (pred & (t == 0)).sum(), (~pred & (t == 1)).sum()
    dice = 2 * tp / (2 * tp + fp + fn)
    assert 0.4 < dice < 0.95, dice
    assert np.mean(np.abs(z) > 2) > 0.9, "mostly confident"
    assert np.isfinite(z).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    logits, target = synthetic_cracks(1, 40, 56, dtype=dtype)
    ref, ref_target = synthetic_cracks(1, 40, 56)
    assert logits.dtype == dtype and torch.equal(target, ref_target)
    assert torch.allclose(logits.float(), ref, atol=0.1, rtol=0.01)


def test_tiny_and_odd_sizes():
    for shape in [(1, 1, 1), (2, 1, 37), (1, 17, 3), (3, 9, 11)]:
        logits, target = synthetic_cracks(*shape)
        assert logits.shape == target.shape == (shape[0], 1, *shape[1:])
        assert torch.isfinite(logits).all()


def test_argument_errors():
    with pytest.raises(ValueError, match="batch"):
        synthetic_cracks(0, 8, 8)
    with pytest.raises(ValueError, match="density"):
        synthetic_cracks(1, 8, 8, density=0.9)
    with pytest.raises(TypeError, match="dtype"):
        synthetic_cracks(1, 8, 8, dtype=torch.int64)


def test_2048_is_quick():
    start = time.process_time()
    logits, target = synthetic_cracks(1, 2048, 2048)
    cpu_seconds = time.process_time() - start
    fraction = target.float().mean().item()
    assert logits.shape == (1, 1, 2048, 2048) and 0.005 < fraction < 0.03
    # About 0.1 s of CPU time per 2048 x 2048 image on one idle core (16 of them in about 1 s);
    # a generous bound for busy, shared machines.
    assert cpu_seconds < 4.0, cpu_seconds


def test_crackforest_repr_is_a_short_summary(cfd):
    text = repr(cfd)
    crack = 100 * cfd.masks.float().mean().item()  # the fraction of crack pixels, computed apart
    assert text == f"CrackForest(90 images, 3x320x480, images uint8, {crack:.2f}% crack pixels)"
    assert "tensor" not in repr(cfd.split())


def test_crackforest_repr_of_a_small_set():
    masks = torch.zeros(2, 1, 4, 5, dtype=torch.uint8)
    masks[0, 0, 1, :3] = 1
    masks[1, 0, 2, 2:] = 1  # 6 of 40 pixels
    small = fdata.CrackForest(torch.zeros(2, 3, 4, 5), masks, torch.tensor([3, 4]))
    assert repr(small) == "CrackForest(2 images, 3x4x5, images float32, 15.00% crack pixels)"
