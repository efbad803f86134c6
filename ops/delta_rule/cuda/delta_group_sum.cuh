#pragma once
// The last launch of the delta-rule backward (SIMT pass 3 and its tensor-core version alike): dq and dk were
// written per value head into fp32 workspaces, this sums each group of value heads and casts to the input dtype.
#include <algorithm>

#include "csrc/cuda/cuda_check.h"
#include "ops/delta_rule/cuda/delta_common.cuh"

namespace linattn::delta::gpu {

// dq[tok, h, d] = sum_{g < G} dq_ws[tok, h G + g, d] (and dk), cast to the input dtype. A deterministic
// reduction (no atomics); with G == 1 a plain cast.
template <typename T>
__global__ void __launch_bounds__(256) group_sum_kernel(const float* __restrict__ dq_ws,
                                                        const float* __restrict__ dk_ws, T* __restrict__ dq,
                                                        T* __restrict__ dk, int64_t total, int64_t G, int64_t K) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = e % K, th = e / K;  // th = tok * H + h
    const int64_t src = th * G * K + d;
    float sq = 0.f, sk = 0.f;
    for (int64_t g = 0; g < G; ++g) {
      sq += dq_ws[src + g * K];
      sk += dk_ws[src + g * K];
    }
    dq[e] = from_float<T>(sq);
    dk[e] = from_float<T>(sk);
  }
}

// p.dq / p.dk <- the group sums of ws.dq / ws.dk ([B*T, HV, K] fp32 -> [B*T, H, K] input dtype).
template <typename T>
void launch_group_sum(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  const int64_t total = p.batch * p.seqlen * p.heads * p.dim_k;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div(total, 256), int64_t(1) << 16);
  auto kernel = group_sum_kernel<T>;
  kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(ws.dq, ws.dk, static_cast<T*>(p.dq), static_cast<T*>(p.dk),
                                                            total, p.value_heads / p.heads, p.dim_k);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::delta::gpu
