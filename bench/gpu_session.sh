#!/usr/bin/env bash
# Everything a session with a lent GPU should run (see bench/README.md "On a lent GPU").
#
#   device run:  OUT=$OUT bash bench/gpu_session.sh [STAGE ...]     (default: every stage)
#
# Stages: tests (the CUDA-relevant tests), validate (fastseg validate), edt (fastseg bench --edt),
# bench (fastseg bench at 16x1x2048x2048: every loss compiled twice, reference and fastseg, fits
# one call), bench-4k (4x1x4096x4096, if device time is left), validate-compiled (seven losses
# through torch.compile, if device time is left), kernels (registers and spills).
# One device command may run 600 s and the tests alone compile about 270 Triton specialisations
# from a cold cache, so a session makes three calls: "tests", then "validate edt", then "bench".
# Every stage has its own time limit (STAGE_LIMIT_S, default 540 s: one stage per call fits) and
# a failing stage does not stop the others.
#
# The GPU image has torch, triton, pytest, hypothesis, scipy and matplotlib; MONAI and kornia
# (peer contenders of the benchmark) travel as wheels in .whl/ when carried (bench/README.md).
# CrackForest does not travel: the tests that need it are left out here, they run in CI.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu}
LIMIT=${STAGE_LIMIT_S:-540}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(tests validate edt bench)
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } > "$OUT/environment.txt" 2>&1

run_stage() {  # name, command...: time-limited, output kept in $OUT/<name>.txt, status in $OUT/status.txt
    local name=$1
    shift
    local start=$SECONDS
    timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/status.txt"
    tail -n 4 "$OUT/$name.txt"
}

for stage in "${STAGES[@]}"; do
    case $stage in
        tests) run_stage cuda-tests python3 -m pytest -q -p no:cacheprovider \
                   tests/test_kernels.py tests/test_functional_triton.py tests/test_functional_distance.py \
                   tests/test_edt_triton.py tests/test_edt.py tests/test_functional.py tests/test_compile.py \
                   tests/test_triton_trace.py ;;
        validate) run_stage validate python3 -m fastseg validate --json "$OUT/validate.json" ;;
        validate-compiled) run_stage validate-compiled python3 -m fastseg validate --compiled --dtype float32 \
                   --loss hybrid_focal_margin dibe unified_focal dice focal distance_loss hausdorff_dt \
                   --json "$OUT/validate-compiled.json" ;;
        edt) run_stage edt python3 -m fastseg bench --edt --json "$OUT/edt.json" ;;
        bench) run_stage bench python3 -m fastseg bench --no-progress --batch 16 --size 2048 --json "$OUT/gpu.json" \
                   --markdown "$OUT/gpu.md" --plot "$OUT/gpu.png" ;;
        bench-4k) run_stage bench-4k python3 -m fastseg bench --no-progress --batch 4 --size 4096 \
                   --json "$OUT/gpu-4k.json" --markdown "$OUT/gpu-4k.md" ;;
        kernels) run_stage kernels python3 -m fastseg kernels --arch 90 --jobs 16 ;;
        *) echo "unknown stage: $stage (tests validate validate-compiled edt bench bench-4k kernels)" >&2; exit 2 ;;
    esac
done
