#!/usr/bin/env bash
# Installs what linattn needs on a fresh machine and installs linattn itself (CPU kernels with a CPU torch;
# CPU + CUDA kernels with a CUDA torch and nvcc). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==${LINATTN_TORCH_VERSION:-2.13.0}"
fi
# transformers, peft, safetensors and tqdm are for linattn.linearize (the ops themselves need torch only).
"$PY" -m pip install -q numpy pytest setuptools wheel "transformers>=4.56" "peft>=0.13" safetensors tqdm
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
"$PY" -m pip install -q --no-build-isolation .
"$PY" -c "import linattn, torch; print(f'linattn {linattn.__version__} installed (torch {torch.__version__}, CUDA kernels: {linattn.has_cuda_kernels()})')"
