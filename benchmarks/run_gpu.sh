#!/usr/bin/env bash
# linattn on the GPU machine (no network): build with the CUDA kernels, test (CUDA tests first),
# compute-sanitizer, benchmark. One step per device command; each is meant to stay under ~8 minutes on an H100
# (a device command is cut at 10):
#
#   bash benchmarks/run_gpu.sh build           # pip wheel + install with LINATTN_CUDA=1, MAX_JOBS=16
#   bash benchmarks/run_gpu.sh ensure          # installed? else the wheel carried in DEV_WHEELS, else build
#   bash benchmarks/run_gpu.sh test [pytest args]   # one pytest per file (CUDA files first), logs in $OUT
#   bash benchmarks/run_gpu.sh diagnose        # native backtrace of bad-input calls (benchmarks/diagnose_errors.py)
#   bash benchmarks/run_gpu.sh profile [args]  # per-kernel CUDA times of each chunked op (profile_ops.py)
#   bash benchmarks/run_gpu.sh ncu [ops]       # Nsight Compute speed-of-light, occupancy, launch stats of the
#                                              # linattn kernels of one fwd+bwd per op ($OUT/ncu-<op>.txt)
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
# Environment: TEST_TIMEOUT (s per test file, 300), TEST_CASE_TIMEOUT (s per test, 120), LOG_DIR, SANITIZE_TIMEOUT (s per tool, 150; racecheck: RACECHECK_TIMEOUT, 360), BENCH_TIMEOUT (s per
# bench_gpu.py run, 570),
# SANITIZE_KERNELS (compute-sanitizer kernel filter, default kns=linattn: check only linattn's kernels;
# empty: check every kernel), TRITON_CACHE_DIR / TORCHINDUCTOR_CACHE_DIR (default under build/, which a warm
# device machine keeps, so fla's autotuning and flex_attention's compilation are paid once).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
step=${1:-all}
shift || true
PY=${PYTHON:-python3}
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
  mkdir -p build
  "$PY" -m pip wheel --no-build-isolation --no-deps -w build/wheelhouse . > build/wheel.log 2>&1 \
    || grep -E "error:|FAILED|Error" build/wheel.log | head -40
  "$PY" -m pip install -q --no-deps --force-reinstall build/wheelhouse/linattn-*.whl 2>&1 | tail -3
  have_cuda_build || { fail "build"; return 1; }
  note "linattn built with CUDA kernels; its libraries: $(cd /tmp && "$PY" -c \
    'from linattn import _elf, _library; print(" ".join(_elf.needed_libraries(_library.LIBRARY_PATH)))')"
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
    "$PY" -m pip install -q --no-deps --force-reinstall "/tmp/$name" 2>&1 | tail -3
    have_cuda_build && { note "installed carried $name"; return 0; }
  fi
  build
}

run_tests() {
  # One pytest per file, no xdist, -v: a hung or crashing test is named by the last "file::test" line of its
  # log (per-test limit TEST_CASE_TIMEOUT, thread method: it dumps every thread's stack and ends the process,
  # so the next file still runs). From /tmp so that the installed package, not the source tree, is imported.
  # Logs and JUnit XML go to $LOG_DIR (build/test-logs), packed into $OUT/test-logs.tgz when the device tool
  # sets OUT (it returns at most 8 files). CUDA files first.
  local log_dir=${LOG_DIR:-$ROOT/build/test-logs} f name rc
  rm -rf "$log_dir" && mkdir -p "$log_dir"
  local files=()
  for f in tests/python/test_*_cuda.py; do files+=("$f"); done
  for f in tests/python/test_*.py; do [[ $f == *_cuda.py ]] || files+=("$f"); done
  export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}
  for f in "${files[@]}"; do
    name=$(basename "$f" .py)
    note "pytest $name"
    (cd /tmp && timeout "${TEST_TIMEOUT:-300}" "$PY" -X faulthandler -m pytest -v -rfE -p no:cacheprovider \
      -p no:randomly --timeout "${TEST_CASE_TIMEOUT:-120}" --timeout-method thread \
      --junitxml "$log_dir/$name.xml" "$ROOT/$f" "$@" > "$log_dir/$name.log" 2>&1)
    rc=$?
    grep -E "^(FAILED|ERROR) |[0-9]+ (passed|failed)|Timeout|Fatal Python error" "$log_dir/$name.log" | cut -c1-240 | head -25
    if [[ $rc -ne 0 && $rc -ne 5 ]]; then
      fail "$name (rc $rc; last test started: $(grep -E '::' "$log_dir/$name.log" | tail -1 | cut -c1-160))"
    fi
  done
  if [[ -n "${OUT:-}" ]]; then tar czf "$OUT/test-logs.tgz" -C "$log_dir" . && note "logs in \$OUT/test-logs.tgz"; fi
}

diagnose() {
  # Native backtraces (cuda-gdb also debugs host code) of the bad-input calls that ended the process with
  # SIGSEGV on the GPU machine (2026-11-23), instead of raising.
  note "diagnose: bad-input calls under cuda-gdb"
  (cd /tmp && timeout 240 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info sharedlibrary linattn" \
    --args "$PY" "$ROOT/benchmarks/diagnose_errors.py") 2>&1 | grep -v "^\[New Thread\|^\[Thread .* exited" | tail -80
}

ncu_kernels() {
  # Why a kernel is slow (memory / compute throughput as % of peak, achieved vs theoretical occupancy, registers,
  # shared memory, waves), for the kernels of one forward + backward of each op; NCU_LAUNCHES per op (12).
  local ops=${1:-chunk_gla,chunk_simple_gla,chunk_gated_delta_rule,sliding_window_attention} op dest
  for op in ${ops//,/ }; do
    dest=${OUT:-$ROOT/build}/ncu-$op.txt
    note "ncu $op -> $dest"
    timeout "${NCU_TIMEOUT:-240}" ncu --kernel-name regex:linattn --launch-count "${NCU_LAUNCHES:-12}" \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      "$PY" benchmarks/profile_ops.py --ops "$op" --iters 1 --warmup 0 --no-profiler --shape "${NCU_SHAPE:-8,2048,16,128}" \
      > "$dest" 2>&1 || fail "ncu $op"
    grep -E "^  [a-z_:]+.*linattn|Duration|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy" \
      "$dest" | cut -c1-160 | head -80
  done
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
    # racecheck tracks every shared-memory access: it did not finish the workload in 110 s on the H100.
    local limit=${SANITIZE_TIMEOUT:-150}
    [[ $tool == racecheck ]] && limit=${RACECHECK_TIMEOUT:-360}
    timeout "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 "${filter[@]}" \
      "$PY" benchmarks/sanitize.py || fail "sanitize $tool"
  done
}

install_wheels() {
  if [[ -n "${FLA_WHEELS:-}" ]]; then
    note "installing wheels from $FLA_WHEELS"
    "$PY" -m pip install -q --no-deps --no-index "$FLA_WHEELS"/*.whl || fail "wheel install (continuing without)"
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
  diagnose) ensure && diagnose ;;
  profile) ensure && "$PY" benchmarks/profile_ops.py "$@" ;;
  ncu) ensure && ncu_kernels "$@" ;;
  test) ensure && run_tests "$@" ;;
  sanitize) ensure && sanitize ;;
  bench-chunked) ensure && install_wheels; bench --sections chunked "$@" ;;
  bench-rest) ensure && install_wheels; bench --sections decode,swa,lolcats,liger,mom "$@" ;;
  bench) ensure && install_wheels; bench --sections chunked "$@"; bench --sections decode,swa,lolcats,liger,mom "$@" ;;
  all)
    build || exit 1
    run_tests; sanitize; install_wheels
    bench --sections chunked; bench --sections decode,swa,lolcats,liger,mom ;;
  *) echo "usage: $0 build|ensure|test|diagnose|profile|ncu|sanitize|bench-chunked|bench-rest|bench|all [args]" >&2; exit 2 ;;
esac
exit $status
