"""Float32 accuracy where cancellation or overflow used to cost it (found by differential fuzzing).

Each case compares the fused loss in float32 with the float64 reference on inputs where an earlier
formulation lost the answer: confusion sums rebuilt by subtraction, ``sigmoid(z - m) - 1`` on
confident pixels, and ``exp(m)`` overflowing for large margins.
"""

import functools
import math

import pytest
import torch

import fastseg.functional as FS
import fastseg.reference as R
from conftest import TRITON_DEVICE

#: The Triton kernels run on the GPU where there is one, else under the interpreter on CPU tensors.
BACKENDS = ["torch", "triton"]


def _value_and_grad(fn, x, t, **kw):
    device = TRITON_DEVICE if kw.get("backend") == "triton" else "cpu"
    x = x.detach().to(device).clone().requires_grad_(True)
    value = fn(x, t.to(device), **kw)
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad.double().cpu()


def _relative(got, want):
    return (got - want).abs().max().item() / want.abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size, center", [(16, 16.0), (64, 16.0), (128, 12.0)])
def test_unified_focal_on_a_confidently_found_all_crack_image(size, center, backend):
    """The background class's TP is ``sum (1-p)(1-t) = 0`` here. Rebuilt as
    ``COUNT - SUM_P - SUM_T + TP`` from float32 sums it was their round-off, which
    ``eps = 1e-7`` does not hide: 0.0003 instead of 0.25 at 256x256."""
    g = torch.Generator().manual_seed(size)
    z = center + torch.randn(1, 1, size, size, generator=g)
    t = torch.ones(1, 1, size, size)
    want, want_grad = _value_and_grad(R.unified_focal, z.double(), t)
    got, got_grad = _value_and_grad(FS.unified_focal, z, t, backend=backend)
    assert got == pytest.approx(want, rel=1e-4)
    assert _relative(got_grad, want_grad) <= 2e-3  # the float32 reference itself is 7e-4 off at 128x128


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name, kw",
    [("tversky", {"alpha": 1.0, "beta": 0.0, "eps": 1e-6}), ("focal_tversky", {}), ("dibe_reg", {}), ("jaccard", {}),
     ("dice", {})],
)
def test_confusion_losses_of_a_nearly_perfect_all_crack_image(name, kw, backend):
    """FN is a hundred-thousandth of ``sum t`` here. As ``SUM_T - TP`` of float32 sums it kept few
    digits (focal Tversky and DIBE_Reg 1e-3 off, Tversky(1, 0) negative); summed directly the fused
    loss is as close to the float64 one as the float32 reference, up to the round-off of float32
    sums of 7e4 terms (1e-6)."""
    g = torch.Generator().manual_seed(1)
    z = torch.empty(1, 1, 70001).uniform_(5.0, 80.0, generator=g)
    t = torch.ones(1, 1, 70001)
    want = getattr(R, name)(z.double(), t, **kw).item()
    own_error = abs(getattr(R, name)(z, t, **kw).item() - want)
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    got = getattr(FS, name)(z.to(device), t.to(device), backend=backend, **kw).item()
    assert got >= 0
    assert abs(got - want) <= 1.5 * own_error + 1e-6 * abs(want) + 1e-12, (got, want, own_error)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss, m", [("bce", 0.0), ("asymmetric_margin", 0.5), ("focal_margin", 1.5)])
def test_foreground_gradient_of_confident_pixels(loss, m, backend):
    """``d(-log sigmoid(z - m))/dz = -sigmoid(m - z)``: about ``-exp(m - z)``, never 0 (as
    ``sigmoid(z - m) - 1`` it was 0 from z = 17 on in float32)."""
    z = torch.tensor([10.0, 15.0, 17.0, 20.0, 25.0]).reshape(1, 1, 5)
    t = torch.ones(1, 1, 5)
    kw = {} if loss == "bce" else {"m": m}
    _, want = _value_and_grad(getattr(R, loss), z.double(), t, **kw)
    _, got = _value_and_grad(getattr(FS, loss), z, t, backend=backend, **kw)
    assert (got < 0).all()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probability_gradient_next_to_one(backend):
    """``from_logits=False`` chains ``dz/dp = 1/(p(1-p))``: the logit gradient must keep its digits
    for ``dL/dp = -1/(N p)`` to survive at ``p = 1 - 2**-24``."""
    p = torch.tensor([0.999999, 1 - 2**-24, 0.5, 0.9]).reshape(1, 1, 4)
    t = torch.ones(1, 1, 4)
    _, want = _value_and_grad(R.bce, p.double(), t, from_logits=False)
    _, got = _value_and_grad(FS.bce, p, t, from_logits=False, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend", BACKENDS + ["inductor"])
@pytest.mark.parametrize("m", [89.0, 100.0, 500.0])
def test_margins_beyond_float32_exp_range(m, backend):
    """``exp(m)`` overflows float32 above m = 88.7; ``sigmoid(z - m)`` and ``softplus(m - z)`` do not."""
    z = torch.tensor([0.0, 100.0, -100.0, 3.0, 30.0, 600.0]).reshape(1, 1, 6)
    t = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0]).reshape(1, 1, 6)
    want, want_grad = _value_and_grad(R.asymmetric_margin, z.double(), t, m=m)
    got, got_grad = _value_and_grad(FS.asymmetric_margin, z, t, m=m, backend=backend)
    assert got == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fn", [R.bce, FS.bce], ids=["reference", "fused"])
def test_saturated_probabilities_give_bce_loss_value(fn, dtype):
    """``from_logits=False`` with p exactly 0 or 1: logs clamped at -100 as ``torch.nn.BCELoss``
    does, in every dtype (float32 once clamped at its smallest normal float, -87.3)."""
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.3, 1e-30, 1 - 1e-7], dtype=dtype).reshape(1, 1, 7)
    t = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], dtype=dtype).reshape(1, 1, 7)
    want = torch.nn.functional.binary_cross_entropy(p, t)
    got = fn(p, t, from_logits=False)
    torch.testing.assert_close(got.to(dtype), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype, p", [(torch.float64, 4.4e-17), (torch.float32, 1e-9)])
@pytest.mark.parametrize("fn", [R.bce, FS.bce, R.el_ce, FS.el_ce], ids=["bce-ref", "bce-fused", "el_ce-ref", "el_ce-fused"])
def test_background_probabilities_that_one_minus_p_rounds_away(fn, dtype, p):
    """``-log(1 - p)`` of a background pixel with p below 1 - p's rounding (2^-53 / 2^-24): as
    ``log(1 - p)`` it was 0 in the reference, and ``(-log(1 - p))^0.25`` 0 instead of 8e-5 (float64)
    or 0.0056 (float32); ``log1p(-p)`` keeps it (the hand values use math.log1p)."""
    probs = torch.tensor([p, 0.25], dtype=dtype).reshape(1, 1, 2)
    t = torch.zeros(1, 1, 2)
    gce = 0.25 if fn in (R.el_ce, FS.el_ce) else 1.0
    kw = {"gamma_ce": gce} if gce != 1.0 else {}
    got = fn(probs, t, from_logits=False, reduction="none", **kw).reshape(-1)
    want = [(-math.log1p(-x)) ** gce for x in (probs[0, 0, 0].item(), 0.25)]
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=0)


@pytest.mark.parametrize("labels", [torch.float32, torch.bool], ids=["soft_dtype", "bool"])
@pytest.mark.parametrize("backend", BACKENDS + ["inductor"])
@pytest.mark.parametrize("name", ["sensitivity_specificity", "hausdorff_dt", "squared_dice"])
def test_squared_error_of_confident_crack_pixels(name, backend, labels):
    """``p - t`` on a crack pixel is ``-(1 - p)``: as ``sigmoid(z) - 1`` in float32 it rounds to a
    multiple of 2^-24 (or to 0 from z = 17 on), so ``(p - t)^2`` and its gradient lost every digit on
    confidently found cracks; taken as ``(1 - t) - q`` it keeps them."""
    z = torch.tensor([[6.0, 9.0, 12.0, 16.0, 20.0, 14.0, -3.0, 0.5, -9.0, 2.0]]).reshape(1, 1, 2, 5)
    t = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 2, 5).to(labels)
    want, want_grad = _value_and_grad(getattr(R, name), z.double(), t)
    got, got_grad = _value_and_grad(getattr(FS, name), z, t, backend=backend)
    assert got == pytest.approx(want, rel=1e-5)
    crack = t.reshape(-1) > 0.5
    assert (got_grad.reshape(-1)[crack] < 0).all()
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize(
    "name", ["dice", "squared_dice", "jaccard", "tversky", "focal_tversky", "dibe_reg", "log_cosh_dice", "exp_log",
             "unified_focal", "distance_loss"],
)
@pytest.mark.parametrize("labels", [torch.float32, torch.bool], ids=["soft_dtype", "bool"])
def test_region_losses_of_a_nearly_perfect_prediction(name, backend, labels):
    """A loss ``1 - index`` with the index 4e-6 short of 1: as ``1 - (hits + eps)/(hits + misses + eps)``
    in float32 it kept one or two digits (and so did its gradient); as ``misses/(hits + misses + eps)``
    (and ``-log index`` as ``log1p(misses/(hits + eps))``) it keeps them all, in the float32 reference too."""
    g = torch.Generator().manual_seed(5)
    t = torch.zeros(2, 1, 48, 48)
    t[0, :, 20:23, :] = 1
    t[1, :, :, 30] = 1
    z = torch.where(t > 0, 1.0, -1.0) * (15.0 + 3.0 * torch.rand(t.shape, generator=g))
    t = t.to(labels)
    want, want_grad = _value_and_grad(getattr(R, name), z.double(), t)
    fn = getattr(R, name) if backend == "reference" else getattr(FS, name)
    kw = {} if backend == "reference" else {"backend": backend}
    got, got_grad = _value_and_grad(fn, z, t, **kw)
    assert got == pytest.approx(want, rel=2e-5)
    assert _relative(got_grad, want_grad) <= 2e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["dice", "squared_dice", "jaccard", "tversky", "focal_tversky", "dibe_reg", "log_cosh_dice",
             "distance_loss", "hybrid_focal_margin_distance"],
)
@pytest.mark.parametrize("scope", ["image", "batch"])
def test_region_losses_of_crack_free_images_keep_their_gradient(name, scope, backend):
    """Crack-free images under random logits: ``hits + eps`` is 1 against ``misses`` of 2000, and
    autograd's quotient rule for ``misses/(hits + misses + eps)``, ``1/D - misses/D^2``, kept 3 of
    the gradient's 7 float32 digits (so did the float32 reference); seed 003's loss summing ND added
    ``d/dFP + ND d/dD_FP`` per pixel, which cancel where ND = 1. Found by ``fastseg validate``'s
    crack-free variant."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 37, 53, generator=g, dtype=torch.float64) * 3
    t = torch.zeros(z.shape, dtype=torch.uint8)
    want, want_grad = _value_and_grad(getattr(R, name), z, t, scope=scope)
    got, got_grad = _value_and_grad(getattr(FS, name), z.float(), t, scope=scope, backend=backend)
    assert got == pytest.approx(want, rel=1e-6)
    assert _relative(got_grad, want_grad) <= 2e-6


@pytest.mark.parametrize("backend", BACKENDS + ["inductor"])
@pytest.mark.parametrize("name, kw", [("el_ce", dict(gamma_ce=0.1)), ("exp_log", dict(gamma_ce=0.0625, theta=0.9))])
def test_el_powers_of_confident_pixels_beyond_float32_underflow(name, kw, backend):
    """``(-log p)^gce`` with ``-log p = e^-|z|`` below float32's smallest normal number (|z| > 87):
    ``e^(-gce |z|)`` is 1e-5 at gce = 0.1 and |z| = 110. The torch path's ``tiny^gce`` (2e-4 there)
    and the kernels' 0 put exp_log's value 3 % and 0.5 % off and the gradient 2e-3 (el_ce: 1.6e-3
    and 9e-5, gradient 1.5e-4); now all are within 1.3e-7. Found by a float32 sweep."""
    g = torch.Generator().manual_seed(1)
    t = torch.rand(2, 1, 6, 7, generator=g) < 0.3
    z = torch.where(t, 1.0, -1.0) * (90.0 + 40.0 * torch.rand(t.shape, generator=g, dtype=torch.float64))
    z[0, 0, 0] = torch.linspace(-3.0, 3.0, 7)  # a few ordinary pixels
    want, want_grad = _value_and_grad(getattr(R, name), z, t, **kw)
    got, got_grad = _value_and_grad(getattr(FS, name), z.float(), t, backend=backend, **kw)
    assert got == pytest.approx(want, rel=1e-5)
    assert _relative(got_grad, want_grad) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_el_powers_of_logits_whose_log_underflows(dtype):
    """The oracle itself: ``-log p = e^-|z|`` underflows beyond |z| = 708 (float64) or 87 (float32)
    and was clamped to the smallest normal float, ``tiny^gce``: 0.49 instead of e^-10 for
    gce = 0.001 at |z| = 1e4. Hand values: ``(-log p)^gce = e^(gce log(log1p(e^-|z|)))`` = e^(-gce |z|)
    to float precision there, and math.log1p where it does not underflow. Found by a fuzz campaign."""
    z = torch.tensor([-1e4, 1e4, -120.0, 120.0, -3.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])
    for gce in (0.001, 0.01, 0.3):
        got = R.el_ce(z.to(dtype).reshape(1, 1, 5), t.reshape(1, 1, 5), gamma_ce=gce, reduction="none").reshape(-1)
        want = [math.exp(-gce * 1e4)] * 2 + [math.exp(-gce * 120.0)] * 2 + [math.log1p(math.exp(-3.0)) ** gce]
        f32 = dtype == torch.float32  # e^-100 is a float32 subnormal: its spacing, 1.4e-45, is the absolute error
        assert got.tolist() == pytest.approx(want, rel=1e-6 if f32 else 1e-12, abs=1.5e-45 if f32 else 0), gce


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize("gce", [0.01, 0.3])
def test_el_probabilities_of_exactly_0_and_1_read_as_the_clamped_logit(gce, backend):
    """A probability of exactly 1 (0 for the background term) has ``-log p = 0``; the fused path
    evaluates the clamped logit 100 (``log(1-p) = -100``, torch.nn.BCELoss's clamp), whose
    ``-log p = e^-100``, and the reference reads it the same way: ``(-log p)^gce = e^(-100 gce)``
    (0.37 at gce = 0.01; the reference's ``tiny^gce`` was 8e-4). The other pixels: by hand."""
    p = torch.tensor([0.0, 1.0, 0.3, 1.0], dtype=torch.float64).reshape(1, 1, 4)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0]).reshape(1, 1, 4)
    fn = R.el_ce if backend == "reference" else functools.partial(FS.el_ce, backend=backend)
    got = fn(p, t, gamma_ce=gce, from_logits=False, reduction="none").reshape(-1).tolist()
    want = [math.exp(-100 * gce)] * 2 + [(-math.log(0.3)) ** gce, 100.0**gce]
    assert got == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize(
    "name, kw",
    [("focal_tversky", dict(gamma=1e-3)), ("focal_tversky", dict(gamma=1e-6)), ("focal_tversky", dict(gamma=0.01, delta=0.3))],
)
def test_small_exponents_of_region_terms_keep_the_gradient(name, kw, backend):
    """``x ** k`` with ``k`` near 0 (focal Tversky's gamma; Unified Focal's ``1 - gamma``): its
    gradient ``k x**(k-1)`` is that small, and ``safe**k * (x/safe)`` (the linear continuation below
    1e-6 as a product) added autograd's ``safe**k (1/safe - x/safe**2)``, a zero that float32 rounds
    to 1e-7/x: 2 % of focal Tversky's gradient at gamma = 1e-6. Found by a float32 hypothesis sweep."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1, 6, 7, generator=g, dtype=torch.float64) * 3
    t = torch.rand(z.shape, generator=g) < 0.3
    want, want_grad = _value_and_grad(getattr(R, name), z, t, **kw)
    if backend == "reference":  # the float32 reference, which had the same product
        got, got_grad = _value_and_grad(getattr(R, name), z.float(), t, **kw)
    else:
        got, got_grad = _value_and_grad(getattr(FS, name), z.float(), t, backend=backend, **kw)
    assert got == pytest.approx(want, rel=1e-6)
    assert _relative(got_grad, want_grad) <= 2e-6


@pytest.mark.parametrize("backend", BACKENDS + ["inductor"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("name", ["distance_loss", "hybrid_focal_margin_distance"])
def test_distance_factor_below_one_with_far_false_positives(name, alpha, backend):
    """Seed 003's factor ``1 + L_Dist (alpha - 1)`` with alpha < 1 and every false positive at the
    farthest column (ND = 1, L_Dist = 1 - 4e-8): as ``1 - (1 - alpha) L_Dist`` in float32 it kept one
    or two digits at alpha = 0 (the loss 14 % off); evaluated as ``alpha + (1 - alpha)(1 - L_Dist)``
    with ``1 - L_Dist`` summed from ``1 - ND`` it keeps them all."""
    t = torch.zeros(2, 1, 8, 32)
    t[:, :, :, 0] = 1
    z = torch.full(t.shape, -20.0)
    z[:, :, :, 0] = 20.0
    z[:, :, :, -1] = 5.0
    want, want_grad = _value_and_grad(getattr(R, name), z.double(), t, alpha=alpha)
    got, got_grad = _value_and_grad(getattr(FS, name), z, t, alpha=alpha, backend=backend)
    assert got == pytest.approx(want, rel=1e-5)
    assert _relative(got_grad, want_grad) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS + ["inductor"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_distance_factor_below_one_on_crack_free_and_all_crack_images(alpha, backend):
    """The ``1 - ND`` map's special images, crack-free (ND = 1) and all-crack (nothing to normalise),
    beside an ordinary one; per image against the float64 reference."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 1, 9, 11, generator=g) * 3
    t = torch.zeros(3, 1, 9, 11)
    t[1, :, 4, :] = 1
    t[2] = 1
    want = R.distance_loss(z.double(), t, alpha=alpha, reduction="none")
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    got = FS.distance_loss(z.to(device), t.to(device), alpha=alpha, reduction="none", backend=backend)
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-7)
