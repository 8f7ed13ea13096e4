#!/usr/bin/env bash
# The GPU checks in one go, on a machine with one CUDA GPU (run by hand from a checkout's root):
#   1. the CUDA-marked tests (autocast, channels-last, compile, overlapped copies, Orca and user
#      models on CUDA) from the test files that hold them;
#   2. the CUDA throughput benchmark of docs/benchmarks.md (every case, naive baseline included);
#   3. a short deletion-only sweep (batch size, channels-last, torch.compile) for tuning;
#   4. the pipeline's own cost per perturbation (benchmarks/pipeline.py: a null model, inputs built on the
#      GPU against the host path), with and without the input-building thread.
# Every log and JSON lands in OUTDIR. Each step has its own time limit, so one that hangs leaves the
# others' results.
#
# Usage: [STEPS="tests throughput sweep pipeline"] benchmarks/gpu_check.sh OUTDIR [WHEELS_DIR]
#   STEPS: the steps to run (default all four; about 5-10 min on an H100/H200 if none times out).
#   WHEELS_DIR: for a machine that cannot reach a package index but has torch: wheels of the
#   project's other dependencies (see "GPU" in docs/benchmarks.md), installed without an index into
#   a private folder put on PYTHONPATH.
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUTDIR [WHEELS_DIR]}
wheels=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

if [[ -n $wheels ]]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/screening-site "$wheels"/*.whl \
        || { echo "gpu_check: installing the wheels of $wheels failed" >&2; exit 2; }
    export PYTHONPATH="$PYTHONPATH:/tmp/screening-site"
fi
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')" || exit 2

{ nvidia-smi; "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } \
    > "$out/machine.txt" 2>&1

steps=" ${STEPS:-tests throughput sweep pipeline} "
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUTDIR/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "== $name: exit $rc"
    ((rc == 0)) || status=1
}

[[ $steps == *" tests "* ]] && step gpu_tests 180 "$python" -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_assemble.py tests/test_engine.py tests/test_score.py tests/test_orca.py tests/test_overlap.py \
    tests/test_precision.py tests/test_tuning.py tests/test_user_model.py
[[ $steps == *" throughput "* ]] && step throughput 240 "$python" benchmarks/throughput.py --device cuda --precision bf16 --batch-size 16 \
    --channels-last --n-perturbations 256 --naive-perturbations 4 --json "$out/throughput_cuda.json"
# deletion only: batch size, channels-last, compile (the first batch of each shape compiles: minutes)
sweep=("32 --channels-last" "64 --channels-last" "32" "32 --channels-last --compile")
[[ $steps == *" sweep "* ]] && for i in "${!sweep[@]}"; do
    read -r batch flags <<< "${sweep[$i]}"
    step "sweep$i" $((i == 3 ? 180 : 90)) "$python" benchmarks/throughput.py --device cuda --precision bf16 --batch-size "$batch" \
        $flags --kinds deletion --no-naive --n-perturbations $((batch * 8)) --json "$out/sweep$i.json"
done
[[ $steps == *" pipeline "* ]] && step pipeline 150 "$python" benchmarks/pipeline.py --device cuda --n 64 \
    --batch-sizes 8,32 --threads 4 --json "$out/pipeline_cuda.json"
[[ $steps == *" pipeline "* ]] && step pipeline_overlap 150 "$python" benchmarks/pipeline.py --device cuda --n 64 \
    --batch-sizes 8,32 --threads 4 --overlap --paths device --json "$out/pipeline_cuda_overlap.json"
[[ $steps == *" pipeline "* ]] && step scores 90 "$python" benchmarks/scores.py --device cuda --json "$out/scores_cuda.json"
exit $status
