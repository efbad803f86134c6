#!/usr/bin/env bash
# Runs every test: installs dependencies and linattn, compiles the CUDA sources, runs pytest (CUDA tests
# run when a GPU is present), builds the library with CMake and runs the GoogleTest suite with ctest, both
# in-tree and as an outside project that finds the installed package with find_package(linattn).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

if ! dpkg -s libgtest-dev >/dev/null 2>&1 || ! dpkg -s libfmt-dev >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libgtest-dev libfmt-dev cmake ninja-build >/dev/null
fi
bash scripts/setup.sh
bash scripts/compile_cuda.sh

# pytest from outside the source tree so the installed package is the one under test.
(cd /tmp && "$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/python" "$@")

TORCH_CMAKE=$("$PY" -c "import torch; print(torch.utils.cmake_prefix_path)")
LINATTN_CMAKE=$(cd /tmp && "$PY" -c "import linattn; print(linattn.cmake_prefix_path)")
BUILD=${LINATTN_BUILD_DIR:-$ROOT/build/cmake}
GEN=$(command -v ninja >/dev/null && echo "-GNinja" || echo "")
# In-tree CMake build of the same sources (what LibTorch users build), with its GoogleTest suite.
cmake -S . -B "$BUILD/tree" $GEN -DCMAKE_BUILD_TYPE=Release -DLINATTN_BUILD_TESTS=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" >/dev/null
cmake --build "$BUILD/tree" -j "$(nproc)"
(cd "$BUILD/tree" && ctest --output-on-failure)
# An outside project against the installed Python package: find_package(linattn) + linattn::linattn.
cmake -S tests/cpp -B "$BUILD/consumer" $GEN -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$LINATTN_CMAKE;$TORCH_CMAKE" >/dev/null
cmake --build "$BUILD/consumer" -j "$(nproc)"
(cd "$BUILD/consumer" && ctest --output-on-failure)
