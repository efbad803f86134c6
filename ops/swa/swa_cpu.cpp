// CPU kernels of sliding-window attention: O(T * w) work and O(T) memory (no T x T scores), one task per
// (sequence, head). The forward saves the per-row log-sum-exp; the backward recomputes the probabilities.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/checks.h"
#include "core/varlen.h"
#include "ops/swa/swa_common.h"

namespace linattn::swa {
namespace {

inline Span sequence(const Params& p, int64_t n) { return sequence_span(p.cu_seqlens, p.seqlen, n); }

template <typename T>
inline const T* at_row(const void* base, int64_t tok, int64_t H, int64_t h, int64_t D) {
  return static_cast<const T*>(base) + (tok * H + h) * D;
}

template <typename T>
inline T* at_row_mut(void* base, int64_t tok, int64_t H, int64_t h, int64_t D) {
  return static_cast<T*>(base) + (tok * H + h) * D;
}

template <typename T>
void forward_task(const Params& p, int64_t n, int64_t h, std::vector<T>& s) {
  const int64_t H = p.heads, K = p.dim_k, V = p.dim_v;
  const Span seq = sequence(p, n);
  for (int64_t i = 0; i < seq.len; ++i) {
    const int64_t tok = seq.bos + i, j0 = std::max<int64_t>(0, i - p.window + 1);
    const T* qi = at_row<T>(p.q, tok, H, h, K);
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = j0; j <= i; ++j) {
      const T* kj = at_row<T>(p.k, seq.bos + j, H, h, K);
      T dot = 0;
      for (int64_t d = 0; d < K; ++d) dot += qi[d] * kj[d];
      s[j - j0] = dot * static_cast<T>(p.scale);
      m = std::max(m, s[j - j0]);
    }
    T sum = 0;
    for (int64_t j = j0; j <= i; ++j) sum += (s[j - j0] = std::exp(s[j - j0] - m));
    T* oi = at_row_mut<T>(p.o, tok, H, h, V);
    std::fill_n(oi, V, T(0));
    for (int64_t j = j0; j <= i; ++j) {
      const T w = s[j - j0] / sum;
      const T* vj = at_row<T>(p.v, seq.bos + j, H, h, V);
      for (int64_t c = 0; c < V; ++c) oi[c] += w * vj[c];
    }
    static_cast<T*>(p.lse)[tok * H + h] = m + std::log(sum);
  }
}

template <typename T>
void backward_task(const Params& p, int64_t n, int64_t h) {
  const int64_t H = p.heads, K = p.dim_k, V = p.dim_v;
  const Span seq = sequence(p, n);
  const T scale = static_cast<T>(p.scale);
  for (int64_t i = 0; i < seq.len; ++i) {
    std::fill_n(at_row_mut<T>(p.dk, seq.bos + i, H, h, K), K, T(0));
    std::fill_n(at_row_mut<T>(p.dv, seq.bos + i, H, h, V), V, T(0));
  }
  for (int64_t i = 0; i < seq.len; ++i) {
    const int64_t tok = seq.bos + i, j0 = std::max<int64_t>(0, i - p.window + 1);
    const T* qi = at_row<T>(p.q, tok, H, h, K);
    const T* doi = at_row<T>(p.do_, tok, H, h, V);
    const T* oi = at_row<T>(p.o, tok, H, h, V);
    const T lse = static_cast<const T*>(p.lse)[tok * H + h];
    T delta = 0;  // do_i . o_i = sum_j p_ij (do_i . v_j)
    for (int64_t c = 0; c < V; ++c) delta += doi[c] * oi[c];
    T* dqi = at_row_mut<T>(p.dq, tok, H, h, K);
    std::fill_n(dqi, K, T(0));
    for (int64_t j = j0; j <= i; ++j) {
      const int64_t tj = seq.bos + j;
      const T* kj = at_row<T>(p.k, tj, H, h, K);
      const T* vj = at_row<T>(p.v, tj, H, h, V);
      T dot = 0, dp = 0;
      for (int64_t d = 0; d < K; ++d) dot += qi[d] * kj[d];
      for (int64_t c = 0; c < V; ++c) dp += doi[c] * vj[c];
      const T pij = std::exp(dot * scale - lse);
      const T ds = pij * (dp - delta) * scale;
      T* dkj = at_row_mut<T>(p.dk, tj, H, h, K);
      T* dvj = at_row_mut<T>(p.dv, tj, H, h, V);
      for (int64_t d = 0; d < K; ++d) {
        dqi[d] += ds * kj[d];
        dkj[d] += ds * qi[d];
      }
      for (int64_t c = 0; c < V; ++c) dvj[c] += pij * doi[c];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               int64_t window_size, std::optional<double> scale,
                                               const std::optional<at::Tensor>& cu_seqlens) {
  const char* op = "sliding_window_attention";
  check_inputs(op, q, k, v, window_size, cu_seqlens);
  check_cpu_dtype(op, q);
  Inputs in = prepare(op, q, k, v, cu_seqlens);
  auto [o, lse] = alloc_outputs(q, v);
  Params p = make_params(in, window_size, scale);
  p.o = o.data_ptr();
  p.lse = lse.data_ptr();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "swa_forward_cpu", [&] {
    at::parallel_for(0, p.num_seqs * p.heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> s(static_cast<size_t>(std::max<int64_t>(1, std::min(window_size, p.seqlen))));
      for (int64_t t = begin; t < end; ++t) forward_task<scalar_t>(p, t / p.heads, t % p.heads, s);
    });
  });
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const at::Tensor& o,
                                                            const at::Tensor& lse, const at::Tensor& do_,
                                                            int64_t window_size, std::optional<double> scale,
                                                            const std::optional<at::Tensor>& cu_seqlens) {
  const char* op = "_sliding_window_attention_backward";
  check_inputs(op, q, k, v, window_size, cu_seqlens);
  check_cpu_dtype(op, q);
  Inputs in = prepare(op, q, k, v, cu_seqlens);
  const at::Tensor oc = o.contiguous(), lc = lse.to(state_dtype(q)).contiguous(), dc = do_.to(q.dtype()).contiguous();
  at::Tensor dq = at::empty_like(in.q), dk = at::empty_like(in.k), dv = at::empty_like(in.v);
  Params p = make_params(in, window_size, scale);
  p.o = oc.data_ptr();
  p.lse = lc.data_ptr();
  p.do_ = dc.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "swa_backward_cpu", [&] {
    at::parallel_for(0, p.num_seqs * p.heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) backward_task<scalar_t>(p, t / p.heads, t % p.heads);
    });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) {
  m.impl("_sliding_window_attention_forward", &forward_cpu);
  m.impl("_sliding_window_attention_backward", &backward_cpu);
}

}  // namespace linattn::swa
