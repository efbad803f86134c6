#pragma once
// Step-by-step GLA recurrence on CUDA (fused_recurrent_*; decoding). One CTA of 256 threads per
// (sequence, head, 32-column V tile). Thread (warp w, lane c) keeps rows d = w, w + 8, ... of column c of
// the [K x 32] state slice in registers (kRows = KMAX / 8 of them, KMAX in {32, 64, 128, 256} chosen on the
// host), reads h0 once and writes ht once. Per token:
//   S <- diag(e^{g_t}) S + k_t v_t^T,   o_t = S^T (scale q_t)   (fp32; the 8 row groups reduced in smem)
#include "csrc/cuda/cuda_check.h"
#include "ops/gla/cuda/gla_common.cuh"

namespace linattn::gla::gpu {

constexpr int kRecThreads = 256;
constexpr int kRecWarps = kRecThreads / 32;
static_assert(kRecThreads % 32 == 0 && kBV == 32, "the recurrent kernel maps one lane to one V column");

template <typename T, int kRows>
__global__ void __launch_bounds__(kRecThreads) recurrent_fwd_kernel(const FwdParams p) {
  constexpr int kKMax = kRows * kRecWarps;
  static_assert(kKMax <= kRecThreads, "one thread loads each key dimension per step");
  __shared__ float sq[kKMax], sk[kKMax], se[kKMax], sv[kBV], sred[kRecWarps][kBV];

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int64_t H = p.heads;
  const int64_t nh = blockIdx.x;
  const int64_t n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t state_off = nh * int64_t(K) * V;

  float s[kRows];
  const float* __restrict__ h0 = static_cast<const float*>(p.h0);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int d = w + kRecWarps * r;
    s[r] = (h0 != nullptr && d < K && lane < vcols) ? h0[state_off + int64_t(d) * V + v0 + lane] : 0.f;
  }

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + v0;
  T* __restrict__ oh = static_cast<T*>(p.o) + h * p.v_head_stride + v0;
  const float* __restrict__ g = static_cast<const float*>(p.g);

  for (int64_t t = 0; t < seq.len; ++t) {
    const int64_t tok = seq.bos + t;
    if (tid < kKMax) {
      const int d = tid;
      float qd = 0.f, kd = 0.f, ed = 0.f;
      if (d < K) {
        qd = scale * to_float(qh[tok * p.q_tok_stride + d]);
        kd = to_float(kh[tok * p.k_tok_stride + d]);
        ed = g != nullptr ? expf(g[tok * p.g_tok_stride + h * p.g_head_stride + int64_t(d) * p.g_k_stride]) : 1.f;
      }
      sq[d] = qd;
      sk[d] = kd;
      se[d] = ed;
    }
    if (tid < kBV) sv[tid] = tid < vcols ? to_float(vh[tok * p.v_tok_stride + tid]) : 0.f;
    __syncthreads();
    const float vc = sv[lane];
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = w + kRecWarps * r;
      s[r] = se[d] * s[r] + sk[d] * vc;
      acc += sq[d] * s[r];
    }
    sred[w][lane] = acc;
    __syncthreads();
    if (w == 0) {
      float o = 0.f;
#pragma unroll
      for (int q = 0; q < kRecWarps; ++q) o += sred[q][lane];
      if (lane < vcols) oh[tok * p.v_tok_stride + lane] = from_float<T>(o);
    }
    // The next step writes sq/sk/se/sv (read by everyone before the barrier above) and, only after its
    // first barrier, sred (which warp 0 reads here before reaching that barrier).
  }

  if (p.ht != nullptr) {
    float* __restrict__ ht = static_cast<float*>(p.ht) + state_off;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = w + kRecWarps * r;
      if (d < K && lane < vcols) ht[int64_t(d) * V + v0 + lane] = s[r];
    }
  }
}

template <typename T, int kRows>
void launch_recurrent(const FwdParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs * p.heads), static_cast<unsigned>(ceil_div(p.dim_v, kBV)));
  recurrent_fwd_kernel<T, kRows><<<grid, kRecThreads, 0, stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void recurrent_forward(const FwdParams& p, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.num_seqs * p.heads == 0) return;
  if (p.dim_k <= 32) {
    launch_recurrent<T, 4>(p, stream);
  } else if (p.dim_k <= 64) {
    launch_recurrent<T, 8>(p, stream);
  } else if (p.dim_k <= 128) {
    launch_recurrent<T, 16>(p, stream);
  } else {
    launch_recurrent<T, 32>(p, stream);
  }
}

}  // namespace linattn::gla::gpu
