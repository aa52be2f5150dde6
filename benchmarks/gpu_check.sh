#!/usr/bin/env bash
# The GPU checks of issue 7 in one prepared run (at most 8.5 minutes), for a session lent a CUDA machine: the CUDA
# tests, the training benchmark on CUDA (bf16 and fp32, batch 10,000 and 65,536, with the card's own matmul peak),
# and the main job (configs/demo.yaml) on CUDA in fp32 and bf16. Uses the machine's own PyTorch (no install:
# PYTHONPATH=src). From the repository root:
#
#     bash benchmarks/gpu_check.sh [RESULTS_DIR]          # default: $OUT when set (the device tool), else gpu-check
#
# Each step has its own time limit, so one hanging step still leaves the others' results (at most 6 files); the
# training benchmark gets what the tests leave of the 8.5 minutes, less the main job's share, and its JSON holds every
# configuration that finished in time.
set -uo pipefail
results=${1:-${OUT:-gpu-check}}
mkdir -p "$results"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
deadline=$((SECONDS + 500))  # the caller's limit is 8.5 minutes (510 s)

budget() {  # seconds left until the deadline, less $1 kept for the steps after this one (at least 1: 0 means none)
    local left=$((deadline - SECONDS - $1))
    echo $((left > 0 ? left : 1))
}

{
    date -u
    timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    timeout 60 $py -c "import torch as t; print('torch', t.__version__, t.version.cuda, t.cuda.get_device_name())"
    nproc
} 2>&1 | tee "$results/machine.txt"

timeout 120 $py -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py 2>&1 | tee "$results/tests.txt"

timeout "$(budget 150)" $py benchmarks/train_speed.py --device cuda --models dlf_concat,dlf,wukong,dcnv2 \
    --batch-sizes 10000,65536 --precision bf16,fp32 --steps 10 --warmup 3 --threads "$(nproc)" \
    --json "$results/train_speed.json" 2>&1 | tee "$results/train_speed.txt"

# the main job (configs/demo.yaml) on CUDA, in fp32 and in bf16 with the same seed: AUC/logloss and the bf16 gap
timeout "$(budget 0)" $py benchmarks/bf16_accuracy.py --config configs/demo.yaml --seeds 1 --threads "$(nproc)" \
    --set train.device=cuda --json "$results/demo_bf16.json" 2>&1 | tee "$results/demo_bf16.txt"
