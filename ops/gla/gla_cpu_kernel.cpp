// Chunked GLA on the CPU. Per chunk of L <= 64 rows with in-chunk cumulative gates b (b_i = sum_{m<=i} g_m):
//   o_i  = scale * [ (q_i * e^{b_i})^T S + sum_{j<=i} A_ij v_j ],  A_ij = sum_d q_id k_jd e^{b_id - b_jd}
//   S'   = e^{b_L} * S + sum_j (k_j * e^{b_L - b_j}) v_j^T
// Every exponent is <= 0 for non-positive log gates: the intra-chunk scores use secondary chunks of 16 rows
// (elementwise on the diagonal blocks, a GEMM against keys re-based to the query block's first row below it)
// so no e^{-b} is ever formed. The backward recomputes the chunk-start states (K*V per chunk) instead of
// saving them in the forward, and forms dg = revcumsum(q*dq - k*dk) + rowsum(dht * S_T) on the fly.
#include "ops/gla/gla_cpu_kernel.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "core/cpu_math.h"
#include "core/varlen.h"

namespace linattn::gla::cpu {

namespace {

using linattn::cpu::exp_fast;
using linattn::cpu::gemm_nn;
using linattn::cpu::gemm_tn;
using linattn::cpu::transpose;

// Cumulative gates are kept in double: with decays near -20 per step they reach ~1e3 within a chunk, and
// the float32 difference of two such sums would lose ~1e-4 of every decay factor.
using Gate = double;

template <typename T>
inline T gexp(Gate x) {
  return linattn::cpu::exp_fast(static_cast<T>(x));
}

constexpr int64_t kChunk = 64;
constexpr int64_t kSub = 16;
static_assert(kChunk % kSub == 0, "the chunk must be a whole number of secondary chunks");

inline Span sequence(const FwdParams& p, int64_t n) { return sequence_span(p.cu_seqlens, p.seqlen, n); }

// Chunk tiles in accumulation precision T, row-major with leading dims K, V or kChunk.
template <typename T>
struct Tiles {
  int64_t K, V;
  std::vector<T> q, k, v, qe, ke, A, D, dout, tmpk, itmp, tmpv, vt, st, kst, qs, eq, ks, ek, gate_e;
  std::vector<Gate> b;
  Tiles(int64_t K_, int64_t V_) : K(K_), V(V_) {
    for (auto* t : {&q, &k, &qe, &ke, &tmpk, &itmp, &ks, &ek}) t->resize(kChunk * K);
    b.resize(kChunk * K);
    for (auto* t : {&v, &dout, &tmpv}) t->resize(kChunk * V);
    A.resize(kChunk * kChunk);
    D.resize(kChunk * kChunk);
    vt.resize(V * kChunk);
    st.resize(V * K);
    kst.resize(K * kChunk);
    qs.resize(kSub * K);
    eq.resize(kSub * K);
    gate_e.resize(K);
  }
};

template <typename S, typename T>
inline void load_rows(const S* src, int64_t tok_stride, int64_t L, int64_t D, T* dst) {
  for (int64_t i = 0; i < L; ++i)
    for (int64_t d = 0; d < D; ++d) dst[i * D + d] = static_cast<T>(src[i * tok_stride + d]);
}

template <typename S, typename T>
inline void store_rows(const T* src, int64_t L, int64_t D, S* dst, int64_t tok_stride) {
  for (int64_t i = 0; i < L; ++i)
    for (int64_t d = 0; d < D; ++d) dst[i * tok_stride + d] = static_cast<S>(src[i * D + d]);
}

// b[i, :] = cumulative sum of the gate over rows 0..i of the chunk starting at token t0.
template <typename T>
inline void load_cumulative_gate(const FwdParams& p, int64_t t0, int64_t h, int64_t L, Gate* b) {
  const int64_t K = p.dim_k;
  if (p.g == nullptr) {
    std::fill(b, b + L * K, Gate(0));
    return;
  }
  const T* g = static_cast<const T*>(p.g) + h * p.g_head_stride;
  for (int64_t i = 0; i < L; ++i) {
    const T* gi = g + (t0 + i) * p.g_tok_stride;
    for (int64_t d = 0; d < K; ++d) {
      const Gate prev = i > 0 ? b[(i - 1) * K + d] : Gate(0);
      b[i * K + d] = prev + static_cast<Gate>(gi[d * p.g_k_stride]);
    }
  }
}

// With A given: A[i, j] = scale * sum_d q_id k_jd e^{b_id - b_jd} for j <= i, 0 above the diagonal.
// With D given (the gradient of the unscaled scores): accumulates dq_intra into dq and dk_intra into dk.
template <typename T>
void intra_chunk(Tiles<T>& w, int64_t L, T scale, T* A, const T* D, T* dq, T* dk) {
  const int64_t K = w.K;
  const T* q = w.q.data();
  const T* k = w.k.data();
  const Gate* b = w.b.data();
  if (A != nullptr) std::fill(A, A + kChunk * kChunk, T(0));
  for (int64_t i0 = 0; i0 < L; i0 += kSub) {
    const int64_t i1 = std::min(i0 + kSub, L);
    // Diagonal block, elementwise: the differences b_i - b_j stay <= 0 only for j <= i.
    T* e = w.gate_e.data();
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = i0; j <= i; ++j) {
        const Gate* bi = b + i * K;
        const Gate* bj = b + j * K;
        for (int64_t d = 0; d < K; ++d) e[d] = static_cast<T>(bi[d] - bj[d]);
        for (int64_t d = 0; d < K; ++d) e[d] = linattn::cpu::exp_fast(e[d]);
        const T* qi = q + i * K;
        const T* kj = k + j * K;
        if (A != nullptr) {
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t d = 0; d < K; ++d) acc += qi[d] * kj[d] * e[d];
          A[i * kChunk + j] = scale * acc;
        }
        if (D != nullptr) {
          const T dij = D[i * kChunk + j];
          T* __restrict__ dqi = dq + i * K;
          T* __restrict__ dkj = dk + j * K;
          for (int64_t d = 0; d < K; ++d) {
            dqi[d] += dij * kj[d] * e[d];
            dkj[d] += dij * qi[d] * e[d];
          }
        }
      }
    }
    if (i0 == 0) continue;
    // Rows i0..i1 against all earlier rows: e^{b_i - b_j} = e^{b_i - b_p} e^{b_p - b_j} with p = i0.
    const Gate* bp = b + i0 * K;
    T* eq = w.eq.data();  // e^{b_i - b_p}
    T* qs = w.qs.data();  // q_i e^{b_i - b_p}
    T* ek = w.ek.data();  // e^{b_p - b_j}
    T* ks = w.ks.data();  // k_j e^{b_p - b_j}
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t d = 0; d < K; ++d) {
        eq[(i - i0) * K + d] = gexp<T>(b[i * K + d] - bp[d]);
        qs[(i - i0) * K + d] = q[i * K + d] * eq[(i - i0) * K + d];
      }
    for (int64_t j = 0; j < i0; ++j)
      for (int64_t d = 0; d < K; ++d) {
        ek[j * K + d] = gexp<T>(bp[d] - b[j * K + d]);
        ks[j * K + d] = k[j * K + d] * ek[j * K + d];
      }
    const int64_t rows = i1 - i0;
    if (A != nullptr) {
      // A[i0:i1, 0:i0] = scale * qs @ ks^T
      transpose(i0, K, ks, K, w.kst.data(), i0);
      gemm_nn(rows, i0, K, scale, qs, K, w.kst.data(), i0, A + i0 * kChunk, kChunk, false);
    }
    if (D != nullptr) {
      // dq_i += e^{b_i - b_p} * (D[i, :i0] @ ks);  dk_j += e^{b_p - b_j} * (D[i0:i1, j]^T @ qs)
      T* tmp = w.itmp.data();
      gemm_nn(rows, K, i0, T(1), D + i0 * kChunk, kChunk, ks, K, tmp, K, false);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t d = 0; d < K; ++d) dq[i * K + d] += tmp[(i - i0) * K + d] * eq[(i - i0) * K + d];
      gemm_tn(i0, K, rows, T(1), D + i0 * kChunk, kChunk, qs, K, tmp, K, false);
      for (int64_t j = 0; j < i0; ++j)
        for (int64_t d = 0; d < K; ++d) dk[j * K + d] += tmp[j * K + d] * ek[j * K + d];
    }
  }
}

template <typename T>
inline T gate_at(const FwdParams& p, int64_t tok, int64_t h, int64_t d) {
  if (p.g == nullptr) return T(0);
  return static_cast<const T*>(p.g)[tok * p.g_tok_stride + h * p.g_head_stride + d * p.g_k_stride];
}

// S = e^{bL} * S + ke^T v, with ke_j = k_j e^{bL - b_j}; leaves ke in w.ke.
template <typename T>
inline void advance_state(Tiles<T>& w, int64_t L, T* S) {
  const int64_t K = w.K, V = w.V;
  const Gate* bL = w.b.data() + (L - 1) * K;
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < K; ++d) w.ke[j * K + d] = w.k[j * K + d] * gexp<T>(bL[d] - w.b[j * K + d]);
  for (int64_t d = 0; d < K; ++d) {
    const T decay = gexp<T>(bL[d]);
    for (int64_t c = 0; c < V; ++c) S[d * V + c] *= decay;
  }
  gemm_tn(K, V, L, T(1), w.ke.data(), K, w.v.data(), V, S, V, true);
}

// The initial state of one (sequence, head), or zeros.
template <typename T>
void load_state(const FwdParams& p, size_t state_off, T* S) {
  const int64_t KV = p.dim_k * p.dim_v;
  if (p.h0 != nullptr) {
    std::copy_n(static_cast<const T*>(p.h0) + state_off, KV, S);
  } else {
    std::fill_n(S, KV, T(0));
  }
}

template <typename T>
void forward_task(const FwdParams& p, int64_t n, int64_t h, Tiles<T>& w, std::vector<T>& S) {
  const int64_t K = p.dim_k, V = p.dim_v;
  const Span seq = sequence(p, n);
  const size_t state_off = static_cast<size_t>((n * p.heads + h) * K * V);
  load_state(p, state_off, S.data());
  const T scale = static_cast<T>(p.scale);
  for (int64_t c0 = 0; c0 < seq.len; c0 += kChunk) {
    const int64_t L = std::min(kChunk, seq.len - c0);
    const int64_t t0 = seq.bos + c0;
    load_rows(static_cast<const T*>(p.q) + t0 * p.q_tok_stride + h * p.q_head_stride, p.q_tok_stride, L, K, w.q.data());
    load_rows(static_cast<const T*>(p.k) + t0 * p.k_tok_stride + h * p.k_head_stride, p.k_tok_stride, L, K, w.k.data());
    load_rows(static_cast<const T*>(p.v) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride, L, V, w.v.data());
    load_cumulative_gate<T>(p, t0, h, L, w.b.data());

    intra_chunk<T>(w, L, scale, w.A.data(), nullptr, nullptr, nullptr);
    T* out = w.tmpv.data();
    gemm_nn(L, V, L, T(1), w.A.data(), kChunk, w.v.data(), V, out, V, false, /*lower_a=*/true);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < K; ++d) w.qe[i * K + d] = scale * w.q[i * K + d] * gexp<T>(w.b[i * K + d]);
    gemm_nn(L, V, K, T(1), w.qe.data(), K, S.data(), V, out, V, true);
    store_rows(out, L, V, static_cast<T*>(p.o) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride);
    advance_state(w, L, S.data());
  }
  if (p.ht != nullptr) std::copy(S.begin(), S.end(), static_cast<T*>(p.ht) + state_off);
}

template <typename T>
void backward_task(const BwdParams& p, int64_t n, int64_t h, Tiles<T>& w, std::vector<T>& states,
                   std::vector<T>& dS, std::vector<T>& r) {
  const int64_t K = p.dim_k, V = p.dim_v;
  const Span seq = sequence(p, n);
  const int64_t nchunks = (seq.len + kChunk - 1) / kChunk;
  const size_t state_off = static_cast<size_t>((n * p.heads + h) * K * V);
  const T scale = static_cast<T>(p.scale);
  states.resize(static_cast<size_t>((nchunks + 1) * K * V));

  // Recompute the state entering every chunk; states[nchunks] is the final state.
  T* S = states.data();
  load_state(p, state_off, S);
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t L = std::min(kChunk, seq.len - c * kChunk);
    const int64_t t0 = seq.bos + c * kChunk;
    load_rows(static_cast<const T*>(p.k) + t0 * p.k_tok_stride + h * p.k_head_stride, p.k_tok_stride, L, K, w.k.data());
    load_rows(static_cast<const T*>(p.v) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride, L, V, w.v.data());
    load_cumulative_gate<T>(p, t0, h, L, w.b.data());
    T* next = states.data() + (c + 1) * K * V;
    std::copy(states.data() + c * K * V, states.data() + (c + 1) * K * V, next);
    advance_state(w, L, next);
  }

  // dS: gradient w.r.t. the state leaving the current chunk; r: running reverse sum of the gate gradient.
  const T* ST = states.data() + nchunks * K * V;
  std::fill(r.begin(), r.end(), T(0));
  if (p.dht != nullptr) {
    const T* dht = static_cast<const T*>(p.dht) + state_off;
    std::copy(dht, dht + K * V, dS.begin());
    for (int64_t d = 0; d < K; ++d)
      for (int64_t c = 0; c < V; ++c) r[d] += dht[d * V + c] * ST[d * V + c];
  } else {
    std::fill(dS.begin(), dS.end(), T(0));
  }

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t L = std::min(kChunk, seq.len - c * kChunk);
    const int64_t t0 = seq.bos + c * kChunk;
    const T* S0 = states.data() + c * K * V;
    load_rows(static_cast<const T*>(p.q) + t0 * p.q_tok_stride + h * p.q_head_stride, p.q_tok_stride, L, K, w.q.data());
    load_rows(static_cast<const T*>(p.k) + t0 * p.k_tok_stride + h * p.k_head_stride, p.k_tok_stride, L, K, w.k.data());
    load_rows(static_cast<const T*>(p.v) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride, L, V, w.v.data());
    load_rows(static_cast<const T*>(p.do_) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride, L, V,
              w.dout.data());
    load_cumulative_gate<T>(p, t0, h, L, w.b.data());
    const Gate* b = w.b.data();
    const Gate* bL = b + (L - 1) * K;

    // D = scale * do v^T (lower triangle), the gradient of the unscaled scores.
    transpose(L, V, w.v.data(), V, w.vt.data(), kChunk);
    gemm_nn(L, L, V, scale, w.dout.data(), V, w.vt.data(), kChunk, w.D.data(), kChunk, false);
    for (int64_t i = 0; i < L; ++i) std::fill(w.D.data() + i * kChunk + i + 1, w.D.data() + (i + 1) * kChunk, T(0));

    // dq = scale * e^{b} * (do S0^T) + intra;  dk = e^{bL - b} * (v dS^T) + intra
    T* dq = w.qe.data();
    T* dk = w.tmpk.data();
    transpose(K, V, S0, V, w.st.data(), K);
    gemm_nn(L, K, V, T(1), w.dout.data(), V, w.st.data(), K, dq, K, false);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < K; ++d) dq[i * K + d] *= scale * gexp<T>(b[i * K + d]);
    transpose(K, V, dS.data(), V, w.st.data(), K);
    gemm_nn(L, K, V, T(1), w.v.data(), V, w.st.data(), K, dk, K, false);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < K; ++d) dk[i * K + d] *= gexp<T>(bL[d] - b[i * K + d]);
    intra_chunk<T>(w, L, scale, w.A.data(), w.D.data(), dq, dk);

    // dv = A^T do + ke dS
    T* dv = w.tmpv.data();
    gemm_tn(L, V, L, T(1), w.A.data(), kChunk, w.dout.data(), V, dv, V, false, /*lower_a=*/true);
    for (int64_t j = 0; j < L; ++j)
      for (int64_t d = 0; d < K; ++d) w.ke[j * K + d] = w.k[j * K + d] * gexp<T>(bL[d] - b[j * K + d]);
    gemm_nn(L, V, K, T(1), w.ke.data(), K, dS.data(), V, dv, V, true);
    store_rows(dv, L, V, static_cast<T*>(p.dv) + t0 * p.v_tok_stride + h * p.v_head_stride, p.v_tok_stride);

    // dS <- e^{bL} * dS + scale * (q e^{b})^T do
    for (int64_t d = 0; d < K; ++d) {
      const T decay = gexp<T>(bL[d]);
      for (int64_t cc = 0; cc < V; ++cc) dS[d * V + cc] *= decay;
    }
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < K; ++d) w.ke[i * K + d] = scale * w.q[i * K + d] * gexp<T>(b[i * K + d]);
    gemm_tn(K, V, L, T(1), w.ke.data(), K, w.dout.data(), V, dS.data(), V, true);

    store_rows(dq, L, K, static_cast<T*>(p.dq) + t0 * p.q_tok_stride + h * p.q_head_stride, p.q_tok_stride);
    store_rows(dk, L, K, static_cast<T*>(p.dk) + t0 * p.k_tok_stride + h * p.k_head_stride, p.k_tok_stride);

    if (p.dg != nullptr) {
      T* dg = static_cast<T*>(p.dg);
      for (int64_t i = L - 1; i >= 0; --i) {
        const int64_t tok = t0 + i;
        T total = 0;
        for (int64_t d = 0; d < K; ++d) {
          r[d] += w.q[i * K + d] * dq[i * K + d] - w.k[i * K + d] * dk[i * K + d];
          total += r[d];
        }
        if (p.dg_sum_k) {
          dg[tok * p.heads + h] = total;
        } else {
          std::copy(r.begin(), r.begin() + K, dg + (tok * p.heads + h) * K);
        }
      }
    }
  }
  if (p.dh0 != nullptr) std::copy(dS.begin(), dS.end(), static_cast<T*>(p.dh0) + state_off);
}

template <typename T>
void recurrent_task(const FwdParams& p, int64_t n, int64_t h, std::vector<T>& S, std::vector<T>& out) {
  const int64_t K = p.dim_k, V = p.dim_v;
  const Span seq = sequence(p, n);
  const size_t state_off = static_cast<size_t>((n * p.heads + h) * K * V);
  load_state(p, state_off, S.data());
  const T scale = static_cast<T>(p.scale);
  for (int64_t t = 0; t < seq.len; ++t) {
    const int64_t tok = seq.bos + t;
    const T* q = static_cast<const T*>(p.q) + tok * p.q_tok_stride + h * p.q_head_stride;
    const T* k = static_cast<const T*>(p.k) + tok * p.k_tok_stride + h * p.k_head_stride;
    const T* v = static_cast<const T*>(p.v) + tok * p.v_tok_stride + h * p.v_head_stride;
    std::fill(out.begin(), out.end(), T(0));
    for (int64_t d = 0; d < K; ++d) {
      const T e = std::exp(gate_at<T>(p, tok, h, d));
      const T kd = k[d], qd = scale * q[d];
      T* row = S.data() + d * V;
      for (int64_t c = 0; c < V; ++c) {
        row[c] = e * row[c] + kd * v[c];
        out[c] += qd * row[c];
      }
    }
    T* o = static_cast<T*>(p.o) + tok * p.v_tok_stride + h * p.v_head_stride;
    std::copy(out.begin(), out.end(), o);
  }
  if (p.ht != nullptr) std::copy(S.begin(), S.end(), static_cast<T*>(p.ht) + state_off);
}

template <typename T>
void forward_range(const FwdParams& p, int64_t begin, int64_t end) {
  Tiles<T> w(p.dim_k, p.dim_v);
  std::vector<T> S(static_cast<size_t>(p.dim_k * p.dim_v));
  for (int64_t task = begin; task < end; ++task) forward_task<T>(p, task / p.heads, task % p.heads, w, S);
}

template <typename T>
void backward_range(const BwdParams& p, int64_t begin, int64_t end) {
  Tiles<T> w(p.dim_k, p.dim_v);
  std::vector<T> states, dS(static_cast<size_t>(p.dim_k * p.dim_v)), r(p.dim_k);
  for (int64_t task = begin; task < end; ++task) backward_task<T>(p, task / p.heads, task % p.heads, w, states, dS, r);
}

LINATTN_CPU_CLONES void forward_range_f32(const FwdParams& p, int64_t begin, int64_t end) {
  forward_range<float>(p, begin, end);
}
LINATTN_CPU_CLONES void backward_range_f32(const BwdParams& p, int64_t begin, int64_t end) {
  backward_range<float>(p, begin, end);
}

template <typename T>
void run_forward_range(const FwdParams& p, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    forward_range_f32(p, begin, end);
  } else {
    forward_range<T>(p, begin, end);
  }
}

template <typename T>
void run_backward_range(const BwdParams& p, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    backward_range_f32(p, begin, end);
  } else {
    backward_range<T>(p, begin, end);
  }
}

}  // namespace

template <typename T>
void chunk_forward(const FwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.heads, 1,
                   [&](int64_t begin, int64_t end) { run_forward_range<T>(p, begin, end); });
}

template <typename T>
void recurrent_forward(const FwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S(static_cast<size_t>(p.dim_k * p.dim_v)), out(p.dim_v);
    for (int64_t task = begin; task < end; ++task) recurrent_task<T>(p, task / p.heads, task % p.heads, S, out);
  });
}

template <typename T>
void chunk_backward(const BwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.heads, 1,
                   [&](int64_t begin, int64_t end) { run_backward_range<T>(p, begin, end); });
}

template void chunk_forward<float>(const FwdParams&);
template void chunk_forward<double>(const FwdParams&);
template void recurrent_forward<float>(const FwdParams&);
template void recurrent_forward<double>(const FwdParams&);
template void chunk_backward<float>(const BwdParams&);
template void chunk_backward<double>(const BwdParams&);

}  // namespace linattn::gla::cpu
