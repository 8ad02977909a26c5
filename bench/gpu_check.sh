#!/usr/bin/env bash
# One-command check of a GPU station with TensorRT: export (if given a checkpoint), build the
# fp16 engine, compare it with ONNX Runtime on the same graph, print latency.
#   bench/gpu_check.sh CHECKPOINT_DIR|MODEL.onnx [OUT_DIR]
# Exit 0: parity held; 5: parity failed; other: a step failed (its message says which).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
src="${1:?usage: bench/gpu_check.sh CHECKPOINT_DIR|MODEL.onnx [OUT_DIR]}"
out="${2:-runs/gpu_check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
"$python" -c "import tensorrt, onnxruntime; print('TensorRT', tensorrt.__version__, '| onnxruntime', onnxruntime.__version__)"
if [[ -d "$src" ]]; then
  "$python" -m edge.cli export onnx "$src" --out "$out/model.onnx"
  model="$out/model.onnx"
else
  model="$src"
fi
"$python" -m edge.cli export trt "$model" --fp16 --out "$out/model.engine" \
  --min-batch 1 --opt-batch 4 --max-batch 8 --timing-cache "$out/timing.cache"
"$python" "$here/bench/trt_check.py" "$model" "$out/model.engine"
