#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one device call (see bench/README.md).
#
#   device run:  bash bench/gpu_session.sh        (writes into $OUT, default bench/results/gpu)
#
# The GPU image has torch, triton, pytest, hypothesis, scipy and matplotlib; MONAI and kornia
# (peer contenders of the benchmark) travel as wheels in .whl/ when carried (bench/README.md).
# CrackForest does not travel: the tests that need it are left out here, they run in CI.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } > "$OUT/environment.txt" 2>&1
python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_kernels.py tests/test_functional_triton.py tests/test_functional_distance.py \
    tests/test_edt_triton.py tests/test_edt.py tests/test_functional.py tests/test_compile.py \
    2>&1 | tee "$OUT/cuda-tests.txt"
python3 -m fastseg validate --json "$OUT/validate.json" 2>&1 | tail -3 | tee "$OUT/validate.txt"
python3 -m fastseg bench --edt --json "$OUT/edt.json" 2>&1 | tee "$OUT/edt.txt"
python3 -m fastseg bench --no-progress --json "$OUT/gpu.json" --markdown "$OUT/gpu.md" --plot "$OUT/gpu.png" 2>&1 | tee "$OUT/bench.txt"
