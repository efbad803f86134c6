#!/usr/bin/env bash
# Compiles every CUDA source with nvcc (kernels are torch-free) and syntax-checks the CUDA glue against the
# installed torch's headers, so CUDA code is compile-checked even on machines whose torch is a CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then echo "compile_cuda: nvcc not found, skipping"; exit 0; fi
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -f /usr/local/cuda/include/cuda_runtime.h ]; then CUDA_HOME=/usr/local/cuda
  else CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$NVCC")")"); fi
fi
ARCHS=${LINATTN_CUDA_ARCHS:-"80;90a"}
GENCODE=""
for a in ${ARCHS//;/ }; do GENCODE+=" -gencode=arch=compute_${a},code=sm_${a}"; done
OUT=${LINATTN_CUDA_OBJDIR:-$(mktemp -d)}
mapfile -t CU < <(find ops csrc -name '*.cu' | sort)
echo "compile_cuda: ${#CU[@]} .cu files with $("$NVCC" --version | tail -1) for sm ${ARCHS}"
export NVCC GENCODE OUT
printf '%s\n' "${CU[@]}" | xargs -r -P "$(nproc)" -I{} sh -c \
  '"$NVCC" -std=c++17 --expt-relaxed-constexpr -O3 -Icsrc/include -Icsrc -I. $GENCODE -c "{}" -o "$OUT/$(echo {} | tr / _).o" || { echo "FAILED: {}"; exit 255; }'
# Link the objects together: a non-template __global__ defined in a shared header shows up here as a
# multiple definition, which compiling files one by one never reports.
ld -r "$OUT"/*.o -o "$OUT/linked.o"
TP=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__))")
for f in $(find ops csrc -name '*_cuda.cpp' | sort); do
  g++ -std=c++20 -O0 -c -DLINATTN_WITH_CUDA -Icsrc/include -Icsrc -I. -I"$TP/include" \
    -I"$TP/include/torch/csrc/api/include" -I"$CUDA_HOME/include" "$f" -o "$OUT/glue_$(echo "$f" | tr / _).o"
done
# Every kernel launcher the glue calls (linattn::...::gpu::) must be defined by the compiled .cu objects: a
# launcher declared but never instantiated would otherwise only show up when the CUDA library is linked.
nm --undefined-only "$OUT"/glue_*.o | awk '{print $NF}' | sort -u > "$OUT/undefined.txt"
paste "$OUT/undefined.txt" <(c++filt < "$OUT/undefined.txt") \
  | awk -F'\t' '$2 ~ /^([^(]* )?linattn::([a-z_]+::)?gpu::/ {print $1}' > "$OUT/launchers_used.txt"
nm --defined-only "$OUT/linked.o" | awk '$2 ~ /^[TtWw]$/ {print $3}' | sort -u > "$OUT/launchers_defined.txt"
MISSING=$(comm -23 "$OUT/launchers_used.txt" "$OUT/launchers_defined.txt" | c++filt)
if [ -n "$MISSING" ]; then echo "compile_cuda: launchers used by the glue but never compiled:"; echo "$MISSING"; exit 1; fi
echo "compile_cuda: $(wc -l < "$OUT/launchers_used.txt") launchers used by the glue, all defined"
echo "compile_cuda: all CUDA sources compiled"
