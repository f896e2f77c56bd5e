"""Weighted sums of losses (fastseg.losses.CombinedLoss, ``0.5 * FocalLoss() + DiceLoss()``).

Values and gradients are checked against the same weighted sum of the reference functions
(fastseg.reference, the independent oracle), each with the term's parameters, scope and
reduction. Which terms share a fused pass is checked against the rules worked out by hand for
each case (equal per-pixel parameters, one distance loss per pass, a distance-weighted CE alone
with the CE weight), and the number of engine calls is counted at the backend.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TRITON_DEVICE, requires_interpreter

import fastseg.losses as L
import fastseg.reference as R
from fastseg.edt import edt
from fastseg.engine import torch_path

T = dict(backend="torch")

# (combined loss, the same sum of reference calls, the passes worked out by hand)
CASES = {
    "focal+dice": (
        lambda: 0.5 * L.FocalLoss(gamma=2.0, **T) + L.DiceLoss(**T),
        lambda z, t, **kw: 0.5 * R.focal(z, t, gamma=2.0, **kw) + R.dice(z, t, ignore=kw["ignore"]),
        ((0, 1),),
    ),
    "scopes_and_reductions": (
        lambda: L.TverskyLoss(alpha=0.3, beta=0.7, scope="batch", **T) + L.DiceLoss(**T)
        + 2 * L.BCEDiceLoss(reduction="sum", **T),
        lambda z, t, **kw: R.tversky(z, t, alpha=0.3, beta=0.7, scope="batch", ignore=kw["ignore"])
        + R.dice(z, t, ignore=kw["ignore"]) + 2 * R.bce_dice(z, t, reduction="sum", **kw),
        ((0, 1, 2),),
    ),
    "margin+focal_tversky+distance": (
        lambda: L.AsymmetricMarginLoss(m=0.5, **T) + L.FocalTverskyLoss(**T) + 0.2 * L.DistanceLoss(**T),
        lambda z, t, **kw: R.asymmetric_margin(z, t, m=0.5, **kw) + R.focal_tversky(z, t, ignore=kw["ignore"])
        + 0.2 * R.distance_loss(z, t, ignore=kw["ignore"]),
        ((0, 1, 2),),
    ),
    "dibe+el+sensitivity": (
        lambda: L.DIBELoss(**T) + L.ELCrossEntropyLoss(gamma_ce=0.5, **T) + L.SensitivitySpecificityLoss(**T),
        lambda z, t, **kw: R.dibe(z, t, **kw) + R.el_ce(z, t, gamma_ce=0.5, **kw)
        + R.sensitivity_specificity(z, t, ignore=kw["ignore"]),
        ((0, 1, 2),),
    ),
    "different_focal_gammas": (  # both read FG_CE / BG_CE, with other exponents
        lambda: L.FocalLoss(gamma=2.0, **T) + 0.3 * L.FocalLoss(gamma=1.0, **T) + L.DiceLoss(**T),
        lambda z, t, **kw: R.focal(z, t, gamma=2.0, **kw) + 0.3 * R.focal(z, t, gamma=1.0, **kw)
        + R.dice(z, t, ignore=kw["ignore"]),
        ((0, 2), (1,)),
    ),
    "distance_map_ce_weight": (  # its CE weight is w (1 + Phi): no other CE term in its pass
        lambda: L.DistanceMapCELoss(**T) + L.BinaryCrossEntropyLoss(**T) + L.DiceLoss(**T),
        lambda z, t, **kw: R.distance_map_ce(z, t, **kw) + R.bce(z, t, **kw) + R.dice(z, t, ignore=kw["ignore"]),
        ((0, 2), (1,)),
    ),
    "two_distance_losses": (
        lambda: L.HausdorffDTLoss(**T) + L.DistanceLoss(**T) + L.BinaryCrossEntropyLoss(**T),
        lambda z, t, **kw: R.hausdorff_dt(z, t, **kw) + R.distance_loss(z, t, ignore=kw["ignore"])
        + R.bce(z, t, **kw),
        ((0, 2), (1,)),
    ),
}


def _inputs(seed=0, shape=(3, 1, 12, 11)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    t = (torch.rand(*shape, generator=g) < 0.2).to(torch.float64)
    t[1] = 0  # a crack-free image
    ignore = torch.rand(*shape, generator=g) < 0.1
    weight = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.5
    return z, t, ignore, weight


@pytest.mark.parametrize("case", CASES)
def test_value_gradient_and_passes_match_the_reference_sum(case):
    make, reference, passes = CASES[case]
    criterion = make()
    assert criterion.passes == passes
    z, t, ignore, weight = _inputs()
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    value = criterion(z1, t, ignore=ignore, weight=weight)
    expected = reference(z2, t, ignore=ignore, weight=weight)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    (value * 3).backward()
    (expected * 3).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-8, atol=1e-12)


def test_one_forward_and_one_backward_pass_for_terms_that_share(monkeypatch):
    calls = {"forward": 0, "backward": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch_path, "fused_loss_forward", counting("forward", torch_path.fused_loss_forward))
    monkeypatch.setattr(torch_path, "fused_loss_backward", counting("backward", torch_path.fused_loss_backward))
    z, t, _, _ = _inputs()
    z = z.requires_grad_()
    terms = [L.HybridFocalMarginLoss(**T), L.DiceLoss(scope="batch", **T), L.DistanceLoss(**T)]
    sum(terms)(z, t).backward()
    assert calls == {"forward": 1, "backward": 1}
    calls.update(forward=0, backward=0)
    sum(term(z, t) for term in terms).backward()  # the same terms called one by one: three passes each way
    assert calls == {"forward": 3, "backward": 3}


def test_precomputed_distance_goes_to_the_distance_term():
    z, t, ignore, _ = _inputs(1)
    crack = (t > 0.5) & ~ignore
    d = edt(crack, to="foreground", dtype=torch.float64)
    criterion = L.HybridFocalMarginDistanceLoss(**T) + L.DiceLoss(**T)
    expected = R.hybrid_focal_margin_distance(z, t, ignore=ignore, distance=d) + R.dice(z, t, ignore=ignore)
    torch.testing.assert_close(criterion(z, t, ignore=ignore, distance=d), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(criterion(z, t, ignore=ignore, distance=d * 2), expected, rtol=1e-10, atol=1e-12)  # ND: scale-free
    with pytest.raises(ValueError, match="distance is ambiguous"):
        (L.HausdorffDTLoss(**T) + L.DistanceLoss(**T))(z, t, distance=d)
    with pytest.raises(TypeError, match="distance must be None"):
        (L.FocalLoss(**T) + L.DiceLoss(**T))(z, t, distance=d)


def test_settings_that_differ_split_the_passes():
    z, t, _, _ = _inputs(2)
    p = torch.sigmoid(z)
    criterion = L.FocalLoss(from_logits=False, **T) + L.DiceLoss(**T) + L.JaccardLoss(from_logits=False, **T)
    assert criterion.passes == ((0, 2), (1,))
    expected = R.focal(p, t, from_logits=False) + R.dice(p, t) + R.jaccard(p, t, from_logits=False)
    torch.testing.assert_close(criterion(p, t), expected, rtol=1e-10, atol=1e-12)


def test_settings_changed_after_construction_regroup_the_passes():
    z, t, ignore, _ = _inputs(5)
    criterion = L.FocalLoss(**T) + L.DiceLoss(**T)
    assert criterion.passes == ((0, 1),)
    criterion.losses[0].reduction = "sum"
    criterion.losses[1].scope = "batch"
    expected = R.focal(z, t, ignore=ignore, reduction="sum") + R.dice(z, t, ignore=ignore, scope="batch")
    torch.testing.assert_close(criterion(z, t, ignore=ignore), expected, rtol=1e-10, atol=1e-12)
    p = torch.sigmoid(z)
    for loss in criterion.losses:
        loss.from_logits = False
    expected = R.focal(p, t, ignore=ignore, reduction="sum", from_logits=False) + R.dice(p, t, ignore=ignore, scope="batch", from_logits=False)
    torch.testing.assert_close(criterion(p, t, ignore=ignore), expected, rtol=1e-10, atol=1e-12)
    assert criterion.passes == ((0, 1),)
    criterion.losses[0].deterministic = False  # settings that differ: two passes
    torch.testing.assert_close(criterion(p, t, ignore=ignore), expected, rtol=1e-10, atol=1e-12)
    assert criterion.passes == ((0,), (1,))
    criterion.losses[1].reduction = "none"
    with pytest.raises(ValueError, match=r"terms\[1\] \(DiceLoss\) has reduction='none'"):
        criterion(z, t)
    criterion.losses[1].reduction = "mean"
    criterion.losses[0].scope = "image"  # not a scope of a pointwise loss: the term's own check
    with pytest.raises(ValueError, match="focal is a pointwise loss"):
        criterion(z, t)


def test_global_terms_share_one_pass_and_fall_back_to_the_batch_without_a_group():
    z, t, ignore, _ = _inputs(3)
    criterion = L.DiceLoss(scope="global", **T) + L.FocalLoss(scope="global", **T) + L.DiceLoss(**T)
    assert criterion.passes == ((0, 1), (2,))
    with pytest.warns(UserWarning, match="no process group"):
        value = criterion(z, t, ignore=ignore)
    expected = R.dice(z, t, ignore=ignore, scope="batch") + R.focal(z, t, ignore=ignore) + R.dice(z, t, ignore=ignore)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)


def test_arithmetic_builds_flat_weighted_sums():
    a, b, c = L.FocalLoss(), L.DiceLoss(), L.JaccardLoss()
    combined = 2 * (a + 0.5 * b) + c * 3
    assert combined.weights == (2.0, 1.0, 3.0)
    assert list(combined.losses) == [a, b, c]
    assert sum([a, b]).weights == (1.0, 1.0)
    assert L.CombinedLoss([(0.25, a), b]).weights == (0.25, 1.0)
    assert "weights=(2.0, 1.0, 3.0)" in repr(combined) and "FocalLoss(" in repr(combined)
    assert combined.state_dict() == {}


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: L.FocalLoss(reduction="none") + L.DiceLoss(), ValueError, "reduction"),
        (lambda: L.CombinedLoss([L.FocalLoss(), torch.nn.BCEWithLogitsLoss()]), TypeError, r"terms\[1\]"),
        (lambda: float("nan") * L.FocalLoss(), ValueError, "weight of term 0 must be finite"),
        (lambda: True * L.FocalLoss(), TypeError, "weight of term 0 must be a real number"),
        (lambda: L.FocalLoss() * "2", TypeError, "weight of term 0 must be a real number"),
        (lambda: L.CombinedLoss([]), ValueError, "at least one loss"),
        (lambda: L.FocalLoss() + L.DiceLoss() + 3, TypeError, "got int"),
    ],
    ids=["reduction_none", "not_a_fastseg_loss", "nan_weight", "bool_weight", "str_weight", "empty", "add_number"],
)
def test_bad_terms_raise_naming_what_is_wrong(build, error, match):
    with pytest.raises(error, match=match):
        build()


@requires_interpreter
def test_triton_kernels_evaluate_a_shared_pass():
    z, t, ignore, weight = (x.to(TRITON_DEVICE) for x in _inputs(4, shape=(2, 1, 9, 10)))
    z32 = z.float().requires_grad_()
    criterion = 0.5 * L.FocalLoss(backend="triton") + L.TverskyLoss(backend="triton") + L.DistanceLoss(backend="triton")
    assert criterion.passes == ((0, 1, 2),)
    value = criterion(z32, t, ignore=ignore, weight=weight)
    zr = z.clone().requires_grad_()
    expected = (0.5 * R.focal(zr, t, ignore=ignore, weight=weight) + R.tversky(zr, t, ignore=ignore)
                + R.distance_loss(zr, t, ignore=ignore))
    torch.testing.assert_close(value.double(), expected, rtol=2e-5, atol=1e-6)
    value.backward()
    expected.backward()
    torch.testing.assert_close(z32.grad.double(), zr.grad, rtol=2e-4, atol=1e-6)
