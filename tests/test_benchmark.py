"""The measuring instruments of ``fastseg bench`` against values computed by hand.

- :class:`OpCounter` (bytes moved, op count, peak live bytes) on op sequences whose traffic is
  counted by hand, including broadcasting, freeing and a ``torch.library`` custom op whose
  internal temporaries must be seen.
- The fused contender's by-design bytes per pixel (read z, t twice, write dL/dz once).
- The error column: a deliberately wrong contender is flagged, the reference is not.
- Cases, sizes and the tiny progress bar.
"""

import io
import math

import pytest
import torch

from fastseg import benchmark as fb


def test_op_counter_bytes_of_x_times_y_plus_z_by_hand():
    x, y, z = (torch.randn(4, 8) for _ in range(3))  # 32 fp32 = 128 bytes each
    with fb.OpCounter() as counter:
        out = x * y + z
    # mul reads x, y and writes tmp (3 x 128); add reads tmp, z and writes out (3 x 128).
    assert counter.ops == 2
    assert counter.bytes == 6 * 128
    # tmp and out were alive together at the add: 2 x 128 bytes; tmp is freed after.
    assert counter.peak == 2 * 128
    assert counter.live == 128
    del out
    assert counter.live == 0


def test_op_counter_broadcast_views_and_dtypes_by_hand():
    x = torch.randn(4, 8)  # 128 bytes
    row = torch.randn(8)  # 32 bytes, broadcast over 4 rows: read once
    mask = torch.ones(4, 8, dtype=torch.uint8)  # 32 bytes
    with fb.OpCounter() as counter:
        a = x.view(32)  # a view: moves nothing, not counted
        b = x * row  # 128 + 32 + 128
        c = b * mask  # 128 + 32 + 128 (fp32 result)
        s = c.sum()  # 128 + 4
    assert counter.ops == 3
    assert counter.bytes == (128 + 32 + 128) + (128 + 32 + 128) + (128 + 4)
    # b, c and s all alive at the end (a shares x's storage, created before the counter).
    assert counter.peak == 128 + 128 + 4
    assert a.shape == (32,) and s.ndim == 0


def test_unique_bytes_counts_expanded_dims_once():
    t = torch.randn(8).expand(100, 8)
    assert fb._unique_bytes(t) == 8 * 4
    assert fb._unique_bytes(torch.zeros(3, 5, dtype=torch.float16)) == 30


@torch.library.custom_op("fastseg_test::three_temps", mutates_args=())
def _three_temps(x: torch.Tensor) -> torch.Tensor:
    a = x * 2
    b = a * 3
    c = b + 1
    return c.clone()


@_three_temps.register_fake
def _(x):
    return torch.empty_like(x)


def test_op_counter_sees_inside_custom_ops():
    x = torch.randn(16, 16)  # 1024 bytes
    with fb.OpCounter() as counter:
        y = _three_temps(x)
    # a, b, c and the clone: c and b are alive when the clone is made, a was freed... not
    # necessarily: a, b, c are Python locals, all alive until the body returns -> 4 x 1024.
    assert counter.peak == 4 * 1024
    assert counter.ops == 4  # the custom op itself is not an aten op; its 4 inner ops are
    assert counter.live == 1024 and y.shape == x.shape


def test_fused_bytes_per_pixel_by_design():
    z32 = torch.zeros(2, dtype=torch.float32)
    z16 = torch.zeros(2, dtype=torch.float16)
    t8 = torch.zeros(2, dtype=torch.uint8)
    # read (z, t) forward + read (z, t) backward + write dL/dz: 2 * (4 + 1) + 4 = 14 (issue 4).
    assert fb.fused_bytes_per_pixel(z32, t8) == 14
    assert fb.fused_bytes_per_pixel(z16, t8) == 2 * (2 + 1) + 2
    assert fb.fused_bytes_per_pixel(z32, t8, passes=3) == 3 * 14
    # a distance loss's pass reads its float32 map forward and backward: + 2 * 4
    assert fb.fused_bytes_per_pixel(z32, t8, map_passes=1) == 22
    for loss, passes, maps in (("hausdorff_dt", 1, 1), ("dice", 1, 0), ("focal+distance_loss", 1, 1)):
        fn = fb.fused_contender(fb.Case(loss, batch=1, height=4, width=4), "cpu")
        assert (getattr(fn, "passes_per_step", 1), fb._map_passes(fn)) == (passes, maps), loss


def test_allocator_peak_sees_a_compiled_steps_gradient_and_buffers():
    """The gradient of a compiled step (not seen by a dispatch mode, and reused from freed memory
    where the resident set would not rise): at least its N float32s, less than 4 such buffers."""
    z = torch.randn(64, 1024, requires_grad=True)
    compiled = torch.compile(lambda x: (x.sigmoid() * 3).sum(), backend="inductor")
    for _ in range(2):
        compiled(z).backward()
        z.grad = None
    peak = fb.allocator_peak(lambda: compiled(z).backward())
    if peak is None:
        pytest.skip("this torch's profiler exposes no allocation events")
    assert z.numel() * 4 <= peak < 4 * z.numel() * 4


def test_a_contender_whose_factory_fails_is_an_error_row_not_a_crash():
    case = _tiny_case()
    z, t = _inputs(case)

    def broken(c, d):
        raise RuntimeError("peer version mismatch")

    rows = fb.measure_case(case, ["reference", "broken"], z, t, device="cpu", repeat=1, warmup=1, truth=None,
                           factories={"broken": broken})
    by_name = {r.contender: r for r in rows}
    assert by_name["reference"].status == "ok"
    assert by_name["broken"].status == "error" and "peer version mismatch" in by_name["broken"].note


def test_rss_peak_sees_a_large_allocation():
    with fb.rss_peak() as rss:
        x = torch.ones(16 * 2**20 // 4)  # 16 MiB, written (resident)
        del x
    if rss["bytes"] is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert 15 * 2**20 <= rss["bytes"] < 64 * 2**20


def _tiny_case(loss="dice"):
    return fb.Case(loss, batch=2, height=12, width=20)


def _inputs(case):
    gen = torch.Generator().manual_seed(0)
    t = (torch.rand(case.batch, 1, case.height, case.width, generator=gen) < 0.2).to(torch.uint8)
    z = torch.randn(t.shape, generator=gen) * 2
    return z, t


def test_measure_flags_a_wrong_contender_and_passes_the_reference():
    from fastseg import reference

    case = _tiny_case()
    z, t = _inputs(case)
    truth = fb.oracle(case, z, t)
    wrong = fb.measure(case, "wrong", z, t, device="cpu", repeat=2, warmup=1, truth=truth,
                       factory=lambda c, d: lambda zz, tt: reference.dice(zz, tt) * 1.05)
    right = fb.measure(case, "reference", z, t, device="cpu", repeat=2, warmup=1, truth=truth)
    assert right.status == wrong.status == "ok"
    assert right.correct is True and right.value_err < 1e-6
    assert wrong.correct is False
    # 5 % of the loss value, computed independently here in float64.
    expected = 0.05 * float(reference.dice(z.double(), t))
    assert wrong.value_err == pytest.approx(expected, rel=1e-4)
    report = {"results": [vars(right), vars(wrong)],
              "environment": fb.environment("cpu"), "settings": {"device": "cpu", "repeat": 2, "warmup": 1, "command": "x"}}
    assert "WRONG" in fb.table(report).split("\n")[3]
    assert "WRONG" not in fb.table(report).split("\n")[2]


def test_measure_counts_bytes_of_an_eager_step_by_hand():
    # loss = sum(z * w) with w a fixed float tensor; the step's ops, counted by hand:
    #   forward  mul(z, w) -> m : 3 tensors of N floats;  sum(m) -> s : N + 1 floats
    #   backward ones_like(s): input s (1 float, counted as an input though only its shape is
    #            used) and 1 float out; expand (a view, free); mul(expanded 1, w) -> g: reads 1
    #            (broadcast) + N, writes N; detach (a view) as z.grad takes g without a copy.
    case = fb.Case("custom", batch=1, height=8, width=16)
    n = case.pixels
    w = torch.rand(1, 1, 8, 16)
    z = torch.randn(1, 1, 8, 16)
    res = fb.measure(case, "hand", z, torch.zeros_like(z, dtype=torch.uint8), device="cpu", repeat=1, warmup=1,
                     factory=lambda c, d: lambda zz, tt: (zz * w).sum())
    assert res.status == "ok", res.note
    expected = 4 * (3 * n + (n + 1) + (1 + 1) + (1 + 2 * n))
    assert res.bytes_per_pixel * n == expected
    assert res.ops_per_step == 4


def test_default_cases_scale_with_device_and_options():
    cpu = fb.default_cases("cpu")
    assert {c.loss for c in cpu} == set(fb.DEFAULT_LOSSES)
    assert {(c.batch, c.height, c.width) for c in cpu} == {(8, 1024, 1024)}
    assert {(c.batch, c.height, c.width) for c in fb.default_cases("cuda")} == {(16, 2048, 2048), (4, 4096, 4096)}
    custom = fb.default_cases("cpu", losses=["dice"], batch=3, size="64x96", dtype="float16")
    assert [(c.loss, c.batch, c.height, c.width, c.dtype, c.pixels) for c in custom] == [("dice", 3, 64, 96, "float16", 3 * 64 * 96)]
    with pytest.raises(ValueError, match="size"):
        fb.parse_size("0x3")
    with pytest.raises(ValueError, match="dtype"):
        fb.default_cases("cpu", dtype="int8")


def test_a_sum_of_losses_is_timed_fused_separately_and_checked_against_the_summed_reference():
    from fastseg import reference

    case = fb.Case("focal+dice+distance_loss", batch=2, height=12, width=20)
    z, t = _inputs(case)
    truth = fb.oracle(case, z, t)
    expected = sum(float(f(z.double(), t)) for f in (reference.focal, reference.dice, reference.distance_loss))
    assert truth[0] == pytest.approx(expected, rel=1e-12)
    fused = fb.measure(case, "fastseg", z, t, device="cpu", repeat=1, warmup=1, truth=truth)
    separate = fb.measure(case, "fastseg_separate", z, t, device="cpu", repeat=1, warmup=1, truth=truth)
    assert fused.correct is True and separate.correct is True
    # one pass vs one per term; the pass with distance_loss also reads its float32 map twice (+8)
    assert (fused.bytes_per_pixel, separate.bytes_per_pixel) == (14 + 8, 3 * 14 + 8)
    assert "single loss" in fb.measure(_tiny_case(), "fastseg_separate", z, t, device="cpu", repeat=1, warmup=0).note
    with pytest.raises(ValueError, match="unknown loss 'dice2'"):
        fb.default_cases("cpu", losses=["focal+dice2"])


def test_make_inputs_synthetic_and_shapes():
    case = fb.Case("dice", batch=2, height=40, width=24)
    z, t = fb.make_inputs(case, "cpu")
    assert z.shape == t.shape == (2, 1, 40, 24)
    assert z.dtype == torch.float32 and t.dtype == torch.uint8
    z2, t2 = fb.make_inputs(case, "cpu")
    assert torch.equal(z, z2) and torch.equal(t, t2)  # seeded


def test_progress_bar_writes_to_its_stream():
    out = io.StringIO()
    bar = fb.ProgressBar(4, stream=out)
    for k in range(4):
        bar.update(f"step {k}")
    bar.close()
    text = out.getvalue()
    assert "4/4" in text and "#" * 28 in text and text.endswith("\n")
    silent = io.StringIO()
    quiet = fb.ProgressBar(2, enabled=False, stream=silent)
    quiet.update()
    assert silent.getvalue() == "" and math.isfinite(quiet.done)


def test_edt_benchmark_reports_every_contender_and_checks_against_scipy(monkeypatch):
    report = fb.edt_benchmark("cpu", batch=2, size=(24, 40), repeat=1, warmup=0)
    assert report["shape"] == "2x1x24x40" and report["equal"] is True
    assert set(report["results"]) == {"fastseg", "fastseg_sq", "scipy"}
    for r in report["results"].values():
        assert r["median_s"] > 0
        assert math.isclose(r["ms_per_1024_image"], 1000 * r["median_s"] / (2 * 24 * 40 / 2**20))

    assert {r["repeat"] for r in report["results"].values()} == {1}

    import fastseg.edt

    real = fastseg.edt.edt
    monkeypatch.setattr(fastseg.edt, "edt", lambda mask, **kw: real(mask, **kw) + (mask[..., :1, :1] * 0 + 1))
    assert fb.edt_benchmark("cpu", batch=2, size=(24, 40), repeat=1, warmup=0)["equal"] is False


def test_compiled_contenders_are_made_first_and_reported_in_the_given_order():
    """A ``compiled`` factory resets Dynamo, which would throw away what a contender made before it
    had compiled (``fastseg_inductor``) and put that recompilation into a timed step."""
    from fastseg import reference

    case = _tiny_case()
    z, t = _inputs(case)
    made = []

    def factory(name):
        def make(c, d):
            made.append(name)
            return lambda zz, tt: reference.dice(zz, tt)
        return make

    names = ["fastseg_inductor", "fastseg_compiled", "reference", "compiled"]
    results = fb.measure_case(case, names, z, t, device="cpu", repeat=1, warmup=1,
                              factories={n: factory(n) for n in names})
    assert made[:2] == ["compiled", "fastseg_compiled"] and sorted(made) == sorted(names)
    assert [r.contender for r in results] == names


def test_run_hands_over_the_report_after_every_case():
    """What a run cut short by a time limit leaves: every finished case, and how many there were."""
    from fastseg import reference

    cases = [_tiny_case("dice"), _tiny_case("tversky")]
    seen = []
    final = fb.run(cases, ["reference"], device="cpu", repeat=1, warmup=1, progress=False,
                   factories={"reference": lambda c, d: lambda zz, tt: reference.dice(zz, tt)},
                   on_case=lambda partial: seen.append(partial))
    assert [p["settings"]["cases_done"] for p in seen] == [1, 2]
    assert [[r["loss"] for r in p["results"]] for p in seen] == [["dice"], ["dice", "tversky"]]
    assert seen[-1]["results"] == final["results"] and final["settings"]["cases"] == 2


def test_inductor_contender_is_cpu_only():
    with pytest.raises(fb.Unavailable, match="CPU"):
        fb.CONTENDERS["fastseg_inductor"][1](_tiny_case(), "cuda")
    assert fb.CONTENDERS["fastseg_inductor"][1](_tiny_case(), "cpu").backend == "inductor"


def test_a_contender_with_multi_second_steps_gets_one_warm_up_and_three_timed_steps(monkeypatch):
    """MONAI's Hausdorff loss at GPU sizes takes tens of seconds a step: --repeat 20 of it would
    spend the device time of a whole session. Scaled down: a 'slow' step here is over 150 ms (a
    tiny Dice step takes about 1 ms, with room for a loaded machine)."""
    import time

    from fastseg import reference

    monkeypatch.setattr(fb, "SLOW_STEP_S", 0.15)
    case = _tiny_case()
    z, t = _inputs(case)
    calls = {"slow": 0, "fast": 0}

    def counting(name, pause):
        def make(c, d):
            def fn(zz, tt):
                calls[name] += 1
                time.sleep(pause)
                return reference.dice(zz, tt)
            return fn
        return make

    slow, fast = fb.measure_case(case, ["reference", "compiled"], z, t, device="cpu", repeat=6, warmup=3,
                                 factories={"reference": counting("slow", 0.3), "compiled": counting("fast", 0.0)})
    assert slow.status == "ok" and slow.repeat == fb.SLOW_REPEAT == 3 and "3 timed steps" in slow.note
    assert fast.status == "ok" and fast.repeat == 6
    # slow: the first call (the error check) and 3 timed steps, plus _count's untimed step; fast: 3 warm-up + 6 + 1
    assert calls == {"slow": 1 + 3 + 1, "fast": 3 + 6 + 1}


def test_edt_benchmark_times_multi_second_calls_three_times(monkeypatch):
    """SciPy on 16 images of 2048x2048 takes ~14 s a call: 20 rounds of it would outlast a GPU session."""
    report = fb.edt_benchmark("cpu", batch=2, size=(24, 40), repeat=5, warmup=2)
    assert {r["repeat"] for r in report["results"].values()} == {5}
    monkeypatch.setattr(fb, "SLOW_STEP_S", 0.0)  # every call is slow now
    report = fb.edt_benchmark("cpu", batch=2, size=(24, 40), repeat=5, warmup=2)
    assert {r["repeat"] for r in report["results"].values()} == {fb.SLOW_REPEAT} and report["equal"] is True
