"""The ``fastseg`` command on tiny sizes: bench outputs (table, JSON schema, markdown, plot),
validate's exit status on a correct and on deliberately broken contenders, kernels delegation, --version."""

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from fastseg import cli

HAS_FUNCTIONAL = importlib.util.find_spec("fastseg.functional") is not None

RESULT_KEYS = {
    "case", "loss", "shape", "dtype", "data", "contender", "kind", "status", "note", "median_ms", "q1_ms", "q3_ms",
    "min_ms", "max_ms", "repeat", "compile_s", "pixels_per_s", "speedup", "peak_mb", "peak_method",
    "bytes_per_pixel", "bytes_method", "ops_per_step", "bandwidth_pct", "value_err", "grad_err", "correct",
}


def _bench(tmp_path, *extra):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    rc = cli.main(["bench", "--quick", "--no-progress", "--repeat", "2", "--json", str(out), "--markdown", str(md), *extra])
    return rc, json.loads(out.read_text()), md.read_text()


def test_bench_json_schema_and_markdown(tmp_path, capsys):
    rc, report, md = _bench(tmp_path, "--loss", "dice", "focal", "--contender", "fastseg", "reference", "monai", "kornia", "smp")
    assert rc == 0
    assert set(report) == {"environment", "settings", "results"}
    env = report["environment"]
    for key in ("date", "torch", "triton", "device", "cpu", "threads", "python"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert report["settings"]["repeat"] == 2 and report["settings"]["seed"] == 0
    rows = report["results"]
    assert [(r["loss"], r["contender"]) for r in rows] == [
        (loss, c) for loss in ("dice", "focal") for c in ("fastseg", "reference", "monai", "kornia", "smp")
    ]
    for r in rows:
        assert set(r) == RESULT_KEYS
        assert r["shape"] == "2x1x32x48"
    by = {(r["loss"], r["contender"]): r for r in rows}
    ref = by["dice", "reference"]
    assert ref["status"] == "ok" and ref["speedup"] == 1.0 and ref["correct"] is True
    assert ref["min_ms"] <= ref["median_ms"] <= ref["max_ms"]
    assert ref["pixels_per_s"] == pytest.approx(2 * 32 * 48 / (ref["median_ms"] / 1e3))
    assert ref["bytes_method"] == "dispatch count" and ref["bytes_per_pixel"] > 14
    assert ref["peak_method"] == "dispatch live bytes" and ref["peak_mb"] > 0
    # MONAI's DiceLoss and FocalLoss, kornia's focal: the same losses, so within tolerance.
    for key in (("dice", "monai"), ("focal", "monai"), ("focal", "kornia")):
        assert by[key]["status"] == "ok" and by[key]["correct"] is True, by[key]
    assert by["dice", "kornia"]["status"] == "skipped" and "no loss equal" in by["dice", "kornia"]["note"]
    assert by["focal", "smp"]["status"] == "skipped"
    if HAS_FUNCTIONAL:
        fused = by["dice", "fastseg"]
        assert fused["status"] == "ok" and fused["correct"] is True
        assert fused["bytes_method"] == "design" and fused["bytes_per_pixel"] == 14
    printed = capsys.readouterr().out
    assert "median ms" in printed and "skipped: kornia" in printed
    assert md.startswith("# fastseg bench") and "| dice | 2x1x32x48 | reference |" in md


def test_bench_plot_file_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    rc = cli.main(["bench", "--quick", "--no-progress", "--loss", "tversky", "--contender", "reference", "monai",
                   "--plot", str(png)])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_bench_progress_bar_on_stderr(capsys):
    assert cli.main(["bench", "--quick", "--loss", "dice", "--contender", "reference", "--no-check"]) == 0
    captured = capsys.readouterr()
    assert "1/1" in captured.err and "[" in captured.err
    assert "1/1" not in captured.out
    assert "err: not checked (--no-check)" in captured.out and "float64 reference" not in captured.out


def test_bench_sizes_and_errors(tmp_path, capsys):
    rc, report, _ = _bench(tmp_path, "--loss", "bce_dice", "--contender", "reference", "--batch", "3", "--size", "20x28")
    assert rc == 0 and report["results"][0]["shape"] == "3x1x20x28"
    assert cli.main(["bench", "--quick", "--loss", "no_such_loss", "--no-progress"]) == 2
    assert "unknown loss" in capsys.readouterr().err
    assert cli.main(["bench", "--quick", "--contender", "nobody", "--no-progress"]) == 2
    assert "unknown contender" in capsys.readouterr().err
    assert cli.main(["bench", "--size", "0", "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["bench", "--dtype", "int8"])
    for bad, message in ((["--repeat", "0"], "--repeat must be >= 1"), (["--warmup", "0"], "--warmup must be >= 1"),
                         (["--device", "gpu0"], "--device must be")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["bench", "--quick", "--no-progress", *bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bad_options_fail_before_any_measuring(tmp_path, capsys, monkeypatch):
    """Exit 2 with a message naming the option, before a case is measured (a long run must not be
    lost at its end to an unwritable output)."""
    from fastseg import benchmark

    monkeypatch.setattr(benchmark, "run", lambda *a, **k: pytest.fail("measured before checking the options"))
    monkeypatch.setattr(benchmark, "edt_benchmark", lambda *a, **k: pytest.fail("measured before checking the options"))
    missing = str(tmp_path / "no_such_folder" / "r.json")
    cases = [
        (["bench", "--quick", "--json", missing], "folder"),
        (["bench", "--quick", "--markdown", str(tmp_path)], "is a folder"),
        (["bench", "--edt", "--quick", "--json", missing], "folder"),
        (["bench", "--edt", "--batch", "0"], "--batch must be >= 1"),
        (["bench", "--edt", "--loss", "dice", "--markdown", str(tmp_path / "e.md")], "--loss, --markdown do not apply"),
        (["bench", "--edt", "--dtype", "float16"], "--dtype does not apply"),
        (["bench", "--quick", "--device", "meta"], "--device must be"),
        (["validate", "--quick", "--json", missing], "folder"),
        (["validate", "--quick", "--contender", "fastseg.reference", "--backend", "torch"], "--backend"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_malformed_sums_and_contenders_are_named(capsys):
    assert cli.main(["bench", "--quick", "--no-progress", "--loss", "focal+", "--contender", "reference"]) == 2
    assert "malformed sum 'focal+'" in capsys.readouterr().err
    assert _validate("--loss", "dice", "--contender", "fastseg.reference:no_such_attribute") == 2
    assert "has no attribute 'no_such_attribute'" in capsys.readouterr().err
    assert _validate("--loss", "hausdorff_dt", "--contender", "fastseg.reference.region") == 2
    assert "has no 'hausdorff_dt'" in capsys.readouterr().err


def test_bench_backend_applies_to_both_fused_contenders(monkeypatch):
    from fastseg import benchmark

    seen = {}

    def record(name):
        def factory(case, device, backend="auto"):
            seen[name] = backend
            return lambda z, t: z.sum()
        return factory

    monkeypatch.setattr(benchmark, "fused_contender", record("fastseg"))
    monkeypatch.setattr(benchmark, "separate_contender", record("fastseg_separate"))
    monkeypatch.setattr(benchmark, "run", lambda cases, contenders, factories=None, **kw: {
        name: factories[name](cases[0], "cpu") for name in ("fastseg", "fastseg_separate")} and pytest.skip("checked"))
    with pytest.raises(pytest.skip.Exception):
        cli.main(["bench", "--quick", "--no-progress", "--loss", "focal+dice", "--backend", "torch"])
    assert seen == {"fastseg": "torch", "fastseg_separate": "torch"}


def _write_module(tmp_path, monkeypatch, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def _validate(*args):
    return cli.main(["validate", "--quick", "--no-progress", "--dtype", "float32", *args])


def test_validate_passes_a_correct_contender(tmp_path, capsys):
    # The reference run in float32 against the float64 reference: correct up to fp32 rounding.
    out = tmp_path / "v.json"
    assert _validate("--contender", "fastseg.reference", "--loss", "dice", "focal", "dibe", "--json", str(out)) == 0
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["contender"] == "fastseg.reference"
    assert {r["loss"] for r in report["rows"]} == {"dice", "focal", "dibe"}
    assert all(r["status"] == "pass" for r in report["rows"])
    scopes = {(r["loss"], r["scope"], r["labels"]) for r in report["rows"]}
    assert ("dice", "batch", "soft") in scopes and ("dice", "image", "ignore") in scopes and ("focal", None, "hard") in scopes
    assert ("dice", "image", "crack-free") in scopes and ("focal", None, "all-crack") in scopes
    # quick: one size; hard labels x scopes, then soft, ignore, crack-free and all-crack x scopes
    # (focal has no scope), then dibe's other alpha x scopes.
    assert len(report["rows"]) == 5 * (2 + 1 + 2) + 2
    assert {r["params"]["alpha"] for r in report["rows"] if r["params"]} == {0.6}
    assert "27/27 comparisons passed" in capsys.readouterr().out


def test_validate_fails_a_wrong_value(tmp_path, monkeypatch, capsys):
    _write_module(tmp_path, monkeypatch, "broken_value", """
        from fastseg import reference
        def dice(input, target, **kw):
            return reference.dice(input, target, **kw) * 1.001   # 0.1 % off: beyond the fp32 tolerance
    """)
    out = tmp_path / "v.json"
    assert _validate("--contender", "broken_value", "--loss", "dice", "--json", str(out)) == 1
    report = json.loads(out.read_text())
    assert report["passed"] is False and all(r["status"] == "FAIL" for r in report["rows"])
    assert "FAILED" in capsys.readouterr().out


def test_validate_compares_gradients_below_the_smallest_normal_in_absolute_terms():
    """A crack-free fp16 batch: Dice's gradient (about 1e-6) lies below fp16's smallest normal
    number, where the format keeps a few bits; the normwise error is taken against that number
    (it would be 4e-3 against the gradient itself, above the fp16 tolerance). Gradients of normal
    size are compared as before (``test_validate_fails_a_wrong_gradient``, fp16 included)."""
    from fastseg import reference, validate

    fused = validate.functional_lookup("torch")("dice")
    row = validate.compare("dice", reference.dice, fused, (2, 1, 37, 53), torch.float16, "batch", "crack-free", "cpu")
    tiny = torch.finfo(torch.float16).tiny
    assert row.status == "pass" and 0 < row.grad_abs < tiny
    assert row.grad_rel == pytest.approx(row.grad_abs / tiny)


def test_validate_fails_a_wrong_gradient(tmp_path, monkeypatch, capsys):
    # Right value, gradient 2 % too large: only the gradient check can catch it.
    _write_module(tmp_path, monkeypatch, "broken_grad", """
        import torch
        from fastseg import reference

        class _ScaleGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.view_as(x)

            @staticmethod
            def backward(ctx, g):
                return g * 1.02

        def focal(input, target, **kw):
            return reference.focal(_ScaleGrad.apply(input), target, **kw)
    """)
    assert _validate("--contender", "broken_grad", "--loss", "focal") == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and "gradient at" in text


def test_validate_fails_a_contender_that_keeps_the_first_margin(tmp_path, monkeypatch):
    # Right at the default margin, blind to any other: what a kernel with the margin compiled in
    # and cached would do. Only the rows with another margin can catch it.
    _write_module(tmp_path, monkeypatch, "stuck_margin", """
        from fastseg import reference
        def hybrid_focal_margin(input, target, m=0.5, **kw):
            return reference.hybrid_focal_margin(input, target, m=0.5, **kw)
    """)
    out = tmp_path / "v.json"
    assert _validate("--contender", "stuck_margin", "--loss", "hybrid_focal_margin", "--json", str(out)) == 1
    rows = json.loads(out.read_text())["rows"]
    failed = [r for r in rows if r["status"] == "FAIL"]
    assert failed and all(r["params"] == {"m": 1.3} for r in failed)
    assert all(r["status"] == "pass" for r in rows if not r["params"])


def test_validate_missing_loss_and_crash_are_failures(tmp_path, monkeypatch):
    _write_module(tmp_path, monkeypatch, "crashing", """
        def dice(input, target, **kw):
            raise RuntimeError("kernel exploded")
    """)
    assert _validate("--contender", "crashing", "--loss", "dice") == 1
    assert _validate("--contender", "crashing", "--loss", "tversky") == 1  # not implemented at all
    assert _validate("--contender", "no_such_module_xyz") == 2


def test_validate_compiled_runs_the_contender_under_torch_compile(tmp_path, monkeypatch):
    # Right in eager code, 0.1 % off once traced by torch.compile: only a compiled run can see it.
    _write_module(tmp_path, monkeypatch, "wrong_when_compiled", """
        import torch
        from fastseg import reference
        def dice(input, target, **kw):
            loss = reference.dice(input, target, **kw)
            return loss * 1.001 if torch.compiler.is_compiling() else loss
    """)
    out = tmp_path / "v.json"
    assert _validate("--contender", "wrong_when_compiled", "--loss", "dice") == 0
    assert _validate("--compiled", "--contender", "wrong_when_compiled", "--loss", "dice", "--json", str(out)) == 1
    report = json.loads(out.read_text())
    assert report["contender"] == "torch.compile(wrong_when_compiled)"
    assert report["rows"] and all(r["status"] == "FAIL" for r in report["rows"])


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FUNCTIONAL, reason="fastseg.functional not built yet")
def test_validate_compiled_fastseg_passes(tmp_path):
    """Scopes, the five label kinds and a second margin through one compiled function each."""
    out = tmp_path / "v.json"
    assert _validate("--compiled", "--loss", "hybrid_focal_margin", "dice", "--json", str(out)) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * (5 * 2) + 2 and all(r["status"] == "pass" for r in rows)


@pytest.mark.skipif(not HAS_FUNCTIONAL, reason="fastseg.functional not built yet")
def test_validate_fastseg_functional_passes():
    losses = ["hybrid_focal_margin", "unified_focal", "dice", "focal"]
    assert _validate("--loss", *losses) == 0


def test_kernels_subcommand_delegates(monkeypatch):
    from fastseg import kernel_report

    seen = []
    monkeypatch.setattr(kernel_report, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["kernels", "--json", "x.json"]) == 0
    assert seen == [["--json", "x.json"]]


def test_kernels_refuses_a_filter_or_arch_that_selects_nothing(capsys):
    """Before any compile: a name no catalog entry contains, or an architecture not built for."""
    from fastseg import kernel_report

    assert kernel_report.main(["--only", "jaccard"]) == 2
    err = capsys.readouterr().err
    assert "no catalog entry's name contains 'jaccard'" in err and "dice" in err
    assert kernel_report.main(["--arch", "75"]) == 2
    assert "--arch must be one of 80, 90" in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "bench" in text and "validate" in text and "kernels" in text


def test_version(capsys):
    expected = f"fastseg {importlib.metadata.version('fastseg')}"  # the installed distribution's version
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == expected
    import fastseg

    assert expected == f"fastseg {fastseg.__version__}"
    done = subprocess.run([sys.executable, "-m", "fastseg", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == expected, done.stderr
