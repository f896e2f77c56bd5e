"""Reading fastseg's switches from the environment (``FASTSEG_VALUE_CHECKS``)."""

import os
import subprocess
import sys

import pytest

from fastseg import _checks

VAR = "FASTSEG_VALUE_CHECKS"


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off", " Off "])
def test_false_spellings(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    assert _checks.env_flag(VAR, True) is False


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "On"])
def test_true_spellings(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    assert _checks.env_flag(VAR, False) is True


@pytest.mark.parametrize("raw", [None, ""])
def test_unset_or_empty_gives_the_default(monkeypatch, raw):
    if raw is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, raw)
    assert _checks.env_flag(VAR, True) is True
    assert _checks.env_flag(VAR, False) is False


@pytest.mark.parametrize("raw", ["2", "disable", "n0"])
def test_anything_else_warns_naming_the_variable_and_keeps_the_default(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    with pytest.warns(RuntimeWarning, match=f"{VAR}={raw!r} is not understood"):
        assert _checks.env_flag(VAR, True) is True


def test_the_variable_is_read_at_import():
    code = "import fastseg._checks as c; print(c._value_checks)"
    for raw, expected in (("off", "False"), ("FALSE", "False"), ("yes", "True")):
        env = {**os.environ, VAR: raw}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == expected, (raw, done.stdout, done.stderr)
