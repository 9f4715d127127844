#!/usr/bin/env bash
# Everything this project measures on a GPU, in one go (about 10 minutes on an H100):
#
#     bash benchmarks/gpu.sh [folder]     # logs and results go to folder (default gpu_results/)
#
# 1. benchmarks/speed.py --gpu --gpu-accuracy: eager against the CUDA-graph path per epoch, the
#    whole notebook, and 3 variants x 10 seeds x 20 epochs through each path;
# 2. search rounds 9 and 10 (studies/search.py) on the validation split, 10 seeds per norm; round
#    10 only if at least 150 s of the TIME_BUDGET (seconds, default 540) are left.
# It starts NVIDIA's MPS daemon so that the sweep's worker processes share the GPU side by side,
# and stops it at the end. Each step has a time limit, so a slow step cannot take the others' time.
# The finished runs stay in $RUNS (default /tmp/runs_gpu) and are packed into folder/runs_gpu.tgz.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_results}}
RUNS=${RUNS:-/tmp/runs_gpu}
BUDGET=${TIME_BUDGET:-540}
WORKERS=${WORKERS:-15}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_MININTERVAL=20  # progress bars: a line every 20 s
PYTHON=${PYTHON:-python3}
left() { echo $((BUDGET - SECONDS)); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
nvidia-cuda-mps-control -d && echo "MPS daemon started" | tee -a "$OUT/gpu.txt"

timeout 330 "$PYTHON" benchmarks/speed.py --gpu --gpu-accuracy --workers "$WORKERS" 2>&1 | tee "$OUT/speed.log"
status=${PIPESTATUS[0]}
echo "speed.py ended at ${SECONDS} s (exit $status)" | tee -a "$OUT/speed.log"
pattern='^(GPU|[BLG]: one epoch|whole notebook \(|sweep of 3)'
{ echo "# Output of: python benchmarks/speed.py --gpu --gpu-accuracy --workers $WORKERS | grep -E '$pattern'"
  echo "# ($(nvidia-smi --query-gpu=name --format=csv,noheader), $(nproc) CPU cores, CUDA MPS started first, $(date -u +%F))"
  grep -E "$pattern" "$OUT/speed.log"; } > "$OUT/speed_gpu.txt"  # benchmarks/speed_gpu.txt's format

for round in 9 10; do
    budget=$(left)
    if [ "$round" = 10 ] && [ "$budget" -lt 150 ]; then
        echo "round 10 skipped: ${budget} s left" | tee -a "$OUT/search.log"
        break
    fi
    timeout "$((budget > 30 ? budget - 20 : 10))" "$PYTHON" studies/search.py --rounds "$round" --device cuda \
        --workers "$WORKERS" --results-dir "$RUNS" 2>&1 | tee -a "$OUT/search.log"
    status=${PIPESTATUS[0]}
    echo "round $round ended at ${SECONDS} s (exit $status)" | tee -a "$OUT/search.log"
    cp studies/search.csv studies/search.json "$OUT"/  # after each round, in case the next is cut short
    tar czf "$OUT/runs_gpu.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
done
echo quit | nvidia-cuda-mps-control
echo "done at ${SECONDS} s"
