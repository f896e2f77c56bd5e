"""nn.Module losses (fastseg.losses): defaults, validation at construction, repr, and values.

Values are checked against the reference (fastseg.reference), the independent oracle, with the
module's defaults equal to the reference function's defaults.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import fastseg.functional as FS
import fastseg.losses as L
import fastseg.reference as R

CLASSES = [getattr(L, n) for n in L.__all__ if n not in ("FusedLoss", "CombinedLoss")]


def test_one_module_per_functional_loss():
    assert sorted(c.loss_name for c in CLASSES) == sorted(FS.__all__)
    assert L.HybridFocalMarginLoss.loss_name == "hybrid_focal_margin"
    assert L.BinaryCrossEntropyLoss.loss_name == "bce"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_match_reference_and_value(cls):
    ref_fn = getattr(R, cls.loss_name)
    ref_params = inspect.signature(ref_fn).parameters
    init = inspect.signature(cls).parameters
    for name, p in init.items():
        if name in ("backend", "deterministic"):
            continue
        if name == "scope" and name not in ref_params:  # pointwise: the reference's batch mean
            assert FS.kind(cls.loss_name) == "pointwise" and p.default == "batch"
            continue
        assert ref_params[name].default == p.default, name
    module = cls(backend="torch")
    assert dict(module.params) == {n: p.default for n, p in init.items() if n not in ("from_logits", "scope", "reduction", "backend", "deterministic")}
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
