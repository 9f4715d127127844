#!/usr/bin/env bash
# Everything this project measures on a GPU, in one go (about 10 minutes on an H100):
#
#     bash benchmarks/gpu.sh [folder]     # logs and results go to folder (default gpu_results/)
#
# 1. benchmarks/speed.py --gpu --gpu-accuracy: eager against the CUDA-graph path per epoch, the
#    whole notebook, and 3 variants x 10 seeds x 20 epochs through each path; its summary lines go
#    to folder/speed_gpu.txt, in the format of the committed benchmarks/speed_gpu.txt;
# 2. search rounds 9 and 10 (studies/search.py) on the validation split, 10 seeds per norm.
#
# Needs: MNIST in data/ (`python -c "import data; data.load_mnist()"` fetches it), the packages of
# requirements.txt for $PYTHON (default python3), and TIME_BUDGET seconds (default 620): each step
# gets a time limit from what is left, so a slow step cannot take the others' time. The rounds
# update studies/search.csv and search.json only if both finish; otherwise the files are left as
# they were, and the finished runs stay in $RUNS (default /tmp/runs_gpu) so that a rerun resumes.
# Where the tree is a copy whose git is missing or stale, set SOURCE_COMMIT to the commit it is
# (the results record it). NVIDIA's MPS daemon is started, so that the sweeps' worker processes
# share the GPU side by side, and stopped at the end if this script started it.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_results}}
RUNS=${RUNS:-/tmp/runs_gpu}
BUDGET=${TIME_BUDGET:-620}
WORKERS=${WORKERS:-15}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_MININTERVAL=20  # progress bars: a line every 20 s
left() { echo $((BUDGET - SECONDS)); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
if ! pgrep -x nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    echo "MPS daemon started" | tee -a "$OUT/gpu.txt"
    trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi

# speed.py takes about 300 s on an H100; the rounds about 270 s
limit=$(( $(left) - 270 < 330 ? $(left) - 270 : 330 ))
if [ "$limit" -lt 60 ]; then
    echo "speed.py skipped: ${limit} s would be left for it" | tee "$OUT/speed.log"
else
    timeout "$limit" "$PYTHON" benchmarks/speed.py --gpu --gpu-accuracy --workers "$WORKERS" 2>&1 | tee "$OUT/speed.log"
    status=${PIPESTATUS[0]}
    echo "speed.py ended at ${SECONDS} s (exit $status)" | tee -a "$OUT/speed.log"
fi
pattern='^(GPU|[BLG]: one epoch|whole notebook \(|sweep of 3)'
{ echo "# Output of: python benchmarks/speed.py --gpu --gpu-accuracy --workers $WORKERS | grep -E '$pattern'"
  echo "# ($(nvidia-smi --query-gpu=name --format=csv,noheader), $(nproc) CPU cores, CUDA MPS on, $(date -u +%F))"
  grep -E "$pattern" "$OUT/speed.log"; } > "$OUT/speed_gpu.txt"

backup=$(mktemp -d)
cp studies/search.csv studies/search.json "$backup"/
status=0
for round in 9 10; do
    budget=$(left)
    if [ "$budget" -lt 60 ]; then
        echo "round $round not run: ${budget} s left" | tee -a "$OUT/search.log"
        status=1
        break
    fi
    timeout "$((budget - 10))" "$PYTHON" studies/search.py --rounds "$round" --device cuda \
        --workers "$WORKERS" --results-dir "$RUNS" 2>&1 | tee -a "$OUT/search.log"
    status=${PIPESTATUS[0]}
    echo "round $round ended at ${SECONDS} s (exit $status)" | tee -a "$OUT/search.log"
    [ "$status" = 0 ] || break
done
[ -d "$RUNS" ] && tar czf "$OUT/runs_gpu.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
if [ "$status" = 0 ]; then
    cp studies/search.csv studies/search.json "$OUT"/
else  # one round without the other would pair round 10 with another session's check
    cp "$backup"/search.csv "$backup"/search.json studies/
    echo "rounds 9-10 incomplete: studies/search.* left as they were; rerun to finish (finished runs load from $RUNS)" \
        | tee -a "$OUT/search.log"
fi
echo "done at ${SECONDS} s"
