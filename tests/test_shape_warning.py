"""``fastseg.ShapeWarning``: a ``[B, H, W]`` batch of images is read as ``[B, C, L]`` (C rows of
1-D signals), which gives region losses and distance transforms a silently different meaning.
The warning must name the argument, point at the user's line, come once per call (not again for
the masks fastseg derives from the same input) and stay out of the way of ``[B, 1, L]``, 4-D and
5-D inputs and of ``torch.compile(fullgraph=True)``."""

import warnings

import pytest
import torch

import fastseg
import fastseg.functional as F
import fastseg.reference as R
from fastseg import losses
from fastseg.edt import boundary_field, edt, inner_boundary
from fastseg.metrics import confusion


def _batch(shape):
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g), torch.rand(shape, generator=g) < 0.3


def _shape_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, fastseg.ShapeWarning)]


CALLS_ON_IMAGES_WITHOUT_CHANNEL = {
    "functional.dice": (lambda x, t: F.dice(x, t), "input"),
    "functional.focal": (lambda x, t: F.focal(x, t), "input"),
    "functional.hausdorff_dt": (lambda x, t: F.hausdorff_dt(x, t), "input"),
    "functional.shape_aware": (lambda x, t: F.shape_aware(x, t), "input"),
    "reference.dice": (lambda x, t: R.dice(x, t), "input"),
    "reference.distance_loss": (lambda x, t: R.distance_loss(x, t), "input"),
    "losses.DiceLoss": (lambda x, t: losses.DiceLoss()(x, t), "input"),
    "metrics.confusion": (lambda x, t: confusion(torch.sigmoid(x), t), "pred"),
    "edt": (lambda x, t: edt(t), "mask"),
    "inner_boundary": (lambda x, t: inner_boundary(t), "mask"),
    "boundary_field": (lambda x, t: boundary_field(t), "mask"),
}


@pytest.mark.parametrize("name", CALLS_ON_IMAGES_WITHOUT_CHANNEL)
def test_images_without_channel_warn_once_at_the_callers_line(name):
    call, argument = CALLS_ON_IMAGES_WITHOUT_CHANNEL[name]
    x, t = _batch((2, 12, 12))
    caught = _shape_warnings(lambda: call(x, t))
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith(f"{argument} of shape (2, 12, 12) is read as [B, C, L]")
    assert f"{argument}.unsqueeze(1)" in message
    assert caught[0].filename == __file__


@pytest.mark.parametrize("shape", [(2, 1, 40), (2, 1, 12, 12), (2, 3, 12, 12), (1, 2, 4, 6, 6)])
def test_other_layouts_do_not_warn(shape):
    x, t = _batch(shape)
    assert _shape_warnings(lambda: (F.dice(x, t), R.hausdorff_dt(x, t), edt(t))) == []


def test_the_warning_is_advice_not_a_change_of_meaning():
    """The loss of a [B, H, W] input is still the loss of H channels of 1-D signals, i.e. what
    the same numbers give as an explicit [B, C, 1, L] batch of 1-pixel-high images."""
    x, t = _batch((2, 6, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastseg.ShapeWarning)
        as_signals = F.dice(x, t)
    torch.testing.assert_close(as_signals, R.dice(x.unsqueeze(2).double(), t.unsqueeze(2)).float())


def test_compiled_fullgraph_calls_do_not_break_on_the_warning():
    x, t = _batch((2, 5, 16))
    compiled = torch.compile(lambda a, b: F.dice(a, b), fullgraph=True, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastseg.ShapeWarning)
        expected = R.dice(x.double(), t).float()
    torch.testing.assert_close(compiled(x, t), expected)
