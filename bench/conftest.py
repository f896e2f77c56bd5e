"""pytest-benchmark suites over the cases and contenders of ``fastseg bench`` (one source for both).

    pytest bench/ --benchmark-only                   # the default cases of this device
    pytest bench/ --benchmark-only --bench-quick     # tiny sizes: a smoke test of the suite
    pytest bench/ --benchmark-only --bench-device cuda --benchmark-json out.json

The cases come from :func:`fastseg.benchmark.default_cases` and the contenders from
:data:`fastseg.benchmark.CONTENDERS`, exactly as the command line uses them.
"""

import pytest
import torch

from fastseg import benchmark as fb


def pytest_addoption(parser):
    group = parser.getgroup("fastseg bench")
    group.addoption("--bench-quick", action="store_true", help="tiny cases (2x1x32x48)")
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: cuda when available)")
    group.addoption("--bench-loss", nargs="*", default=None, help="losses (default: fastseg.benchmark.DEFAULT_LOSSES)")


def _device(config) -> str:
    return config.getoption("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        config = metafunc.config
        cases = fb.default_cases(_device(config), losses=config.getoption("--bench-loss"), quick=config.getoption("--bench-quick"))
        params = [(case, name) for case in cases for name in fb.CONTENDERS]
        metafunc.parametrize(("bench_case", "contender"), params, ids=[f"{c.id}-{n}" for c, n in params])


@pytest.fixture(scope="session")
def bench_device(request) -> str:
    return _device(request.config)


_INPUTS: dict = {}


@pytest.fixture
def bench_inputs(bench_case, bench_device):
    """The case's (logits, target), made once per shape and shared by its contenders."""
    key = (bench_case.batch, bench_case.height, bench_case.width, bench_case.dtype, bench_case.data, bench_device)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = fb.make_inputs(bench_case, bench_device)
    return _INPUTS[key]
