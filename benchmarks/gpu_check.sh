#!/usr/bin/env bash
# The GPU checks of issue 7 in one prepared run (at most 8.5 minutes), for a session lent a CUDA machine: the CUDA
# tests, the training benchmark on CUDA (bf16 and fp32, batch 10,000 and 65,536, with the card's own matmul peak),
# and the main job (configs/demo.yaml) on CUDA in fp32 and bf16. Uses the machine's own PyTorch (no install:
# PYTHONPATH=src). From the repository root:
#
#     bash benchmarks/gpu_check.sh [RESULTS_DIR]          # default: $OUT when set (the device tool), else gpu-check
#
# Each step has its own time limit, so one hanging step still leaves the others' results (at most 6 files).
set -uo pipefail
results=${1:-${OUT:-gpu-check}}
mkdir -p "$results"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $py -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
    nproc
} 2>&1 | tee "$results/machine.txt"

timeout 120 $py -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py 2>&1 | tee "$results/tests.txt"

timeout 200 $py benchmarks/train_speed.py --device cuda --models dlf_concat,dlf,wukong,dcnv2 \
    --batch-sizes 10000,65536 --precision bf16,fp32 --steps 10 --warmup 3 --threads "$(nproc)" \
    --json "$results/train_speed.json" 2>&1 | tee "$results/train_speed.txt"

# the main job (configs/demo.yaml) on CUDA, in fp32 and in bf16 with the same seed: AUC/logloss and the bf16 gap
timeout 180 $py benchmarks/bf16_accuracy.py --config configs/demo.yaml --seeds 1 --threads "$(nproc)" \
    --set train.device=cuda --json "$results/demo_bf16.json" 2>&1 | tee "$results/demo_bf16.txt"
