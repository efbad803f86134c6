#!/usr/bin/env bash
# linattn on the GPU machine (no network): build with the CUDA kernels, test (CUDA tests first),
# compute-sanitizer, benchmark. One step per device command; each is meant to stay under ~8 minutes on an H100
# (a device command is cut at 10):
#
#   bash benchmarks/run_gpu.sh build           # pip wheel + install with LINATTN_CUDA=1, MAX_JOBS=16
#   bash benchmarks/run_gpu.sh ensure          # installed? else the wheel carried in DEV_WHEELS, else build
#   bash benchmarks/run_gpu.sh test [pytest args]   # tests/python/test_*_cuda.py, then the other tests
#   bash benchmarks/run_gpu.sh sanitize        # memcheck, racecheck, synccheck on benchmarks/sanitize.py
#   bash benchmarks/run_gpu.sh bench-chunked [bench_gpu.py args]   # ceilings + chunked ops vs fla / SDPA
#   bash benchmarks/run_gpu.sh bench-rest [bench_gpu.py args]      # decode, swa, lolcats, liger, mom
#   bash benchmarks/run_gpu.sh bench [bench_gpu.py args]           # both bench steps (more than 10 minutes)
#   bash benchmarks/run_gpu.sh all
#
# The two bench steps add their sections to the same benchmarks/results/<date>-<gpu>.{md,json}; the last line
# of the .md is `geomean speedup vs fla (fwd+bwd): X.XX`. Per-section time budgets: bench_gpu.py --budget.
#
# Wheels (the device machine has no network). Its image already holds einops and matplotlib (listed by the
# device notes, 2026-11), so only the two fla wheels need to travel. fla 0.5.2 needs einops; the plot needs
# matplotlib. Elsewhere, on a machine
# with network, for the device's Python version (e.g. 3.12):
#   pip download flash-linear-attention==0.5.2 einops --no-deps -d wheels/
#   pip download matplotlib -d wheels/ --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64     # also fetches contourpy, cycler, fonttools, kiwisolver, pillow,
#                                           # pyparsing, python-dateutil, six, packaging, numpy: delete the
#                                           # ones the device already has (numpy especially)
# carry wheels/ (git-ignored) to the device and run with FLA_WHEELS=wheels: every .whl in it is installed
# with --no-deps --no-index before a bench step. Without them the fla columns say n/a and the plot is skipped.
#
# Environment: TEST_TIMEOUT (s per pytest run, 300), SANITIZE_TIMEOUT (s per tool, 150), BENCH_TIMEOUT (s per
# bench_gpu.py run, 570),
# SANITIZE_KERNELS (compute-sanitizer kernel filter, default kns=linattn: check only linattn's kernels;
# empty: check every kernel), TRITON_CACHE_DIR / TORCHINDUCTOR_CACHE_DIR (default under build/, which a warm
# device machine keeps, so fla's autotuning and flex_attention's compilation are paid once).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step=${1:-all}
shift || true
PY=${PYTHON:-python}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$ROOT/build/triton-cache}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$ROOT/build/inductor-cache}
status=0

note() { echo "== run_gpu.sh: $* ($(date +%T))"; }
fail() { echo "== run_gpu.sh: FAILED: $*"; status=1; }

have_cuda_build() {
  (cd /tmp && "$PY" -c "import linattn, sys; sys.exit(0 if linattn.has_cuda_kernels() else 1)") 2>/dev/null
}

build() {
  # Builds a wheel (kept under build/wheelhouse and, split into <16 MiB parts, under $OUT when the device tool
  # sets it) so that a later call on a fresh machine can reinstall it with `ensure` instead of recompiling.
  note "build (archs ${LINATTN_CUDA_ARCHS:-80;90a})"
  export MAX_JOBS=${MAX_JOBS:-16} LINATTN_CUDA=1
  rm -rf build/wheelhouse
  pip wheel -q --no-build-isolation --no-deps -w build/wheelhouse . 2>&1 | tail -5
  pip install -q --no-deps --force-reinstall build/wheelhouse/linattn-*.whl 2>&1 | tail -3
  have_cuda_build || { fail "build"; return 1; }
  note "linattn built with CUDA kernels"
  if [[ -n "${OUT:-}" ]]; then
    (cd build/wheelhouse && for w in linattn-*.whl; do split -b 15m "$w" "$OUT/$w.part-"; done)
  fi
}

ensure() {
  # Installed already (warm machine), else a wheel carried in $DEV_WHEELS (parts joined), else build.
  have_cuda_build && { note "linattn already installed"; return 0; }
  local dir=${DEV_WHEELS:-devwheel} part name
  if compgen -G "$dir/linattn-*.whl.part-*" >/dev/null; then
    name=$(basename "$(ls "$dir"/linattn-*.whl.part-* | head -1)"); name=${name%.part-*}
    cat "$dir/$name".part-* > "/tmp/$name"
    pip install -q --no-deps --force-reinstall "/tmp/$name" 2>&1 | tail -3
    have_cuda_build && { note "installed carried $name"; return 0; }
  fi
  build
}

run_tests() {
  # From /tmp so that the installed package, not the source tree, is what gets imported.
  local cuda=() rest=() f
  for f in tests/python/test_*.py; do
    if [[ $f == *_cuda.py ]]; then cuda+=("$ROOT/$f"); else rest+=("$ROOT/$f"); fi
  done
  note "CUDA tests first (${#cuda[@]} files)"
  (cd /tmp && timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -p no:cacheprovider "${cuda[@]}" "$@") \
    || fail "CUDA tests"
  note "other tests (${#rest[@]} files)"
  (cd /tmp && timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -p no:cacheprovider "${rest[@]}" "$@") \
    || fail "other tests"
}

sanitize() {
  local filter=() tool
  local kernels=${SANITIZE_KERNELS-kns=linattn}
  # Checking only linattn's kernels keeps racecheck fast; older sanitizers without the option check all.
  if [[ -n $kernels ]] && compute-sanitizer --help 2>&1 | grep -q -- "--kernel-name"; then
    filter=(--kernel-name "$kernels")
  fi
  for tool in memcheck racecheck synccheck; do
    note "compute-sanitizer --tool $tool ${filter[*]}"
    timeout "${SANITIZE_TIMEOUT:-150}" compute-sanitizer --tool "$tool" --error-exitcode 1 "${filter[@]}" \
      "$PY" benchmarks/sanitize.py || fail "sanitize $tool"
  done
}

install_wheels() {
  if [[ -n "${FLA_WHEELS:-}" ]]; then
    note "installing wheels from $FLA_WHEELS"
    pip install -q --no-deps --no-index "$FLA_WHEELS"/*.whl || fail "wheel install (continuing without)"
  fi
}

bench() {
  # The harness writes its report after every section; the timeout only guards against a hung kernel
  # eating the rest of the device command (sections already done stay in the report).
  note "bench_gpu.py $*"
  timeout "${BENCH_TIMEOUT:-570}" "$PY" benchmarks/bench_gpu.py "$@" || fail "bench $*"
}

case $step in
  build) build ;;
  ensure) ensure ;;
  test) ensure && run_tests "$@" ;;
  sanitize) ensure && sanitize ;;
  bench-chunked) ensure && install_wheels; bench --sections chunked "$@" ;;
  bench-rest) ensure && install_wheels; bench --sections decode,swa,lolcats,liger,mom "$@" ;;
  bench) ensure && install_wheels; bench --sections chunked "$@"; bench --sections decode,swa,lolcats,liger,mom "$@" ;;
  all)
    build || exit 1
    run_tests; sanitize; install_wheels
    bench --sections chunked; bench --sections decode,swa,lolcats,liger,mom ;;
  *) echo "usage: $0 build|test|sanitize|bench-chunked|bench-rest|bench|all [args]" >&2; exit 2 ;;
esac
exit $status
