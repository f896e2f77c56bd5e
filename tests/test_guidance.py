"""fastseg.guidance: the OII bisection of seed 001 (section 3.1.2, Fig. 4), on Appendix B's examples.

The fake "training" callables return the values the paper reports for each alpha.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from fastseg.guidance import GuidanceResult, oii_guidance


def _lookup(table):
    """A fake train_and_validate: the paper's results by alpha; fails on an alpha it lacks."""
    calls = []

    def run(alpha):
        calls.append(alpha)
        for a, result in table.items():
            if math.isclose(alpha, a, abs_tol=1e-9):
                return result
        raise AssertionError(f"the paper never trained alpha = {alpha}")

    return run, calls


def test_appendix_b_example_1_dibe_dis_segnet():
    # Seed 001, Appendix B.1: DIBE_Dis, SegNet. alpha 0.5 -> OII 0.475 (> 0.4, raise alpha);
    # alpha 0.7 (centre of [0.5, 0.9]) -> OII 0.322, inside (0.3, 0.4): stop.
    run, calls = _lookup({
        0.5: {"iou": 0.442, "pa": 0.713, "oii": 0.475},
        0.7: {"iou": 0.477, "pa": 0.709, "oii": 0.322},
    })
    res = oii_guidance(run)
    assert isinstance(res, GuidanceResult)
    assert calls == pytest.approx([0.5, 0.7])
    assert [s.alpha for s in res.steps] == pytest.approx([0.5, 0.7])
    assert [s.oii for s in res.steps] == [0.475, 0.322]
    assert res.converged and res.alpha == pytest.approx(0.7) and res.oii == 0.322
    assert res.steps[1].metrics["iou"] == 0.477 and res.steps[1].metrics["pa"] == 0.709


def test_appendix_b_example_2_tversky_unet():
    # Seed 001, Appendix B.2: Tversky, U-Net. alpha 0.5 -> OII 0.071 (< 0.3, lower alpha);
    # 0.3 (centre of [0.1, 0.5]) -> 0.118, still low; 0.2 (centre of [0.1, 0.3]) -> 0.382: stop.
    run, calls = _lookup({
        0.5: {"iou": 0.642, "pa": 0.782, "oii": 0.071},
        0.3: {"iou": 0.642, "pa": 0.798, "oii": 0.118},
        0.2: {"iou": 0.636, "pa": 0.840, "oii": 0.382},
    })
    res = oii_guidance(run, target=(0.3, 0.4), bounds=(0.1, 0.9))
    assert calls == pytest.approx([0.5, 0.3, 0.2])
    assert [s.oii for s in res.steps] == [0.071, 0.118, 0.382]
    assert res.converged and res.alpha == pytest.approx(0.2) and res.oii == 0.382
    assert res.steps[-1].metrics["pa"] == 0.840


def test_bisection_sequence_without_convergence():
    # OII always too high: alpha climbs 0.5, 0.7, 0.8, 0.85, 0.875 (midpoints of [alpha, 0.9])
    res = oii_guidance(lambda a: 0.9, max_steps=5)
    assert [s.alpha for s in res.steps] == pytest.approx([0.5, 0.7, 0.8, 0.85, 0.875])
    assert not res.converged
    assert res.alpha == pytest.approx(0.875)  # all equally far from the target: the latest
    assert res.steps[0].metrics == {}
    # OII always too low: alpha falls 0.5, 0.3, 0.2
    res = oii_guidance(lambda a: -0.5, max_steps=3)
    assert [s.alpha for s in res.steps] == pytest.approx([0.5, 0.3, 0.2])


def test_chosen_step_is_closest_to_target_when_not_converged():
    oiis = {0.5: 0.6, 0.7: 0.25, 0.6: 0.47}  # 0.5 too high -> 0.7 too low -> 0.6 too high
    res = oii_guidance(lambda a: oiis[round(a, 9)], max_steps=3)
    assert [s.alpha for s in res.steps] == pytest.approx([0.5, 0.7, 0.6])
    assert not res.converged
    assert res.alpha == pytest.approx(0.7) and res.oii == 0.25  # 0.05 below (vs 0.2 and 0.07 above)


def test_interval_is_closed_and_results_may_be_objects():
    res = oii_guidance(lambda a: SimpleNamespace(oii=0.4, iou=0.5))
    assert res.converged and len(res.steps) == 1 and res.steps[0].metrics.iou == 0.5
    res = oii_guidance(lambda a: 0.3, target=(0.3, 0.4), bounds=(0.0, 1.0))
    assert res.converged and res.alpha == 0.5
    # a one-element tensor, as Confusion.total().oii() returns: OII 0.6 > 0.4 moves alpha up (0.5 -> 0.7)
    res = oii_guidance(lambda a: torch.tensor([0.6 if a < 0.6 else 0.35], dtype=torch.float64))
    assert res.converged and res.alpha == pytest.approx(0.7) and [s.oii for s in res.steps] == [0.6, 0.35]


def test_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        oii_guidance(0.5)
    with pytest.raises(ValueError, match="target"):
        oii_guidance(lambda a: 0.0, target=(0.4, 0.3))
    with pytest.raises(ValueError, match="target"):
        oii_guidance(lambda a: 0.0, target=(0.3, 1.5))
    with pytest.raises(TypeError, match="bounds"):
        oii_guidance(lambda a: 0.0, bounds=0.5)
    with pytest.raises(ValueError, match="bounds"):
        oii_guidance(lambda a: 0.0, bounds=(0.9, 0.1))
    with pytest.raises(ValueError, match="max_steps"):
        oii_guidance(lambda a: 0.0, max_steps=0)
    with pytest.raises(TypeError, match="max_steps"):
        oii_guidance(lambda a: 0.0, max_steps=2.0)
    with pytest.raises(TypeError, match="oii"):
        oii_guidance(lambda a: "0.35")
    with pytest.raises(ValueError, match="oii"):
        oii_guidance(lambda a: {"iou": 0.5})
    with pytest.raises(ValueError, match="OII"):
        oii_guidance(lambda a: 2.0)
    with pytest.raises(ValueError, match="OII"):
        oii_guidance(lambda a: float("nan"))
