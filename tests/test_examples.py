"""Smoke tests of the example scripts (so they cannot rot) and a hand-computed check of their metrics.

The examples are not a package: they are imported by path. Every training here is two steps on
two tiny crops, evaluation runs on one or two validation images; the whole file takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CRACKFOREST = Path(__file__).resolve().parents[2] / "shared" / "data" / "crackforest" / "crackforest_001-090.npz"
needs_data = pytest.mark.skipif(not CRACKFOREST.exists(), reason="CrackForest archive not found")

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "32", "--widths", "4,8",
        "--max-val", "1", "--thresholds", "9", "--no-progress", "--threads", "1"]


def load(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    # _common keeps its own name, so the scripts' ``import _common`` finds this same module.
    mod_name = name if name == "_common" else f"examples_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


common = load("_common")


# ---------------------------------------------------------------- metrics on a case by hand


def _hand_case():
    """One 4x4 image: 3 crack pixels; at threshold 0.5, TP = 2, FP = 1, FN = 1, TN = 12."""
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 1] = 1
    probs = np.full((1, 4, 4), 0.05, np.float32)
    probs[0, 0, 0], probs[0, 0, 1], probs[0, 1, 3], probs[0, 1, 1] = 0.9, 0.6, 0.7, 0.2
    return probs, mask


def test_evaluate_matches_hand_computation():
    probs, mask = _hand_case()
    m = common.evaluate(probs, mask, tolerance=0, thresholds=99)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 12)
    assert m["iou"] == pytest.approx(2 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # FP = FN: x = 1, OII = 1 - k with k = 1 - (2/pi) atan((FP+FN)/(5 TP)) (seed 001 eq 13-15)
    assert m["oii"] == pytest.approx((2 / math.pi) * math.atan(2 / 10))
    # Thresholds 0.01..0.99. In (0.05, 0.2] four pixels are predicted, the 3 cracks among them:
    # P = 3/4, R = 1, F1 = 6/7, the best; the first grid point there is 0.06.
    assert m["ods_f1"] == pytest.approx(6 / 7)
    assert m["ods_threshold"] == pytest.approx(0.06)
    assert m["ois_f1"] == pytest.approx(6 / 7)  # one image: OIS = ODS


def test_evaluate_passes_the_tolerance():
    probs, mask = _hand_case()
    # With r = 2 the false alarm at (1, 3) lies 2 px from the crack pixel (1, 1): P = R = 1 from 0.06 up.
    m = common.evaluate(probs, mask, tolerance=2, thresholds=99)
    assert m["ods_f1"] == pytest.approx(1.0)
    assert m["ods_threshold"] == pytest.approx(0.06)
    assert m["iou"] == pytest.approx(0.5)  # threshold metrics stay exact


# ---------------------------------------------------------------- pieces


def test_parse_loss_params():
    got = common.parse_loss_params(["--margin", "0.5", "--scope=batch", "--lam", "none", "--symmetric", "true", "--n", "3"])
    assert got == {"margin": 0.5, "scope": "batch", "lam": None, "symmetric": True, "n": 3}
    with pytest.raises(ValueError, match="needs a value"):
        common.parse_loss_params(["--margin"])


def test_make_loss_checks_name_and_parameters():
    with pytest.raises(ValueError, match="loss must be one of"):
        common.make_loss("no_such_loss")
    with pytest.raises(ValueError, match="no parameter 'bogus'"):
        common.make_loss("bce", bogus=1)
    fn = common.make_loss("hybrid_focal_margin", margin=1.0)  # alias of m
    assert fn.params == {"m": 1.0}
    z = torch.zeros(1, 1, 4, 4)
    t = torch.zeros(1, 1, 4, 4)
    # z = 0, t = 0: BCE = log 2 per pixel
    assert float(common.make_loss("bce")(z, t)) == pytest.approx(math.log(2))


def test_make_loss_builds_weighted_sums():
    import fastseg.reference as R

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 6, 7, generator=g, dtype=torch.float64)
    t = (torch.rand(2, 1, 6, 7, generator=g) < 0.3).to(torch.float64)
    expected = 0.5 * R.focal(z, t) + R.dice(z, t)
    fused = common.make_loss("0.5*focal+dice")
    assert fused.passes == ((0, 1),)
    torch.testing.assert_close(fused(z, t), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(common.make_loss("0.5*focal + dice", "reference")(z, t), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="apply to a single loss"):
        common.make_loss("focal+dice", gamma=1.0)
    with pytest.raises(ValueError, match=r"\[weight\*\]loss"):
        common.make_loss("half*focal+dice")
    with pytest.raises(ValueError, match="loss must be one of"):
        common.make_loss("focal+dicee")


def test_random_batch_is_a_flipped_window():
    rng_images = np.random.default_rng(1).integers(0, 255, size=(3, 20, 24, 3), dtype=np.uint8)
    masks = (rng_images[..., 0] > 128).astype(np.uint8)
    split = common.Split(rng_images, masks, ["a", "b", "c"])
    imgs, ms = common.random_batch(split, 5, 8, np.random.default_rng(0))
    assert imgs.shape == (5, 8, 8, 3) and ms.shape == (5, 8, 8)
    for im, m in zip(imgs, ms):
        found = False
        for i in range(3):
            for y in range(20 - 8 + 1):
                for x in range(24 - 8 + 1):
                    win, wm = rng_images[i, y:y + 8, x:x + 8], masks[i, y:y + 8, x:x + 8]
                    for fh in (False, True):
                        for fv in (False, True):
                            a, b = (win[:, ::-1], wm[:, ::-1]) if fh else (win, wm)
                            a, b = (a[::-1], b[::-1]) if fv else (a, b)
                            found |= np.array_equal(a, im) and np.array_equal(b, m)
        assert found


def test_load_folder_reads_pngs(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        m = np.zeros((16, 32), np.uint8)
        m[i, :] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"{i}.png")
    train, val = common.load_folder(tmp_path)
    assert train.names == ["0", "1", "2", "3"] and val.names == ["4"]
    assert train.images.shape == (4, 16, 32, 3) and val.masks.shape == (1, 16, 32)
    assert val.masks[0, 4].tolist() == [1] * 32 and val.masks.sum() == 32
    with pytest.raises(ValueError, match="images' and 'masks'"):
        common.load_folder(tmp_path / "images")


def test_unet_shape_and_size():
    model = common.UNet()
    assert 200_000 <= common.count_parameters(model) <= 900_000
    assert model(torch.zeros(1, 3, 32, 48)).shape == (1, 1, 32, 48)


# ---------------------------------------------------------------- the scripts, two steps each


@needs_data
def test_two_steps_then_evaluate():
    train, val = common.load_data()
    assert len(train.names) == 70 and len(val.names) == 20
    torch.manual_seed(0)
    model = common.UNet((4, 8))
    before = [p.detach().clone() for p in model.parameters()]
    norm = common.Normalizer(train.images)
    history = common.train(model, common.make_loss("dibe"), train, norm, epochs=1, steps_per_epoch=2,
                           batch_size=2, crop=32, progress=False)
    assert len(history) == 1 and math.isfinite(history[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    probs = common.predict(model, val.images[:1, :48, :64], norm)
    assert probs.shape == (1, 48, 64) and np.isfinite(probs).all()
    m = common.evaluate(probs, val.masks[:1, :48, :64], thresholds=9)
    assert set(m) >= {"iou", "precision", "recall", "f1", "ods_f1", "ois_f1", "oii"}


@needs_data
def test_train_crackforest_script(tmp_path):
    result = load("train_crackforest").main(TINY + ["--loss", "hybrid_focal_margin", "--margin", "0.5", "--out", str(tmp_path), "--show", "1"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["config"]["loss_params"] == {"m": 0.5}
    assert saved["metrics"]["iou"] == result["metrics"]["iou"]
    ckpt = torch.load(tmp_path / "model.pt", weights_only=False)
    model = common.UNet(ckpt["widths"])
    model.load_state_dict(ckpt["model"])
    pytest.importorskip("matplotlib")
    assert (tmp_path / "predictions.png").stat().st_size > 0


@needs_data
def test_compare_losses_script(tmp_path):
    rows = load("compare_losses").main(TINY + ["--only", "bce,dice", "--out", str(tmp_path)])
    assert [r["label"] for r in rows] == ["BCE", "Dice"]
    text = (tmp_path / "comparison.md").read_text()
    assert "| BCE |" in text and "| Dice |" in text and "Command:" in text
    assert len(json.loads((tmp_path / "comparison.json").read_text())["runs"]) == 2


@needs_data
def test_oii_guidance_script(tmp_path, capsys):
    res = load("oii_guidance").main(TINY + ["--max-steps", "1", "--out", str(tmp_path)])
    assert len(res.steps) == 1 and res.steps[0].alpha == pytest.approx(0.5)  # midpoint of [0.1, 0.9]
    assert "chosen alpha" in capsys.readouterr().out
    assert json.loads((tmp_path / "guidance.json").read_text())["steps"][0]["alpha"] == pytest.approx(0.5)


@needs_data
def test_train_compile_amp_script_on_cpu():
    pytest.importorskip("fastseg.losses")  # the nn.Module layer this example is about
    out = load("train_compile_amp").main(["--steps", "2", "--batch-size", "2", "--crop", "32", "--max-val", "1", "--device", "cpu"])
    assert out["compile"] is False and out["amp"] is False
    assert len(out["losses"]) == 2 and all(math.isfinite(v) for v in out["losses"])
