"""The kernel compile gate (``fastseg.kernel_report``): AOT compilation for sm_90 without a GPU.

Compiles a few catalog specialisations with ``triton.compile`` + ``GPUTarget`` and reads the
cubins' resource usage with the wheel's ``cuobjdump``; skips cleanly when that toolchain is
unavailable. The full catalog (``python -m fastseg kernels``) is too slow for the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastseg import kernel_report as kr
from fastseg.engine.spec import Quantity as Q

SAMPLE = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _fused_loss_forward_kernel:
  REG:147 STACK:16 SHARED:1024 LOCAL:8 CONSTANT[0]:648 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function other:
  REG:32 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:568 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_parse_resource_usage():
    usage = kr.parse_resource_usage(SAMPLE)
    assert set(usage) == {"_fused_loss_forward_kernel", "other"}
    fwd = usage["_fused_loss_forward_kernel"]
    assert (fwd["REG"], fwd["STACK"], fwd["SHARED"], fwd["LOCAL"]) == (147, 16, 1024, 8)
    assert usage["other"]["REG"] == 32


def test_catalog_variants_cover_every_loss_and_kernel():
    todo = kr.variants()
    losses = {loss for users in todo.values() for loss in users}
    assert losses == {name for name, _, _ in kr.CATALOG} | {"edt"}
    kinds = {v.kernel for v in todo}
    assert kinds == {"forward", "backward", "reduce", "edt", "edt_sweep"}
    # backward kernels never carry the zero-derivative sums
    for v in todo:
        if v.kernel == "backward":
            assert not set(v.quantities) & {Q.SUM_T, Q.SUM_TT, Q.COUNT}
    dtypes = {(v.logits, v.target, v.valid, v.weight) for v in todo if v.kernel == "forward"}
    assert {("fp32", "u8", False, False), ("fp16", "u8", False, False), ("bf16", "u8", False, False)} <= dtypes
    assert ("fp32", "fp32", True, True) in dtypes


def test_sm90_compile_gate_reports_registers_and_no_spills(capsys):
    argv = ["--json", "--arch", "90", "--only", "hybrid_focal_margin_symmetric", "--logits", "bf16", "--jobs", "2"]
    status = kr.main(argv)
    captured = capsys.readouterr()
    if status == 3:
        pytest.skip(f"compile toolchain unavailable: {captured.err.strip()[-300:]}")
    rows = json.loads(captured.out)
    assert {r["kernel"] for r in rows} == {"forward", "backward", "reduce"}
    for r in rows:
        assert r["error"] == "", r
        assert r["arch"] == "sm_90"
        assert 0 < r["registers"] <= 255, r
        assert r["spill_bytes"] == 0, r
        assert r["shared_bytes"] >= 0 and r["dynamic_shared_bytes"] >= 0, r
    forward = [r for r in rows if r["kernel"] == "forward" and not r["atomic"]]
    assert {r["quantities"] for r in forward} == {"FG_CE,BG_CE,COUNT,TP,FP,FN"}
    assert any(r["valid"] and r["weight"] and r["target"] == "fp32" for r in forward)
    assert status == 0
    table = kr.format_table(rows)
    assert table.splitlines()[0].split()[:3] == ["arch", "kernel", "quantities"]
    assert len(table.splitlines()) == len(rows) + 2


def test_sm90_compile_gate_covers_the_edt_kernel(capsys):
    status = kr.main(["--json", "--arch", "90", "--only", "edt", "--jobs", "1"])
    captured = capsys.readouterr()
    if status == 3:
        pytest.skip(f"compile toolchain unavailable: {captured.err.strip()[-300:]}")
    rows = json.loads(captured.out)
    # float32 and float64 maps (kernels.edt.map_dtype), in the "logits" column; each as a contiguous
    # batch launches it (16-aligned) and in the general specialisation
    envelopes = sorted((r["quantities"], r["logits"], r["aligned"]) for r in rows if r["kernel"] == "edt")
    assert envelopes == [("lines=32", maps, aligned) for maps in ("fp32", "fp64") for aligned in (False, True)]
    for maps in ("fp32", "fp64"):
        for aligned in (False, True):
            widths = sorted(int(r["quantities"].split("=")[1]) for r in rows
                            if r["kernel"] == "edt_sweep" and r["logits"] == maps and r["aligned"] == aligned)
            assert widths == [16, 32, 64, 128, 256, 512, 1024], (maps, aligned)
    for r in rows:
        assert r["error"] == "" and r["spill_bytes"] == 0 and 0 < r["registers"] <= 255, r
    assert status == 0


def test_the_gate_compiles_the_specialisation_that_triton_launches():
    """Triton's launcher compiles ints equal to 1 in and marks 16-divisible pointers and ints, which
    changes the code (vectorised loads, registers); the gate's ``aligned`` variants must be what it
    compiles for a contiguous binary batch. ``launch_specialisation.py`` records real launches and
    asks Triton's own runtime binder how it would specialise them."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parent / "launch_specialisation.py"
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    if "unavailable" in report:
        pytest.skip(f"this Triton's runtime binder cannot be called here: {report['unavailable']}")
    kernels = {case.split()[-1] for case in report}
    assert kernels == {"_fused_loss_forward_kernel", "_reduce_partials_kernel", "_fused_loss_backward_kernel",
                       "_edt_sweep_kernel", "_edt_envelope_kernel"}
    for case, sides in report.items():
        assert sides["gate"] == sides["triton"], case
        assert sides["triton"]["divisible"], case  # the specialisation is not the general one
