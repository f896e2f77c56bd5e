"""``scope="global"`` (fastseg.distributed): statistics all-reduced over the ranks of a process group.

The two-rank tests start two CPU processes with the gloo backend (``init_method="file://..."``,
no port), each running this file as a script on its shard of one batch; the parent compares
what they computed with the reference (:mod:`fastseg.reference`, plain autograd, one process) on
the concatenated batch with ``scope="batch"``:

- every rank's loss equals the single-process loss of the whole batch;
- every rank's gradient equals its rows of the single-process gradient, with factor 1 (the
  documented contract: the exact gradient of the returned global loss, not ``W`` times it);
- under DDP with ``(loss * world_size()).backward()`` the averaged parameter gradients equal the
  single-process parameter gradients (the documented recipe);
- the same holds for the ``nn.Module`` form with an explicit ``process_group`` and for a
  ``torch.compile(fullgraph=True)`` step (``aot_eager``: the functional all-reduce is traced);
- pointwise losses (every one of ``fastseg.functional.POINTWISE``, distance-weighted ones
  included): the ``scope="global"`` mean is the mean over the valid pixels of the whole batch,
  ``"sum"`` its sum, and with ``reduction="none"`` each rank's map is its rows of the whole
  batch's map (balanced / adaptive WCE: class fractions of the whole batch).

The shards are unequal (2 and 3 images) and hold ignored pixels, a fully ignored image and a
crack-free image, so a per-rank mean or a per-rank pixel count would show.
"""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from test_functional import PARAMS

import fastseg.functional as FS

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
SHARDS = ((0, 2), (2, 5))  # images of rank 0 and rank 1: unequal on purpose
LOSSES = {
    "dice": dict(),
    "tversky": dict(alpha=0.4, beta=0.6),
    "unified_focal": dict(),
    "hybrid_focal_margin": dict(m=0.5),
}
#: Every pointwise loss, with the non-default parameters of the single-process tests.
POINTWISE = {name: PARAMS.get(name, {}) for name in FS.POINTWISE}
POINTWISE_SUM = ("bce", "adaptive_wce")
POINTWISE_NONE = ("bce", "balanced_bce", "adaptive_wce")  # the last two: global class fractions per pixel
TIMEOUT_S = 240  # a two-process run takes ~7 s alone; under a loaded machine (pytest -n 2 beside Inductor compiles) 90 s was once too few


def make_batch():
    """The global batch ``[5, 2, 6, 7]`` (float64 logits, bool targets, bool ignore mask)."""
    gen = torch.Generator().manual_seed(8)
    z = 3 * torch.randn(5, 2, 6, 7, generator=gen, dtype=torch.float64)
    t = torch.rand(5, 2, 6, 7, generator=gen) < 0.25
    t[3] = False  # a crack-free image (rank 1)
    ignore = torch.rand(5, 2, 6, 7, generator=gen) < 0.15
    ignore[1] = True  # a fully ignored image (rank 0)
    return z, t, ignore


def make_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1))


# --------------------------------------------------------------------------------------------
# worker: python tests/test_distributed.py RANK INIT_FILE OUT_DIR
# --------------------------------------------------------------------------------------------


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    import fastseg.distributed as FD
    import fastseg.losses as FL

    z, t, ignore = make_batch()
    lo, hi = SHARDS[rank]
    z, t, ignore = z[lo:hi], t[lo:hi], ignore[lo:hi]
    out = {"world_size": FD.world_size()}

    def run(key, fn):
        x = z.clone().requires_grad_()
        loss = fn(x)
        loss.sum().backward()
        out[key] = (loss.detach(), x.grad)

    for name, params in LOSSES.items():
        fn = getattr(FS, name)
        run(name, lambda x: fn(x, t, ignore=ignore, scope="global", **params))
    for name, params in POINTWISE.items():
        fn = getattr(FS, name)
        run(name, lambda x: fn(x, t, ignore=ignore, scope="global", **params))
    for name in POINTWISE_SUM:
        fn = getattr(FS, name)
        run(f"{name}_sum", lambda x: fn(x, t, ignore=ignore, scope="global", reduction="sum", **POINTWISE[name]))
    for name in POINTWISE_NONE:
        fn = getattr(FS, name)
        run(f"{name}_none", lambda x: fn(x, t, ignore=ignore, scope="global", reduction="none", **POINTWISE[name]))
    run("dice_sum", lambda x: FS.dice(x, t, ignore=ignore, scope="global", reduction="sum"))
    run("tversky_none", lambda x: FS.tversky(x, t, ignore=ignore, scope="global", reduction="none"))

    group = dist.new_group([0, 1])
    module = FL.HybridFocalMarginLoss(m=0.5, scope="global", process_group=group)
    run("module", lambda x: module(x, t, ignore=ignore))
    copied = copy.deepcopy(torch.nn.ModuleDict({"body": make_model(), "criterion": module}))["criterion"]  # an EMA copy
    out["copy_shares_the_group"] = copied.process_group is group
    run("module_copy", lambda x: copied(x, t, ignore=ignore))
    try:
        pickle.dumps(module)
        out["pickle_error"] = ""
    except TypeError as err:
        out["pickle_error"] = str(err)
    pointwise_module = FL.BalancedBCELoss(scope="global", process_group=group)
    run("pointwise_module", lambda x: pointwise_module(x, t, ignore=ignore))

    compiled = torch.compile(lambda x: FS.unified_focal(x, t, ignore=ignore, scope="global"), backend="aot_eager",
                             fullgraph=True)
    run("compiled", compiled)

    model = torch.nn.parallel.DistributedDataParallel(make_model())
    loss = FS.hybrid_focal_margin(model(z.float()), t, ignore=ignore, scope="global")
    (loss * FD.world_size()).backward()
    out["ddp"] = (loss.detach(), [p.grad.clone() for p in model.parameters()])

    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# the two-rank run, once per module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    tmp = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, __file__, str(r), str(tmp / "init"), str(tmp)], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(WORLD)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the {WORLD} gloo workers did not finish within {TIMEOUT_S} s")
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-4000:]}"
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def batch_scope(name) -> dict:
    """``{"scope": "batch"}`` for a reference loss with a scope; a pointwise reference has none (its
    mean runs over the valid pixels of the batch)."""
    import fastseg.reference as R

    return {"scope": "batch"} if "scope" in inspect.signature(getattr(R, name)).parameters else {}


def reference(name, z, **kw):
    """The reference loss of the whole batch (scope "batch") and its gradient, one process."""
    import fastseg.reference as R

    _, t, ignore = make_batch()
    x = z.clone().requires_grad_()
    loss = getattr(R, name)(x, t, ignore=ignore, **batch_scope(name), **kw)
    loss.sum().backward()
    return loss.detach(), x.grad


def assert_matches(got, expected_loss, expected_grad, *, per_pixel=False):
    """Every rank's loss is the whole batch's (``per_pixel``: its rows of the whole batch's map) and
    its gradient the rows of the single-process gradient."""
    for r, (lo, hi) in enumerate(SHARDS):
        loss, grad = got[r]
        expected = expected_loss[lo:hi] if per_pixel else expected_loss
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12, msg=f"loss of rank {r}")
        torch.testing.assert_close(grad, expected_grad[lo:hi], rtol=1e-8, atol=1e-12, msg=f"gradient of rank {r}")


def test_world_size(ranks):
    assert [out["world_size"] for out in ranks] == [WORLD, WORLD]


@pytest.mark.parametrize("name", list(LOSSES))
def test_global_loss_and_gradient_equal_single_process(ranks, name):
    z, _, _ = make_batch()
    expected_loss, expected_grad = reference(name, z, **LOSSES[name])
    assert_matches([out[name] for out in ranks], expected_loss, expected_grad)


@pytest.mark.parametrize("name", list(LOSSES) + list(POINTWISE))
def test_the_data_tells_a_per_rank_loss_apart(name):
    """Sanity of the data: each shard's own batch loss differs from the global one."""
    import fastseg.reference as R

    params = {**LOSSES, **POINTWISE}[name]
    z, t, ignore = make_batch()
    whole = getattr(R, name)(z, t, ignore=ignore, **batch_scope(name), **params)
    for lo, hi in SHARDS:
        shard = getattr(R, name)(z[lo:hi], t[lo:hi], ignore=ignore[lo:hi], **batch_scope(name), **params)
        assert abs(shard.item() - whole.item()) > 1e-3


def test_shards_hold_unequal_valid_pixel_counts():
    _, _, ignore = make_batch()
    valid = [int((~ignore[lo:hi]).sum()) for lo, hi in SHARDS]
    assert valid[0] != valid[1] and valid[0] > 0


# --------------------------------------------------------------------------------------------
# pointwise losses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POINTWISE))
def test_pointwise_global_mean_equals_single_process(ranks, name):
    """The mean over the valid pixels of every rank (a per-rank mean would weight the ranks'
    pixels unequally here), class fractions of the whole batch for balanced / adaptive WCE."""
    z, _, _ = make_batch()
    assert_matches([out[name] for out in ranks], *reference(name, z, **POINTWISE[name]))


@pytest.mark.parametrize("name", POINTWISE_SUM)
def test_pointwise_global_sum(ranks, name):
    z, _, _ = make_batch()
    assert_matches([out[f"{name}_sum"] for out in ranks], *reference(name, z, reduction="sum", **POINTWISE[name]))


@pytest.mark.parametrize("name", POINTWISE_NONE)
def test_pointwise_global_none_is_the_rows_of_the_whole_batch_map(ranks, name):
    z, _, _ = make_batch()
    expected_loss, expected_grad = reference(name, z, reduction="none", **POINTWISE[name])
    assert expected_loss.shape == z.shape
    assert_matches([out[f"{name}_none"] for out in ranks], expected_loss, expected_grad, per_pixel=True)


@pytest.mark.parametrize("name", ["balanced_bce", "adaptive_wce"])
def test_the_data_tells_per_rank_class_fractions_apart(name):
    """Sanity: with per-rank class fractions the per-pixel maps would differ from the global rows."""
    import fastseg.reference as R

    z, t, ignore = make_batch()
    whole = getattr(R, name)(z, t, ignore=ignore, reduction="none", **POINTWISE[name])
    for lo, hi in SHARDS:
        shard = getattr(R, name)(z[lo:hi], t[lo:hi], ignore=ignore[lo:hi], reduction="none", **POINTWISE[name])
        assert (shard - whole[lo:hi]).abs().max() > 1e-3


def test_pointwise_module_with_explicit_process_group(ranks):
    z, _, _ = make_batch()
    assert_matches([out["pointwise_module"] for out in ranks], *reference("balanced_bce", z))


def test_global_sum_and_none_reductions(ranks):
    z, _, _ = make_batch()
    assert_matches([out["dice_sum"] for out in ranks], *reference("dice", z, reduction="sum"))
    expected_loss, expected_grad = reference("tversky", z, reduction="none")  # per channel [C]; grad of their sum
    assert expected_loss.shape == (2,)
    assert_matches([out["tversky_none"] for out in ranks], expected_loss, expected_grad)


def test_module_with_explicit_process_group(ranks):
    z, _, _ = make_batch()
    assert_matches([out["module"] for out in ranks], *reference("hybrid_focal_margin", z, m=0.5))


def test_a_deep_copy_of_a_module_with_a_process_group_shares_the_group(ranks):
    """``copy.deepcopy`` of a model holding the loss (an EMA copy) failed: a ProcessGroup cannot be
    copied. The copy shares the group and computes the global loss; pickling says why it cannot."""
    z, _, _ = make_batch()
    assert all(out["copy_shares_the_group"] for out in ranks)
    assert_matches([out["module_copy"] for out in ranks], *reference("hybrid_focal_margin", z, m=0.5))
    assert all("with a process_group cannot be pickled" in out["pickle_error"] for out in ranks)


def test_compiled_step(ranks):
    z, _, _ = make_batch()
    assert_matches([out["compiled"] for out in ranks], *reference("unified_focal", z))


def test_ddp_recipe_gives_single_process_parameter_gradients(ranks):
    import fastseg.reference as R

    z, t, ignore = make_batch()
    model = make_model()
    loss = R.hybrid_focal_margin(model(z.float()), t, ignore=ignore, scope="batch")
    loss.backward()
    for r in range(WORLD):
        got_loss, got_grads = ranks[r]["ddp"]
        torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-5, atol=1e-7)
        for p, g in zip(model.parameters(), got_grads):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=f"parameter gradient of rank {r}")


def test_ddp_example_under_torchrun():
    """examples/ddp_train.py with torchrun, 2 CPU ranks (gloo): every rank reports the same global
    loss, and its step-0 check finds the DDP gradients equal to the single-process ones."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           str(ROOT / "examples" / "ddp_train.py"), "--steps", "2", "--batch-size", "5", "--crop", "32"]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    steps = [line for line in lines if "global loss per rank" in line]
    assert len(steps) == 2
    for line in steps:
        losses = line.split("global loss per rank:")[1].split("per-rank")[0].split()
        assert len(losses) == WORLD and len(set(losses)) == 1, line
    check = [line for line in lines if "check: max" in line]
    assert len(check) == 1 and float(check[0].rsplit("=", 1)[1]) < 1e-5, check


# --------------------------------------------------------------------------------------------
# one process, no process group
# --------------------------------------------------------------------------------------------


def _requires_no_process_group():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised in this test process")


@pytest.mark.parametrize("name", ["dice", "unified_focal"])
def test_without_process_group_falls_back_to_batch_with_a_warning(name):
    _requires_no_process_group()
    import fastseg.reference as R

    z, t, ignore = make_batch()
    x = z.clone().requires_grad_()
    with pytest.warns(UserWarning, match="no process group is initialised") as record:
        loss = getattr(FS, name)(x, t, ignore=ignore, scope="global")
    assert record[0].filename == __file__  # the user's line, so each call site warns once
    loss.backward()
    expected_loss, expected_grad = reference(name, z)
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-8, atol=1e-12)
    ref_global = getattr(R, name)(z, t, ignore=ignore, scope="global")  # the reference: "batch" on one process
    torch.testing.assert_close(ref_global, expected_loss, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "reduction"), [("bce", "mean"), ("balanced_bce", "mean"), ("adaptive_wce", "none")])
def test_pointwise_without_process_group_falls_back_to_batch_with_a_warning(name, reduction):
    _requires_no_process_group()

    z, t, ignore = make_batch()
    x = z.clone().requires_grad_()
    with pytest.warns(UserWarning, match="no process group is initialised"):
        loss = getattr(FS, name)(x, t, ignore=ignore, scope="global", reduction=reduction, **POINTWISE[name])
    loss.sum().backward()
    expected_loss, expected_grad = reference(name, z, reduction=reduction, **POINTWISE[name])
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["bce", "balanced_bce", "focal", "hausdorff_dt"])
def test_pointwise_batch_scope_is_the_reference(name):
    """``scope="batch"`` (the default) is the reference's mean over the batch's valid pixels."""

    z, t, ignore = make_batch()
    expected_loss, expected_grad = reference(name, z, **POINTWISE[name])
    x = z.clone().requires_grad_()
    loss = getattr(FS, name)(x, t, ignore=ignore, scope="batch", **POINTWISE[name])
    loss.backward()
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["bce", "adaptive_wce", "shape_aware"])
def test_pointwise_scope_errors(name):

    z, t, _ = make_batch()
    fn = getattr(FS, name)
    message = rf"{name} is a pointwise loss: it averages over the valid pixels of the batch, so scope must be 'batch'"
    with pytest.raises(ValueError, match=message):
        fn(z, t, scope="image")
    with pytest.raises(ValueError, match="scope must be one of 'batch', 'global'; got 'world'"):
        fn(z, t, scope="world", reduction="none")


def test_without_process_group_compiled_fullgraph():
    _requires_no_process_group()

    z, t, ignore = make_batch()
    step = torch.compile(lambda x: FS.tversky(x, t, ignore=ignore, scope="global"), backend="aot_eager", fullgraph=True)
    x = z.clone().requires_grad_()
    step(x).backward()
    expected_loss, expected_grad = reference("tversky", z)
    torch.testing.assert_close(step(z).detach(), expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-8, atol=1e-12)


def test_no_warning_unless_global_was_asked():
    _requires_no_process_group()
    import fastseg.distributed as FD
    import fastseg.losses as FL

    z, t, _ = make_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FS.dice(z, t, scope="batch")
        FS.dice(z, t, scope="image")
        FL.DiceLoss(scope="batch")(z, t)
        FS.bce(z, t)
        FS.balanced_bce(z, t, scope="batch", reduction="none")
        FL.FocalLoss()(z, t)
    assert FD.world_size() == 1
    assert not FD.available()


def test_module_accepts_global_and_checks_process_group():
    import fastseg.losses as FL

    assert FL.DiceLoss(scope="global").scope == "global"
    with pytest.raises(ValueError, match="process_group applies to scope='global' only"):
        FL.DiceLoss(scope="batch", process_group=object())
    assert FL.FocalLoss(scope="global", process_group=None).scope == "global"
    assert FL.FocalLoss().scope == "batch"
    with pytest.raises(ValueError, match="process_group applies to scope='global' only; got scope='batch'"):
        FL.FocalLoss(process_group=object())
    with pytest.raises(ValueError, match="bce is a pointwise loss"):
        FL.BinaryCrossEntropyLoss(scope="image")
    with pytest.raises(ValueError, match="scope must be one of 'image', 'batch', 'global'"):
        FL.DiceLoss(scope="world")


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
