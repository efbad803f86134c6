#!/usr/bin/env bash
# On the GPU machine (no network): build linattn with its CUDA kernels, run the GPU test suite and
# compute-sanitizer, then the benchmark against fla (installed from wheels carried in $FLA_WHEELS).
# Steps can be run one at a time: bash benchmarks/run_gpu.sh build|test|sanitize|bench
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-all}
if [[ $step == build || $step == all ]]; then
  export MAX_JOBS=${MAX_JOBS:-16} LINATTN_CUDA=1
  pip install -q --no-build-isolation --no-deps . 2>&1 | tail -3
  python -c "import linattn; assert linattn.has_cuda_kernels(); print('linattn built with CUDA kernels')"
fi
if [[ $step == test || $step == all ]]; then
  (cd /tmp && python -m pytest -q -x "$OLDPWD/tests/python" -p no:cacheprovider)
fi
if [[ $step == sanitize || $step == all ]]; then
  for tool in memcheck racecheck synccheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 1 python benchmarks/sanitize.py
  done
fi
if [[ $step == bench || $step == all ]]; then
  if [[ -n "${FLA_WHEELS:-}" ]]; then pip install -q --no-deps "$FLA_WHEELS"/*.whl; fi
  python benchmarks/bench_gpu.py "${@:2}"
fi
