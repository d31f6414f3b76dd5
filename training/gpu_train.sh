#!/usr/bin/env bash
# One GPU run of the broad model's fine-tuning (training/gpu.py), time-boxed: everything, the CUDA
# extension's build and the validation passes included, within SECONDS (default 420).
#   usage: training/gpu_train.sh PACK_DIR OUT_DIR [SECONDS]     (PYTHON=... picks the interpreter)
# PACK_DIR comes from `recon-train gpu-pack`; OUT_DIR gets weights.N.pt, run.json and train.log, for
# `recon-train gpu-unpack --from OUT_DIR`.
set -uo pipefail
pack=${1:?usage: training/gpu_train.sh PACK_DIR OUT_DIR [SECONDS]}
out=${2:?usage: training/gpu_train.sh PACK_DIR OUT_DIR [SECONDS]}
secs=${3:-420}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/recon-serve-torch-extensions}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout $((secs + 120)) "${PYTHON:-python3}" -m training.gpu run --pack "$pack" --out "$out" --seconds "$secs" 2>&1 \
  | tee "$out/train.log"
exit "${PIPESTATUS[0]}"
