"""nn.Module losses (fastseg.losses): defaults, validation at construction, repr, and values.

Values are checked against the reference (fastseg.reference), the independent oracle, with the
module's defaults equal to the reference function's defaults.
"""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch

import fastseg.functional as FS
import fastseg.losses as L
import fastseg.reference as R

CLASSES = [getattr(L, n) for n in L.__all__ if n not in ("FusedLoss", "CombinedLoss", "build")]


def test_one_module_per_functional_loss():
    assert sorted(c.loss_name for c in CLASSES) == sorted(FS.__all__)
    assert L.HybridFocalMarginLoss.loss_name == "hybrid_focal_margin"
    assert L.BinaryCrossEntropyLoss.loss_name == "bce"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_match_reference_and_value(cls):
    ref_fn = getattr(R, cls.loss_name)
    ref_params = inspect.signature(ref_fn).parameters
    init = inspect.signature(cls).parameters
    assert init["process_group"].default is None  # help() lists every keyword __init__ takes
    for name, p in init.items():
        if name in ("backend", "deterministic", "process_group"):  # module settings the reference lacks
            continue
        if name == "scope" and name not in ref_params:  # pointwise: the reference's batch mean
            assert FS.kind(cls.loss_name) == "pointwise" and p.default == "batch"
            continue
        assert ref_params[name].default == p.default, name
    module = cls(backend="torch")
    assert dict(module.params) == {n: p.default for n, p in init.items() if n not in ("from_logits", "scope", "reduction", "backend", "deterministic", "process_group")}
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 6, 7, generator=gen, dtype=torch.float64)
    t = torch.rand(2, 1, 6, 7, generator=gen) < 0.3
    ignore = torch.rand(2, 1, 6, 7, generator=gen) < 0.1
    torch.testing.assert_close(module(z, t, ignore=ignore), ref_fn(z, t, ignore=ignore), rtol=1e-10, atol=0)


def test_module_forwards_parameters_and_settings():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.rand(3, 2, 5, 5, generator=gen, dtype=torch.float64)
    w = torch.rand(3, 2, 5, 5, generator=gen, dtype=torch.float64)
    loss = L.HybridFocalMarginLoss(m=1.0, gamma_f=1.5, symmetric=True, lam=0.3, scope="batch", reduction="sum", backend="torch")
    expected = R.hybrid_focal_margin(z, t, m=1.0, gamma_f=1.5, symmetric=True, lam=0.3, scope="batch", reduction="sum", weight=w)
    torch.testing.assert_close(loss(z, t, weight=w), expected, rtol=1e-10, atol=0)
    focal = L.FocalLoss(gamma=1.0, reduction="none", backend="torch")
    torch.testing.assert_close(focal(z, t), R.focal(z, t, gamma=1.0, reduction="none"), rtol=1e-10, atol=1e-15)
    p = torch.sigmoid(z.detach())
    dice = L.DiceLoss(from_logits=False, backend="torch")
    torch.testing.assert_close(dice(p, t), R.dice(p, t, from_logits=False), rtol=1e-9, atol=0)


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (L.HybridFocalMarginLoss, dict(m=-0.5), ValueError, "m must be >= 0"),
        (L.HybridFocalMarginLoss, dict(symmetric="yes"), TypeError, "symmetric must be a bool"),
        (L.HybridFocalMarginLoss, dict(reduction="none"), ValueError, "reduction must be one of 'mean', 'sum'"),
        (L.UnifiedFocalLoss, dict(delta=1.5), ValueError, "delta must be <= 1"),
        (L.UnifiedFocalLoss, dict(gamma="big"), TypeError, "gamma must be a real number"),
        (L.DiceLoss, dict(eps=0), ValueError, "eps must be > 0"),
        (L.DiceLoss, dict(scope="pixel"), ValueError, "scope must be one of"),
        (L.TverskyLoss, dict(alpha=0.3, delta=0.7), ValueError, "either delta"),
        (L.FocalTverskyLoss, dict(gamma=-1), ValueError, "gamma must be >= 0"),
        (L.ComboLoss, dict(theta=2), ValueError, "theta must be <= 1"),
        (L.DIBELoss, dict(gamma=0), ValueError, "gamma must be > 0"),
        (L.AdaptiveWCELoss, dict(q="cubic"), ValueError, "q must be one of"),
        (L.HolisticLoss, dict(base=1.0), ValueError, "base must be > 1"),
        (L.BinaryCrossEntropyLoss, dict(scope="image"), ValueError,
         "bce is a pointwise loss: .* scope must be 'batch' or 'global'"),
        (L.FocalLoss, dict(scope="pixel"), ValueError, "scope must be one of 'batch', 'global'"),
        (L.FocalLoss, dict(process_group=object()), ValueError, "process_group applies to scope='global' only"),
        (L.DiceLoss, dict(gama=1.0), TypeError, "unexpected keyword argument"),
        (L.DiceLoss, dict(backend="gpu"), ValueError, "backend must be one of"),
        (L.DiceLoss, dict(from_logits=1), TypeError, "from_logits must be a bool"),
        (L.DiceLoss, dict(deterministic=None), TypeError, "deterministic must be a bool"),
    ],
)
def test_construction_errors(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_repr():
    assert repr(L.HybridFocalMarginLoss(m=1.0)) == (
        "HybridFocalMarginLoss(m=1.0, gamma_f=2.0, gamma=0.75, delta=0.7, symmetric=False, lam=None, eps=1.0, "
        "scope='image', reduction='mean')"
    )
    assert repr(L.BinaryCrossEntropyLoss(reduction="none")) == "BinaryCrossEntropyLoss(reduction='none')"
    assert repr(L.FocalLoss(gamma=1.0, scope="global")) == (
        "FocalLoss(gamma=1.0, lam=None, scope='global', reduction='mean')"
    )
    assert repr(L.DiceLoss(scope="batch", backend="torch", from_logits=False)) == (
        "DiceLoss(eps=1.0, from_logits=False, scope='batch', reduction='mean', backend='torch')"
    )


def test_repr_shows_plain_numbers():
    """A hyperparameter given as a one-element tensor or a NumPy scalar reads as its number."""
    import numpy as np

    assert repr(L.FocalLoss(gamma=torch.tensor(3.0))) == "FocalLoss(gamma=3.0, lam=None, reduction='mean')"
    assert repr(L.FocalLoss(gamma=np.float64(2.5))) == "FocalLoss(gamma=2.5, lam=None, reduction='mean')"


def test_parameters_are_read_only_so_copies_cannot_diverge(tmp_path):
    """A changed value would be ignored by the module's plan but used by its deepcopy or pickle."""
    loss = L.HybridFocalMarginLoss(m=0.5, backend="torch")
    with pytest.raises(TypeError, match="fixed at construction"):
        loss.params["m"] = 1.5
    with pytest.raises(TypeError, match="fixed at construction"):
        loss.params.update(m=1.5)
    z, t = _inputs(seed=4)[:2]
    for copied in (copy.deepcopy(loss), pickle.loads(pickle.dumps(loss))):
        assert dict(copied.params) == dict(loss.params)
        with pytest.raises(TypeError, match="fixed at construction"):
            copied.params["m"] = 1.5
        torch.testing.assert_close(copied(z, t), R.hybrid_focal_margin(z, t, m=0.5), rtol=1e-10, atol=0)


def test_settings_changed_after_construction_are_used_and_checked():
    """Unlike the parameters, the settings may change (``loss.reduction = "sum"``); each call reads
    and checks them, so a compound loss set to ``reduction="none"`` raises instead of returning
    per-group values."""
    z, t = _inputs(seed=5)[:2]
    combo = L.ComboLoss(backend="torch")
    combo.reduction, combo.scope = "sum", "batch"
    torch.testing.assert_close(combo(z, t), R.combo(z, t, reduction="sum", scope="batch"), rtol=1e-10, atol=0)
    combo.reduction = "none"
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum'"):
        combo(z, t)
    focal = L.FocalLoss(backend="torch")
    focal.scope = "image"
    with pytest.raises(ValueError, match="focal is a pointwise loss"):
        focal(z, t)


def test_signature_and_doc():
    sig = inspect.signature(L.UnifiedFocalLoss)
    assert list(sig.parameters)[:5] == ["lam", "delta", "gamma", "asymmetric", "eps"]
    assert inspect.signature(L.FocalLoss).parameters["scope"].default == "batch"
    assert inspect.signature(L.DiceLoss).parameters["scope"].default == "image"
    assert "fastseg.functional.unified_focal" in L.UnifiedFocalLoss.__doc__


def test_no_parameters_or_buffers_and_trainable_with_model():
    loss = L.DIBELoss(backend="torch")
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    t = torch.rand(2, 1, 8, 8) < 0.2
    loss(model(x), t).backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


def _inputs(seed=0, shape=(2, 1, 10, 9)):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=gen, dtype=torch.float64) * 2
    t = (torch.rand(*shape, generator=gen) < 0.25).to(torch.float64)
    ignore = torch.rand(*shape, generator=gen) < 0.1
    w = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.5
    return z, t, ignore, w


def _value_and_grad(loss, z, t, ignore):
    z = z.clone().requires_grad_()
    value = loss(z, t, ignore=ignore)
    (value * 3).backward()
    return value.detach(), z.grad


# every module class at its defaults, a few with parameters their plans close over, and sums
PICKLE_CASES = {c.__name__: c for c in CLASSES} | {
    "FocalLoss(gamma=1)": lambda: L.FocalLoss(gamma=1.0, lam=0.3),
    "HausdorffDTLoss(alpha=1.5)": lambda: L.HausdorffDTLoss(alpha=1.5),
    "focal+dice": lambda: 0.5 * L.FocalLoss() + L.DiceLoss(),
    "two_passes_with_distance": lambda: L.HausdorffDTLoss() + 0.2 * L.DistanceLoss() + L.FocalLoss(gamma=1.0),
    "difference": lambda: L.FocalLoss() - L.TverskyLoss(alpha=0.3, beta=0.7) / 2,
}


@pytest.mark.parametrize("case", PICKLE_CASES)
def test_pickle_torch_save_and_deepcopy_keep_value_and_gradient(case, tmp_path):
    loss = PICKLE_CASES[case]()
    z, t, ignore, _ = _inputs()
    expected = _value_and_grad(loss, z, t, ignore)
    torch.save(loss, tmp_path / "loss.pt")
    copies = {
        "pickle": pickle.loads(pickle.dumps(loss)),
        "torch.save": torch.load(tmp_path / "loss.pt", weights_only=False),
        "deepcopy": copy.deepcopy(loss),
    }
    for how, other in copies.items():
        assert type(other) is type(loss) and repr(other) == repr(loss), how
        if isinstance(loss, L.CombinedLoss):
            assert other.passes == loss.passes, how
        value, grad = _value_and_grad(other, z, t, ignore)
        torch.testing.assert_close(value, expected[0], rtol=0, atol=0, msg=lambda m: f"{how}: {m}")
        torch.testing.assert_close(grad, expected[1], rtol=0, atol=0, msg=lambda m: f"{how}: {m}")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_weight_is_read_or_refused(cls):
    """A loss without a pointwise term (the region losses, the distance loss) refuses a weight map
    instead of ignoring it; every other loss weights as the reference does."""
    module = cls(backend="torch")
    z, t, ignore, w = _inputs(1)
    if FS.kind(cls.loss_name) == "region":
        with pytest.raises(ValueError, match="weight must be None .* no pointwise term to weight"):
            module(z, t, ignore=ignore, weight=w)
        assert not module.reads_weight
        return
    expected = getattr(R, cls.loss_name)(z, t, ignore=ignore, weight=w)
    assert not torch.allclose(expected, getattr(R, cls.loss_name)(z, t, ignore=ignore))  # the weight matters
    torch.testing.assert_close(module(z, t, ignore=ignore, weight=w), expected, rtol=1e-10, atol=1e-12)
    assert module.reads_weight


@pytest.mark.parametrize("name", FS.REGION)
def test_region_functions_refuse_a_weight(name):
    """The functional form and the reference refuse a weight map the region loss would leave
    unused, as the module does."""
    z, t, ignore, w = _inputs(3)
    for fn in (getattr(FS, name), getattr(R, name)):
        with pytest.raises(ValueError, match=f"weight must be None for .*{name if fn is getattr(FS, name) else ''}"):
            fn(z, t, ignore=ignore, weight=w)
        fn(z, t, ignore=ignore, weight=None)  # the same call without the weight is valid


def test_combined_weight_goes_to_the_terms_that_read_it():
    z, t, ignore, w = _inputs(2)
    criterion = L.FocalLoss(backend="torch") + L.DiceLoss(backend="torch")
    expected = R.focal(z, t, ignore=ignore, weight=w) + R.dice(z, t, ignore=ignore)
    torch.testing.assert_close(criterion(z, t, ignore=ignore, weight=w), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="weight must be None .* no pointwise term to weight"):
        (L.DiceLoss() + 0.1 * L.DistanceLoss())(z, t, weight=w)
    assert criterion.reads_weight and not (L.DiceLoss() + 0.1 * L.DistanceLoss()).reads_weight


@pytest.mark.parametrize(
    ("make", "reference"),
    [
        (lambda: L.FocalLoss() - L.DiceLoss(), lambda z, t: R.focal(z, t) - R.dice(z, t)),
        (lambda: -L.DiceLoss(), lambda z, t: -R.dice(z, t)),
        (lambda: L.FocalLoss() / 2, lambda z, t: R.focal(z, t) / 2),
        (lambda: (L.FocalLoss() + L.DiceLoss()) / 4 - 0.5 * L.JaccardLoss(),
         lambda z, t: (R.focal(z, t) + R.dice(z, t)) / 4 - 0.5 * R.jaccard(z, t)),
        (lambda: -(L.FocalLoss() - L.DiceLoss()), lambda z, t: -(R.focal(z, t) - R.dice(z, t))),
    ],
    ids=["loss-loss", "neg", "div", "sum/number-loss", "neg_of_difference"],
)
def test_subtraction_negation_and_division(make, reference):
    z, t, _, _ = _inputs(3)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    value, expected = make()(z1, t), reference(z2, t)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    (value * 3).backward()
    (expected * 3).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: L.FocalLoss() - 1, TypeError, "only a fastseg loss can be subtracted"),
        (lambda: 1 - L.FocalLoss(), TypeError, "unsupported operand"),
        (lambda: L.FocalLoss() / 0, ZeroDivisionError, "divisor must be nonzero"),
        (lambda: L.FocalLoss() / "2", TypeError, "divisor must be a real number"),
        (lambda: 2 / L.FocalLoss(), TypeError, "unsupported operand"),
    ],
    ids=["minus_number", "number_minus", "div_zero", "div_str", "number_div"],
)
def test_arithmetic_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("form", ["functional", "reference", "module"])
def test_nan_targets_and_non_finite_weights_are_refused(form):
    """A NaN label or weight is a data error (a GradScaler would skip every step it poisons); a
    NaN where a pixel is ignored is no label at all, and a NaN logit propagates (an fp16 overflow)."""
    z, t, ignore, w = _inputs(4)
    fn = {"functional": lambda *a, **k: FS.focal(*a, backend="torch", **k), "reference": R.focal,
          "module": L.FocalLoss(backend="torch")}[form]
    bad_t = t.clone()
    bad_t[0, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        fn(z, bad_t)
    ignored = torch.zeros_like(ignore)
    ignored[0, 0, 2, 3] = True
    assert torch.isfinite(fn(z, bad_t, ignore=ignored))
    for value in (float("nan"), float("inf")):
        bad_w = w.clone()
        bad_w[1, 0, 0, 0] = value
        with pytest.raises(ValueError, match="weight must be non-negative and finite"):
            fn(z, t, weight=bad_w)
    bad_z = z.clone()
    bad_z[0, 0, 0, 0] = float("nan")
    assert torch.isnan(fn(bad_z, t))


@pytest.mark.parametrize("form", ["functional", "module", "combined"])
def test_a_target_or_weight_that_requires_grad_is_refused_not_dropped(form):
    """The fused passes differentiate with respect to the input only: a target or weight that asks
    for a gradient (a teacher's soft labels, a learned weight map) raises instead of getting none,
    and the same call detached, or under no_grad, runs. The reference gives both gradients."""
    z, t, ignore, w = _inputs(5)
    fn = {"functional": lambda *a, **k: FS.focal(*a, backend="torch", **k), "module": L.FocalLoss(backend="torch"),
          "combined": L.FocalLoss(backend="torch") + L.DiceLoss(backend="torch")}[form]
    soft, weight = t.clone().requires_grad_(), w.clone().requires_grad_()
    for kwargs, name in (({"target": soft}, "target"), ({"target": t, "weight": weight}, "weight")):
        with pytest.raises(ValueError, match=f"{name} requires grad, .* input only .* {name}.detach"):
            fn(z, **kwargs)
        with torch.no_grad():
            assert torch.isfinite(fn(z, **kwargs))
    expected = R.focal(z, soft.detach(), weight=weight.detach())
    if form == "combined":
        expected = expected + R.dice(z, soft.detach())
    torch.testing.assert_close(fn(z, soft.detach(), weight=weight.detach()), expected, rtol=1e-10, atol=1e-12)
    R.focal(z, soft, weight=weight).backward()
    assert soft.grad is not None and bool(soft.grad.abs().sum() > 0) and weight.grad is not None


def test_the_base_class_is_not_a_loss():
    with pytest.raises(TypeError, match="FusedLoss is a base class"):
        L.FusedLoss()


# ----------------------------------------------------------------------------------------------
# L.build: loss modules from configurations
# ----------------------------------------------------------------------------------------------


def _reference_value(terms, z, t):
    """``sum w * fastseg.reference.<name>(z, t, **params)`` in float64."""
    return sum(w * getattr(R, name)(z.double(), t, **params) for w, name, params in terms)


@pytest.mark.parametrize(
    "config, terms",
    [
        ("dice", [(1.0, "dice", {})]),
        ("HybridFocalMarginLoss", [(1.0, "hybrid_focal_margin", {})]),
        ("0.5*focal + dice", [(0.5, "focal", {}), (1.0, "dice", {})]),
        ("2 * TverskyLoss+0.25*bce", [(2.0, "tversky", {}), (0.25, "bce", {})]),
        ({"name": "focal", "gamma": 3.0, "scope": "batch"}, [(1.0, "focal", {"gamma": 3.0})]),
        ({"name": "dice", "weight": 0.5, "eps": 0.1}, [(0.5, "dice", {"eps": 0.1})]),
        ([{"name": "hybrid_focal_margin", "m": 1.0}, {"name": "distance_loss", "weight": 0.5}, "0.1*jaccard"],
         [(1.0, "hybrid_focal_margin", {"m": 1.0}), (0.5, "distance_loss", {}), (0.1, "jaccard", {})]),
        ("1e+1*dice + 2.5E-1 * focal", [(10.0, "dice", {}), (0.25, "focal", {})]),
    ],
    ids=["name", "class-name", "sum", "sum-spaces", "mapping", "weighted-mapping", "list", "exponents"],
)
def test_build_equals_the_reference_sum(config, terms):
    z, t = _inputs(seed=3)[:2]
    loss = L.build(config)
    assert isinstance(loss, L.FusedLoss) == (len(terms) == 1 and terms[0][0] == 1.0)
    torch.testing.assert_close(loss(z, t).double(), _reference_value(terms, z, t), rtol=1e-5, atol=1e-7)


def test_build_shares_passes_as_the_arithmetic_does():
    built = L.build([{"name": "focal", "weight": 0.5}, "dice", {"name": "distance_loss", "weight": 0.1}])
    by_hand = 0.5 * L.FocalLoss() + L.DiceLoss() + 0.1 * L.DistanceLoss()
    assert built.passes == by_hand.passes == ((0, 1, 2),)


@pytest.mark.parametrize(
    "config, error, match",
    [
        ("dise", ValueError, r"^config: unknown loss 'dise'; one of bce, .*dice"),
        ("focal+", ValueError, r"term 1 of 'focal\+' names no loss"),
        ("x*focal", ValueError, r"must be \[weight\*\]name"),
        ({"gamma": 2.0}, ValueError, "needs a 'name' key"),
        ({"name": "focal", "gama": 2.0}, TypeError, "unexpected keyword argument.*gama; accepted: .*gamma"),
        ({"name": "focal", "weight": "half"}, TypeError, r"config\['weight'\] must be a real number"),
        ({"name": 3}, TypeError, r"config\['name'\] must be a str"),
        ([], ValueError, "empty list"),
        ([3], TypeError, r"config\[0\] must be a str or a mapping"),
        (3, TypeError, "config must be a loss name"),
    ],
)
def test_build_errors(config, error, match):
    with pytest.raises(error, match=match):
        L.build(config)
