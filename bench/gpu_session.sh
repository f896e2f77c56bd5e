#!/usr/bin/env bash
# Everything a session with a lent GPU should run (see bench/README.md "On a lent GPU").
#
#   device run:  OUT=$OUT bash bench/gpu_session.sh [STAGE ...]     (default: the one-call plan)
#
# A session gets about 15 minutes of device time, machine start included, and one command may
# run 600 s, so the default is one call of at most 570 s, in the order of what issue 5 still
# needs from a GPU:
#   distance-tests (150 s)  the EDT against SciPy and the distance losses vs the reference, on CUDA
#   edt (120 s)             fastseg bench --edt at 16x1x2048x2048 (SciPy, ~14 s a call, gets 1 warm-up + 3 rounds)
#   tests (170 s)           the other CUDA tests: fused vs reference, float32 accuracy, CUDA-graph capture, torch.compile
#                           through the Triton ops, the > 2^31-element case
#   bench-short (130 s)     hybrid_focal_margin, distance_loss, hausdorff_dt at 16x1x2048x2048 against
#                           the reference and torch.compile(reference) (MONAI's Hausdorff loss runs SciPy
#                           on the host, ~30 s a step at this size: in the full bench stage)
# More stages, for a second call if device time is left: bench (every default loss, 16x1x2048x2048),
# bench-4k (4x1x4096x4096), validate, validate-compiled (seven losses through torch.compile), sweep
# (hypothesis draws hyperparameters, data and logit dtypes for the Triton kernels on CUDA), kernels (registers and
# spills). Each stage has its own time limit (STAGE_LIMIT_S overrides them all) and a
# failing stage does not stop the others. The test stages run with pytest-xdist (-n 8) when it is
# importable: the first CUDA run compiles a few hundred Triton specialisations, which would take
# most of the call in one process.
#
# The GPU image has torch, triton, pytest, hypothesis, scipy and matplotlib; MONAI, kornia and
# pytest-xdist travel as wheels in .whl/ when carried (bench/README.md).
# CrackForest does not travel: the tests that need it are left out here, they run in CI.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(distance-tests edt tests bench-short)
declare -A LIMITS=([distance-tests]=150 [edt]=120 [tests]=170 [bench-short]=130)
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
# An editable install maps fastseg.kernels onto kernels/ (pyproject's package-dir). It needs
# setuptools >= 64 in the image (no build isolation: the machine has no network), which a
# Python 3.12 image may lack; then the checkout runs in place: fastseg/kernels links to kernels/
# and the repository root goes on PYTHONPATH (the tests' subprocesses import fastseg too).
if ! python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.txt" 2>&1; then
    echo "editable install failed (see install.txt): running from the checkout" | tee -a "$OUT/status.txt"
    [ -e fastseg/kernels ] || ln -s ../kernels fastseg/kernels
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import fastseg.kernels.fused_loss, fastseg.kernels.edt" >> "$OUT/install.txt" 2>&1 \
    || { echo "fastseg.kernels cannot be imported (see install.txt)" | tee -a "$OUT/status.txt"; exit 1; }
{ nvidia-smi; python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"; } > "$OUT/environment.txt" 2>&1

PYTEST=(python3 -m pytest -q -p no:cacheprovider)
if python3 -c "import xdist" 2>/dev/null; then
    # Inductor compiles in each worker's own process: a pool of 16 compile subprocesses per worker
    # (its default here) would start 128 processes for a few tiny graphs.
    PYTEST=(env TORCHINDUCTOR_COMPILE_THREADS=1 "${PYTEST[@]}" -n 8)
fi
python3 -c "import monai" 2>/dev/null || PYTEST+=(-k "not monai")  # the peer comparisons run in CI

run_stage() {  # name, command...: time-limited, output kept in $OUT/<name>.txt, status in $OUT/status.txt
    local name=$1
    shift
    local limit=${STAGE_LIMIT_S:-${LIMITS[$name]:-540}}
    local start=$SECONDS
    # SIGINT at the limit: pytest then still prints its summary (what passed and failed so far), and
    # the benchmark has rewritten its JSON after every finished case.
    timeout --signal=INT --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    local summary
    summary=$(grep -E "^[0-9]+ (passed|failed)|[0-9]+ (passed|failed|errors?)(,| in )" "$OUT/$name.txt" | tail -n 1)
    echo "$name rc=$rc seconds=$((SECONDS - start)) limit=$limit ${summary}" | tee -a "$OUT/status.txt"
    grep -E "^(FAILED|ERROR) " "$OUT/$name.txt" | head -n 20
    tail -n 4 "$OUT/$name.txt"
}

for stage in "${STAGES[@]}"; do
    case $stage in
        distance-tests) run_stage distance-tests "${PYTEST[@]}" \
                   tests/test_edt_triton.py tests/test_edt.py tests/test_functional_distance.py ;;
        tests) run_stage tests "${PYTEST[@]}" \
                   tests/test_kernels.py tests/test_functional_triton.py tests/test_numerics.py tests/test_triton_trace.py ;;
        edt) run_stage edt python3 -m fastseg bench --edt --repeat 10 --warmup 2 --json "$OUT/edt.json" ;;
        bench-short) run_stage bench-short python3 -m fastseg bench --no-progress --batch 16 --size 2048 --repeat 10 \
                   --loss hybrid_focal_margin distance_loss hausdorff_dt --contender fastseg reference compiled \
                   --json "$OUT/gpu-short.json" --markdown "$OUT/gpu-short.md" ;;
        bench) run_stage bench python3 -m fastseg bench --no-progress --batch 16 --size 2048 --json "$OUT/gpu.json" \
                   --markdown "$OUT/gpu.md" --plot "$OUT/gpu.png" ;;
        bench-4k) run_stage bench-4k python3 -m fastseg bench --no-progress --batch 4 --size 4096 \
                   --json "$OUT/gpu-4k.json" --markdown "$OUT/gpu-4k.md" ;;
        validate) run_stage validate python3 -m fastseg validate --json "$OUT/validate.json" ;;
        validate-compiled) run_stage validate-compiled python3 -m fastseg validate --compiled --dtype float32 \
                   --loss hybrid_focal_margin dibe unified_focal dice focal distance_loss hausdorff_dt \
                   --json "$OUT/validate-compiled.json" ;;
        sweep) run_stage sweep env FASTSEG_SWEEP_EXAMPLES=300 "${PYTEST[@]}" \
                   tests/test_parameter_sweep.py::test_triton_kernels_match_the_reference_over_their_parameters ;;
        kernels) run_stage kernels python3 -m fastseg kernels --arch 90 --jobs 16 ;;
        *) echo "unknown stage: $stage (distance-tests edt tests bench-short bench bench-4k validate validate-compiled sweep kernels)" >&2
           exit 2 ;;
    esac
done
