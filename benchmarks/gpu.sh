#!/usr/bin/env bash
# The GPU figures in one call of at most 8 minutes on an H100/H200 (benchmarks/gpu.py says what it
# measures), from the repository's root:
#
#     bash benchmarks/gpu.sh [folder]             # results in folder (default gpu_results/, git-ignored)
#     STUDIES=1 bash benchmarks/gpu.sh [folder]   # then the studies too, on the GPU, into folder/Images
#
# Needs a Python with torch, numpy, tqdm and torchvision (PYTHON=...; default: .venv/bin/python or
# python3, the first whose torch has CUDA, or with DRY_RUN=1 any torch) and MNIST's four raw files
# already in data/MNIST/raw (no internet is needed). TIME_BUDGET (seconds, default 360) is shared among the
# steps, each cut at its deadline; a timeout of TIME_BUDGET + 15 s stops gpu.py, 90 s the inference
# timing: 465 s in all by default (STUDIES=1 adds STUDIES_BUDGET). A copy of
# the tree without its git names its commit with SOURCE_COMMIT=<hash> (files.run_info). DRY_RUN=1
# runs gpu.py --dry-run instead (the CPU, tiny sizes: a check of the script, no figures).
# After gpu.py: benchmarks/inference.py on the GPU (folder/inference_gpu.txt) and, with STUDIES=1,
# the seeds, batch-size, shift and AdaBN studies with --device cuda into folder/Images (runs in
# folder/runs; each study resumes, so a second call finishes what a first one's STUDIES_BUDGET cut),
# every results file marked with its device. To publish them, copy folder/Images/* over Images/ and
# run python report.py; a GPU's runs are not a CPU's to every digit.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu_results}
BUDGET=${TIME_BUDGET:-360}
if [ -z "${PYTHON:-}" ]; then  # the first with torch (and, unless DRY_RUN, CUDA): make's .venv, then python3
    for PYTHON in .venv/bin/python python3; do
        "$PYTHON" -c "import sys, torch; sys.exit(not (${DRY_RUN:+True or} torch.cuda.is_available()))" 2>/dev/null && break
    done
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"  # where there is one
if ! "$PYTHON" -c "import torch, numpy, tqdm, torchvision" 2>>"$OUT/gpu.txt"; then
    echo "gpu.sh: $PYTHON cannot import torch, numpy, tqdm or torchvision (see $OUT/gpu.txt): name a Python" \
        "that can with PYTHON=..., or install the missing one (offline: unpack its wheel into a folder on PYTHONPATH)" >&2
    exit 1
fi
if [ -z "${DRY_RUN:-}" ] && [ "$(ls data/MNIST/raw/*-ubyte 2>/dev/null | wc -l)" -lt 4 ]; then
    echo "gpu.sh: MNIST's four raw files are not in data/MNIST/raw (no download is tried here): copy them there" >&2
    exit 1
fi
timeout "$((${BUDGET%.*} + 15))" "$PYTHON" -m benchmarks.gpu --out "$OUT" --budget "$BUDGET" ${DRY_RUN:+--dry-run} 2>&1 \
    | tee "$OUT/gpu.log"
status=${PIPESTATUS[0]}
if [ -z "${DRY_RUN:-}" ]; then
    timeout 90 "$PYTHON" -m benchmarks.inference --device cuda > "$OUT/inference_gpu.txt" 2>>"$OUT/gpu.log" \
        || echo "gpu.sh: benchmarks.inference on the GPU failed or ran out of time (see $OUT/gpu.log)" >&2
fi
if [ -n "${STUDIES:-}" ]; then
    left=${STUDIES_BUDGET:-600}
    for study in seeds batch_size shift adabn; do
        [ "$left" -gt 30 ] || { echo "gpu.sh: no time left for studies.$study" | tee -a "$OUT/gpu.log"; break; }
        begin=$SECONDS
        device=cuda tiny=""  # DRY_RUN: the same commands on the CPU, 2 seeds of 1 epoch on a few images
        if [ -n "${DRY_RUN:-}" ]; then
            device=cpu tiny="--seeds 1 2 --epochs 1 --train-limit 512 --test-limit 128"
            [ "$study" = batch_size ] && tiny="$tiny --real-seeds 1 2"
        fi
        timeout "$left" "$PYTHON" -m "studies.$study" --device "$device" --images "$OUT/Images" \
            --results-dir "$OUT/runs" $tiny 2>&1 | tee -a "$OUT/gpu.log"
        left=$((left - (SECONDS - begin)))
    done
fi
echo "gpu.sh: exit $status after ${SECONDS} s; results in $OUT/: $(cd "$OUT" && ls | tr "\n" " ")"
exit "$status"
