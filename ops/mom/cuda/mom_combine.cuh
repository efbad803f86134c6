#pragma once
// mom_combine (and the backward of mom_dispatch: weights == nullptr) and the backward of mom_combine, one
// kernel each. Each CTA re-derives its tokens' rows exactly as dispatch placed them (mom_pack.cuh), so the
// combine needs no inverse permutation and no atomics: one warp owns a token and sums its copies in row
// order (ascending memory, then slot), each product w * y rounded to fp32 before the fp32 sum, which is the
// order and rounding of the CPU kernel's index_add, so both give the same bits.
#include "ops/mom/cuda/mom_pack.cuh"

namespace linattn::mom::gpu {

template <typename T>
__global__ void __launch_bounds__(kThreads) combine_kernel(const Params p) {
  extern __shared__ int mom_smem[];
  Packer pk(mom_smem, p);
  const int k = int(p.topk);
  const int64_t dim = p.dim;
  const T* ys = static_cast<const T*>(p.y_sorted);
  T* y = static_cast<T*>(p.y);
  for_each_chunk(p, pk, [&](int64_t n, int count, int row) {
    if (row >= 0) {
      pk.chunk_row[pk.tid] = row;
      pk.chunk_w[pk.tid] = p.weights != nullptr ? load_weight(p, n * k + pk.tid) : 1.0f;
    }
    __syncthreads();
    if (row >= 0) {  // this copy's place among its token's copies, by row
      const int first = pk.tid - pk.tid % k;
      int rank = 0;
      for (int j = 0; j < k; ++j) rank += pk.chunk_row[first + j] < row ? 1 : 0;
      pk.chunk_aux[first + rank] = pk.tid;
    }
    __syncthreads();
    for (int t = pk.warp; t < count / k; t += kWarps) {
      const int* order = pk.chunk_aux + t * k;
      const int64_t out = (n + t) * dim;
      for (int64_t d = pk.lane; d < dim; d += 32) {
        float acc = 0.0f;
        for (int r = 0; r < k; ++r) {
          const int i = order[r];
          acc += __fmul_rn(to_float(ys[int64_t(pk.chunk_row[i]) * dim + d]), pk.chunk_w[i]);  // never fused
        }
        y[out + d] = from_float<T>(acc);
      }
    }
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads) combine_backward_kernel(const Params p) {
  extern __shared__ int mom_smem[];
  Packer pk(mom_smem, p);
  const int k = int(p.topk);
  const int64_t dim = p.dim;
  const T* ys = static_cast<const T*>(p.y_sorted);
  const T* dy = static_cast<const T*>(p.dy);
  T* dys = static_cast<T*>(p.dy_sorted);
  for_each_chunk(p, pk, [&](int64_t n, int count, int row) {
    if (row >= 0) {
      pk.chunk_row[pk.tid] = row;
      pk.chunk_w[pk.tid] = load_weight(p, n * k + pk.tid);
    }
    __syncthreads();
    for (int i = pk.warp; i < count; i += kWarps) {  // a warp per copy: its row of dy_sorted and its dweight
      const int64_t tok = (n + i / k) * dim, dst = int64_t(pk.chunk_row[i]) * dim;
      const float w = pk.chunk_w[i];
      float dot = 0.0f;
      for (int64_t d = pk.lane; d < dim; d += 32) {
        const float g = to_float(dy[tok + d]);
        dys[dst + d] = from_float<T>(__fmul_rn(w, g));
        dot = fmaf(g, to_float(ys[dst + d]), dot);
      }
      for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      if (pk.lane == 0) store_weight(p, n * k + i, dot);
    }
  });
}

template <DType D>
void combine(Params p, int64_t max_blocks, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t tokens = p.batch * p.seqlen;
  if (tokens == 0 || p.topk == 0) return;  // the glue zero-fills y
  p.tokens_per_block = tokens_per_block(p, max_blocks);
  const auto grid = static_cast<unsigned>(ceil_div(tokens, p.tokens_per_block));
  combine_kernel<T><<<grid, unsigned(kThreads), smem_bytes(p.memories), stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void combine_backward(Params p, int64_t max_blocks, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t tokens = p.batch * p.seqlen;
  if (tokens == 0 || p.topk == 0) return;
  p.tokens_per_block = tokens_per_block(p, max_blocks);
  const auto grid = static_cast<unsigned>(ceil_div(tokens, p.tokens_per_block));
  combine_backward_kernel<T><<<grid, unsigned(kThreads), smem_bytes(p.memories), stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::mom::gpu
