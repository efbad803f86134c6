#pragma once
// mom_dispatch in one kernel: every CTA places its tokens' copies (mom_pack.cuh) and copies their rows;
// sort_index and cu_seqlens come out of the same placement. Rows are moved as stored (exact copies).
#include "ops/mom/cuda/mom_pack.cuh"

namespace linattn::mom::gpu {

template <typename T>
__global__ void __launch_bounds__(kThreads) dispatch_kernel(const Params p) {
  extern __shared__ int mom_smem[];
  Packer pk(mom_smem, p);
  const int64_t k = p.topk, dim = p.dim;
  const T* x = static_cast<const T*>(p.x);
  T* xs = static_cast<T*>(p.x_sorted);
  if (blockIdx.x == 0 && threadIdx.x == 0) p.cu_seqlens[p.memories * p.batch] = p.batch * p.seqlen * k;
  for_each_chunk(p, pk, [&](int64_t n, int count, int row) {
    if (row >= 0) {
      pk.chunk_row[pk.tid] = row;
      p.sort_index[row] = n + pk.tid / k;
    }
    __syncthreads();
    for (int i = pk.warp; i < count; i += kWarps) {  // a warp per row, lanes along it
      const int64_t src = (n + i / k) * dim, dst = int64_t(pk.chunk_row[i]) * dim;
      for (int64_t d = pk.lane; d < dim; d += 32) xs[dst + d] = x[src + d];
    }
  });
}

template <DType D>
void dispatch(Params p, int64_t max_blocks, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t tokens = p.batch * p.seqlen;
  if (tokens == 0 || p.topk == 0) return;  // nothing to place; the glue zero-fills cu_seqlens
  p.tokens_per_block = tokens_per_block(p, max_blocks);
  const auto grid = static_cast<unsigned>(ceil_div(tokens, p.tokens_per_block));
  dispatch_kernel<T><<<grid, unsigned(kThreads), smem_bytes(p.memories), stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::mom::gpu
