#pragma once
// Step-by-step (gated) delta rule on CUDA (fused_recurrent_*; decoding). One CTA of 256 threads per
// (sequence, value head, 32-column V tile). Thread (warp w, lane c) keeps rows d = w, w + 8, ... of column c
// of the [K x 32] state slice in registers (kRows = KMAX / 8 of them, KMAX in {32, 64, 128, 256} chosen on
// the host), reads h0 once and writes ht once. Per token, with a = e^{g_t} (1 without gates) and q scaled:
//   u = beta (v - a S^T k),   o = a S^T q + (q . k) u,   S <- a S + k u^T
// (o equals S_new^T q). S^T k, S^T q and q . k need one cross-warp reduction per step; the step's inputs are
// double-buffered in shared memory so a step costs two barriers. With p.l2norm_qk, |q|^2 and |k|^2 join that
// reduction and the raw products are rescaled by 1 / sqrt(|x|^2 + 1e-6): the same step, no extra pass.
#include "csrc/cuda/cuda_check.h"
#include "ops/delta_rule/cuda/delta_common.cuh"

namespace linattn::delta::gpu {

constexpr int kRecThreads = 256;
constexpr int kRecWarps = kRecThreads / 32;
static_assert(kBV == 32, "the recurrent kernel maps one lane to one V column");

template <typename T, int kRows>
__global__ void __launch_bounds__(kRecThreads) recurrent_fwd_kernel(const FwdParams p) {
  constexpr int kKMax = kRows * kRecWarps;
  static_assert(kKMax <= kRecThreads, "one thread loads each key dimension per step");
  __shared__ float sq[2][kKMax], sk[2][kKMax], sv[2][kBV], sscal[2][2];
  __shared__ float sred_k[kRecWarps][kBV], sred_q[kRecWarps][kBV], sred_qk[kRecWarps][3];

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int64_t H = p.heads, HV = p.value_heads;
  const int64_t nh = blockIdx.x;
  const int64_t n = nh / HV, hv = nh % HV, h = hv / (HV / H);
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x, w = tid / 32, lane = tid % 32;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t KV = int64_t(K) * V;
  const int64_t q_tok = H * K, v_tok = HV * V;

  float s[kRows];
  // h0 and ht may be the same buffer (fused_recurrent_delta_rule_inplace): no __restrict__ on either. Each
  // thread reads its state entries here, before the recurrence, and writes the same entries after it.
  const float* h0 = static_cast<const float*>(p.h0);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int d = w + kRecWarps * r;
    s[r] = (h0 != nullptr && d < K && lane < vcols) ? h0[nh * KV + int64_t(d) * V + v0 + lane] : 0.f;
  }

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * K;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + hv * V + v0;
  T* __restrict__ oh = static_cast<T*>(p.o) + hv * V + v0;
  // beta and g: fp32, or the input dtype with p.gates_in_input_dtype (one thread reads them per step)
  const auto gate_at = [&](const void* base, int64_t i) {
    return p.gates_in_input_dtype ? to_float(static_cast<const T*>(base)[i]) : static_cast<const float*>(base)[i];
  };

  for (int64_t t = 0; t < seq.len; ++t) {
    const int64_t tok = seq.bos + t;
    const int buf = static_cast<int>(t & 1);
    if (tid < kKMax) {
      const bool in = tid < K;
      sq[buf][tid] = in ? to_float(qh[tok * q_tok + tid]) : 0.f;  // scaled below, after any normalisation
      sk[buf][tid] = in ? to_float(kh[tok * q_tok + tid]) : 0.f;
    }
    if (tid < kBV) sv[buf][tid] = tid < vcols ? to_float(vh[tok * v_tok + tid]) : 0.f;
    if (tid == 0) {
      sscal[buf][0] = gate_at(p.beta, tok * HV + hv);
      sscal[buf][1] = p.g != nullptr ? expf(gate_at(p.g, tok * HV + hv)) : 1.f;
    }
    __syncthreads();
    float pk = 0.f, pq = 0.f, pqk = 0.f, pqq = 0.f, pkk = 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = w + kRecWarps * r;
      const float qd = sq[buf][d], kd = sk[buf][d];
      pk += s[r] * kd;
      pq += s[r] * qd;
      pqk += qd * kd;
      pqq += qd * qd;
      pkk += kd * kd;
    }
    sred_k[w][lane] = pk;
    sred_q[w][lane] = pq;
    if (lane == 0) {
      sred_qk[w][0] = pqk;
      sred_qk[w][1] = pqq;
      sred_qk[w][2] = pkk;
    }
    __syncthreads();
    float ks = 0.f, qs = 0.f, qk = 0.f, qq = 0.f, kk = 0.f;
#pragma unroll
    for (int q = 0; q < kRecWarps; ++q) {
      ks += sred_k[q][lane];
      qs += sred_q[q][lane];
      qk += sred_qk[q][0];
      qq += sred_qk[q][1];
      kk += sred_qk[q][2];
    }
    // k_n = nk k and q_n = scale nq q: S^T k_n, S^T q_n and q_n . k_n are the raw sums times these factors.
    const float nk = p.l2norm_qk ? rsqrtf(kk + 1e-6f) : 1.f;
    const float nq = scale * (p.l2norm_qk ? rsqrtf(qq + 1e-6f) : 1.f);
    ks *= nk;
    qs *= nq;
    qk *= nq * nk;
    const float b = sscal[buf][0], a = sscal[buf][1];
    const float u = b * (sv[buf][lane] - a * ks);
    if (w == 0 && lane < vcols) oh[tok * v_tok + lane] = from_float<T>(a * qs + qk * u);
    const float ku = nk * u;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = w + kRecWarps * r;
      s[r] = a * s[r] + sk[buf][d] * ku;
    }
    // The next step fills the other buffer before its first barrier and sred_* only after it, by which
    // time every thread has finished reading this step's values.
  }

  if (p.ht != nullptr) {
    float* ht = static_cast<float*>(p.ht) + nh * KV;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = w + kRecWarps * r;
      if (d < K && lane < vcols) ht[int64_t(d) * V + v0 + lane] = s[r];
    }
  }
}

template <typename T, int kRows>
void launch_recurrent(const FwdParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs * p.value_heads), static_cast<unsigned>(ceil_div(p.dim_v, kBV)));
  auto kernel = recurrent_fwd_kernel<T, kRows>;
  kernel<<<grid, kRecThreads, 0, stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void recurrent_forward(const FwdParams& p, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.num_seqs * p.value_heads == 0) return;
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

}  // namespace linattn::delta::gpu
