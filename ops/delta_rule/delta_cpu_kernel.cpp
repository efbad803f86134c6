// Chunked (gated) delta rule on the CPU. Per chunk of L <= 64 rows entering with state S0, with in-chunk
// cumulative log decays b (b_i = sum_{m<=i} g_m), Gamma_i = e^{b_i} and Dm_ij = e^{b_i - b_j} (j <= i):
//   R = diag(beta) (V - diag(Gamma) K S0)
//   U = (I + M)^{-1} R,   M_ij = beta_i Dm_ij (k_i . k_j) for i > j     (UT transform, forward substitution)
//   O = scale (diag(Gamma) Q S0 + (Dm o Q K^T) U)
//   S1 = Gamma_L S0 + sum_j Dm_Lj k_j u_j^T
// The backward differentiates these four steps in reverse (a back substitution for dR), recomputing the
// chunk-start states first (K*V per chunk) rather than saving them in the forward. Gate gradients are
// local to a chunk (everything crossing chunks goes through dS), so dg is a reverse cumsum within each chunk.
#include "ops/delta_rule/delta_cpu_kernel.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "core/cpu_math.h"
#include "core/varlen.h"

namespace linattn::delta::cpu {

namespace {

using linattn::cpu::gemm_nn;
using linattn::cpu::gemm_tn;
using linattn::cpu::transpose;

constexpr int64_t kChunk = 64;
using Gate = double;  // cumulative decays in double, as in the GLA kernels

inline Span sequence(const FwdParams& p, int64_t n) { return sequence_span(p.cu_seqlens, p.seqlen, n); }

// Tiles of one chunk in precision T (leading dims K, V or kChunk).
template <typename T>
struct Work {
  int64_t K, V;
  std::vector<T> q, k, kt, v, beta, gam, ks, r, u, ut, out, dm, kk, qk;
  std::vector<T> dout, du, dr, dq, dk, dv, tmpk, tmpk2, tmpl, st, dS0, db, dbeta;
  std::vector<Gate> b;
  Work(int64_t K_, int64_t V_) : K(K_), V(V_) {
    for (auto* t : {&q, &k, &dq, &dk, &tmpk, &tmpk2}) t->resize(kChunk * K);
    for (auto* t : {&v, &ks, &r, &u, &out, &dout, &du, &dr, &dv}) t->resize(kChunk * V);
    for (auto* t : {&dm, &kk, &qk, &tmpl}) t->resize(kChunk * kChunk);
    kt.resize(K * kChunk);
    ut.resize(V * kChunk);
    st.resize(V * K);
    dS0.resize(K * V);
    beta.resize(kChunk);
    gam.resize(kChunk);
    db.resize(kChunk);
    dbeta.resize(kChunk);
    b.resize(kChunk);
  }
};

struct Heads {
  int64_t h, hv;  // q/k head and value head of a task
};

template <typename T>
const T* row(const void* base, int64_t tok, int64_t heads, int64_t head, int64_t dim) {
  return static_cast<const T*>(base) + (tok * heads + head) * dim;
}

template <typename T>
T* row_mut(void* base, int64_t tok, int64_t heads, int64_t head, int64_t dim) {
  return static_cast<T*>(base) + (tok * heads + head) * dim;
}

// Loads the chunk [t0, t0 + L) and computes Gamma, Dm, K K^T, (Q K^T), K S0, R and U.
template <typename T>
void prepare_chunk(const FwdParams& p, Work<T>& w, int64_t t0, int64_t L, Heads hd, const T* S0, bool with_q) {
  const int64_t K = w.K, V = w.V, H = p.heads, HV = p.value_heads;
  for (int64_t i = 0; i < L; ++i) {
    const int64_t tok = t0 + i;
    std::copy_n(row<T>(p.k, tok, H, hd.h, K), K, w.k.data() + i * K);
    if (with_q) std::copy_n(row<T>(p.q, tok, H, hd.h, K), K, w.q.data() + i * K);
    std::copy_n(row<T>(p.v, tok, HV, hd.hv, V), V, w.v.data() + i * V);
    w.beta[i] = static_cast<const T*>(p.beta)[tok * HV + hd.hv];
    const Gate g = p.g != nullptr ? static_cast<Gate>(static_cast<const T*>(p.g)[tok * HV + hd.hv]) : Gate(0);
    w.b[i] = (i > 0 ? w.b[i - 1] : Gate(0)) + g;
    w.gam[i] = static_cast<T>(std::exp(w.b[i]));
  }
  for (int64_t i = 0; i < L; ++i) {
    T* dmi = w.dm.data() + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) dmi[j] = linattn::cpu::exp_fast(static_cast<T>(w.b[i] - w.b[j]));
    std::fill(dmi + i + 1, dmi + kChunk, T(0));
  }
  transpose(L, K, w.k.data(), K, w.kt.data(), kChunk);
  gemm_nn(L, L, K, T(1), w.k.data(), K, w.kt.data(), kChunk, w.kk.data(), kChunk, false);
  if (with_q) gemm_nn(L, L, K, T(1), w.q.data(), K, w.kt.data(), kChunk, w.qk.data(), kChunk, false);
  gemm_nn(L, V, K, T(1), w.k.data(), K, S0, V, w.ks.data(), V, false);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t c = 0; c < V; ++c) w.r[i * V + c] = w.beta[i] * (w.v[i * V + c] - w.gam[i] * w.ks[i * V + c]);
  // u_i = r_i - sum_{j<i} beta_i Dm_ij (k_i . k_j) u_j
  for (int64_t i = 0; i < L; ++i) {
    T* ui = w.u.data() + i * V;
    std::copy_n(w.r.data() + i * V, V, ui);
    for (int64_t j = 0; j < i; ++j) {
      const T m = w.beta[i] * w.dm[i * kChunk + j] * w.kk[i * kChunk + j];
      const T* uj = w.u.data() + j * V;
      for (int64_t c = 0; c < V; ++c) ui[c] -= m * uj[c];
    }
  }
}

// S = Gamma_L S + sum_j Dm_Lj k_j u_j^T, with k in w.tmpk as scratch.
template <typename T>
void advance_state(Work<T>& w, int64_t L, T* S) {
  const int64_t K = w.K, V = w.V;
  const T* dmL = w.dm.data() + (L - 1) * kChunk;
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < K; ++d) w.tmpk[j * K + d] = dmL[j] * w.k[j * K + d];
  const T gL = w.gam[L - 1];
  for (int64_t i = 0; i < K * V; ++i) S[i] *= gL;
  gemm_tn(K, V, L, T(1), w.tmpk.data(), K, w.u.data(), V, S, V, true);
}

template <typename T>
void load_state(const FwdParams& p, int64_t n, int64_t hv, T* S) {
  const int64_t KV = p.dim_k * p.dim_v;
  if (p.h0 != nullptr) {
    const T* h0 = static_cast<const T*>(p.h0) + (n * p.value_heads + hv) * KV;
    std::copy_n(h0, KV, S);
  } else {
    std::fill_n(S, KV, T(0));
  }
}

template <typename T>
void forward_task(const FwdParams& p, int64_t n, Heads hd, Work<T>& w, std::vector<T>& S) {
  const int64_t K = p.dim_k, V = p.dim_v, HV = p.value_heads;
  const Span seq = sequence(p, n);
  load_state(p, n, hd.hv, S.data());
  const T scale = static_cast<T>(p.scale);
  for (int64_t c0 = 0; c0 < seq.len; c0 += kChunk) {
    const int64_t L = std::min(kChunk, seq.len - c0);
    const int64_t t0 = seq.bos + c0;
    prepare_chunk(p, w, t0, L, hd, S.data(), true);
    // O = scale (diag(Gamma) Q S0 + (Dm o QK^T) U)
    for (int64_t i = 0; i < L * kChunk; ++i) w.qk[i] *= w.dm[i];
    gemm_nn(L, V, L, scale, w.qk.data(), kChunk, w.u.data(), V, w.out.data(), V, false, /*lower_a=*/true);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < K; ++d) w.tmpk[i * K + d] = scale * w.gam[i] * w.q[i * K + d];
    gemm_nn(L, V, K, T(1), w.tmpk.data(), K, S.data(), V, w.out.data(), V, true);
    for (int64_t i = 0; i < L; ++i) std::copy_n(w.out.data() + i * V, V, row_mut<T>(p.o, t0 + i, HV, hd.hv, V));
    advance_state(w, L, S.data());
  }
  if (p.ht != nullptr) std::copy(S.begin(), S.end(), static_cast<T*>(p.ht) + (n * HV + hd.hv) * K * V);
}

template <typename T>
void backward_task(const BwdParams& p, int64_t n, Heads hd, Work<T>& w, std::vector<T>& states, std::vector<T>& dS) {
  const int64_t K = p.dim_k, V = p.dim_v, HV = p.value_heads, KV = K * V;
  const Span seq = sequence(p, n);
  const int64_t nchunks = (seq.len + kChunk - 1) / kChunk;
  const T scale = static_cast<T>(p.scale);
  states.resize(static_cast<size_t>((nchunks + 1) * KV));
  load_state(p, n, hd.hv, states.data());
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t L = std::min(kChunk, seq.len - c * kChunk);
    T* next = states.data() + (c + 1) * KV;
    std::copy_n(states.data() + c * KV, KV, next);
    prepare_chunk(p, w, seq.bos + c * kChunk, L, hd, states.data() + c * KV, false);
    advance_state(w, L, next);
  }
  if (p.dht != nullptr) {
    std::copy_n(static_cast<const T*>(p.dht) + (n * HV + hd.hv) * KV, KV, dS.data());
  } else {
    std::fill(dS.begin(), dS.end(), T(0));
  }

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t L = std::min(kChunk, seq.len - c * kChunk);
    const int64_t t0 = seq.bos + c * kChunk;
    const T* S0 = states.data() + c * KV;
    prepare_chunk(p, w, t0, L, hd, S0, true);
    for (int64_t i = 0; i < L; ++i) std::copy_n(row<T>(p.do_, t0 + i, HV, hd.hv, V), V, w.dout.data() + i * V);
    const T* dmL = w.dm.data() + (L - 1) * kChunk;
    T* db = w.db.data();
    std::fill_n(db, L, T(0));
    T dbL = 0;
    std::fill_n(w.dq.data(), L * K, T(0));
    std::fill_n(w.dk.data(), L * K, T(0));

    // P = Dm o QK^T (kept in qk); dU = scale P^T dO + Ktil dS with Ktil_j = Dm_Lj k_j
    for (int64_t i = 0; i < L * kChunk; ++i) w.qk[i] *= w.dm[i];
    gemm_tn(L, V, L, scale, w.qk.data(), kChunk, w.dout.data(), V, w.du.data(), V, false, /*lower_a=*/true);
    for (int64_t j = 0; j < L; ++j)
      for (int64_t d = 0; d < K; ++d) w.tmpk[j * K + d] = dmL[j] * w.k[j * K + d];
    gemm_nn(L, V, K, T(1), w.tmpk.data(), K, dS.data(), V, w.du.data(), V, true);

    // dP = scale dO U^T (i >= j); through P = Dm o QK^T into dq, dk and the decays.
    transpose(L, V, w.u.data(), V, w.ut.data(), kChunk);
    gemm_nn(L, L, V, scale, w.dout.data(), V, w.ut.data(), kChunk, w.tmpl.data(), kChunk, false);
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const T dp = w.tmpl[i * kChunk + j];
        const T t = dp * w.qk[i * kChunk + j];
        db[i] += t;
        db[j] -= t;
        w.tmpl[i * kChunk + j] = dp * w.dm[i * kChunk + j];
      }
      std::fill(w.tmpl.data() + i * kChunk + i + 1, w.tmpl.data() + (i + 1) * kChunk, T(0));
    }
    gemm_nn(L, K, L, T(1), w.tmpl.data(), kChunk, w.k.data(), K, w.dq.data(), K, true, /*lower_a=*/true);
    gemm_tn(L, K, L, T(1), w.tmpl.data(), kChunk, w.q.data(), K, w.dk.data(), K, true, /*lower_a=*/true);

    // dKtil = U dS^T: into dk and the decays (Ktil_j = e^{bL - b_j} k_j).
    transpose(K, V, dS.data(), V, w.st.data(), K);
    gemm_nn(L, K, V, T(1), w.u.data(), V, w.st.data(), K, w.tmpk2.data(), K, false);
    for (int64_t j = 0; j < L; ++j) {
      T term = 0;
      for (int64_t d = 0; d < K; ++d) {
        w.dk[j * K + d] += dmL[j] * w.tmpk2[j * K + d];
        term += w.k[j * K + d] * w.tmpk2[j * K + d];
      }
      term *= dmL[j];
      dbL += term;
      db[j] -= term;
    }

    // dS0 = Gamma_L dS + ..., and the decay of the carried state.
    const T gL = w.gam[L - 1];
    T carried = 0;
    for (int64_t i = 0; i < KV; ++i) {
      w.dS0[i] = gL * dS[i];
      carried += dS[i] * S0[i];
    }
    dbL += gL * carried;

    // Inter-chunk output term scale Gamma_i q_i^T S0: QS = dO S0^T.
    transpose(K, V, S0, V, w.st.data(), K);
    gemm_nn(L, K, V, T(1), w.dout.data(), V, w.st.data(), K, w.tmpk2.data(), K, false);
    for (int64_t i = 0; i < L; ++i) {
      const T f = scale * w.gam[i];
      T dot = 0;
      for (int64_t d = 0; d < K; ++d) {
        w.dq[i * K + d] += f * w.tmpk2[i * K + d];
        dot += w.q[i * K + d] * w.tmpk2[i * K + d];
        w.tmpk[i * K + d] = f * w.q[i * K + d];
      }
      db[i] += f * dot;
    }
    gemm_tn(K, V, L, T(1), w.tmpk.data(), K, w.dout.data(), V, w.dS0.data(), V, true);

    // dR: back substitution with (I + M)^T, M_ji = beta_j Dm_ji kk_ji for j > i.
    for (int64_t i = L - 1; i >= 0; --i) {
      T* dri = w.dr.data() + i * V;
      std::copy_n(w.du.data() + i * V, V, dri);
      for (int64_t j = i + 1; j < L; ++j) {
        const T m = w.beta[j] * w.dm[j * kChunk + i] * w.kk[j * kChunk + i];
        const T* drj = w.dr.data() + j * V;
        for (int64_t cc = 0; cc < V; ++cc) dri[cc] -= m * drj[cc];
      }
    }
    // dM_ij = -dR_i . u_j (i > j), into beta, k (through K K^T) and the decays.
    gemm_nn(L, L, V, T(-1), w.dr.data(), V, w.ut.data(), kChunk, w.tmpl.data(), kChunk, false);
    T* dbet = w.dbeta.data();
    std::fill_n(dbet, L, T(0));
    for (int64_t i = 0; i < L; ++i) {
      for (int64_t j = 0; j < i; ++j) {
        const T dmij = w.tmpl[i * kChunk + j];
        const T e = w.dm[i * kChunk + j] * w.kk[i * kChunk + j];
        dbet[i] += dmij * e;
        const T de = w.beta[i] * dmij;
        db[i] += de * e;
        db[j] -= de * e;
        w.tmpl[i * kChunk + j] = de * w.dm[i * kChunk + j];
      }
      std::fill(w.tmpl.data() + i * kChunk + i, w.tmpl.data() + (i + 1) * kChunk, T(0));
    }
    gemm_nn(L, K, L, T(1), w.tmpl.data(), kChunk, w.k.data(), K, w.dk.data(), K, true, /*lower_a=*/true);
    gemm_tn(L, K, L, T(1), w.tmpl.data(), kChunk, w.k.data(), K, w.dk.data(), K, true, /*lower_a=*/true);

    // R_i = beta_i (v_i - Gamma_i ks_i)
    for (int64_t i = 0; i < L; ++i) {
      T dot_v = 0, dot_ks = 0;
      for (int64_t cc = 0; cc < V; ++cc) {
        const T dri = w.dr[i * V + cc];
        dot_v += dri * w.v[i * V + cc];
        dot_ks += dri * w.ks[i * V + cc];
        w.dv[i * V + cc] = w.beta[i] * dri;
        w.dr[i * V + cc] = -w.beta[i] * w.gam[i] * dri;  // dR now holds d(ks)
      }
      dbet[i] += dot_v - w.gam[i] * dot_ks;
      db[i] -= w.beta[i] * w.gam[i] * dot_ks;
    }
    gemm_nn(L, K, V, T(1), w.dr.data(), V, w.st.data(), K, w.dk.data(), K, true);  // st holds S0^T
    gemm_tn(K, V, L, T(1), w.k.data(), K, w.dr.data(), V, w.dS0.data(), V, true);

    db[L - 1] += dbL;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t tok = t0 + i;
      std::copy_n(w.dq.data() + i * K, K, row_mut<T>(p.dq, tok, HV, hd.hv, K));
      std::copy_n(w.dk.data() + i * K, K, row_mut<T>(p.dk, tok, HV, hd.hv, K));
      std::copy_n(w.dv.data() + i * V, V, row_mut<T>(p.dv, tok, HV, hd.hv, V));
      static_cast<T*>(p.dbeta)[tok * HV + hd.hv] = dbet[i];
    }
    if (p.dg != nullptr) {
      T run = 0;
      for (int64_t i = L - 1; i >= 0; --i) {
        run += db[i];
        static_cast<T*>(p.dg)[(t0 + i) * HV + hd.hv] = run;
      }
    }
    std::copy(w.dS0.begin(), w.dS0.end(), dS.begin());
  }
  if (p.dh0 != nullptr) std::copy(dS.begin(), dS.end(), static_cast<T*>(p.dh0) + (n * HV + hd.hv) * KV);
}

template <typename T>
void recurrent_task(const FwdParams& p, int64_t n, Heads hd, std::vector<T>& S, std::vector<T>& tmp) {
  const int64_t K = p.dim_k, V = p.dim_v, H = p.heads, HV = p.value_heads;
  const Span seq = sequence(p, n);
  load_state(p, n, hd.hv, S.data());
  const T scale = static_cast<T>(p.scale);
  for (int64_t t = 0; t < seq.len; ++t) {
    const int64_t tok = seq.bos + t;
    const T* q = row<T>(p.q, tok, H, hd.h, K);
    const T* k = row<T>(p.k, tok, H, hd.h, K);
    const T* v = row<T>(p.v, tok, HV, hd.hv, V);
    const T beta = static_cast<const T*>(p.beta)[tok * HV + hd.hv];
    const T decay = p.g != nullptr ? std::exp(static_cast<const T*>(p.g)[tok * HV + hd.hv]) : T(1);
    // u = beta (v - (decay S)^T k), S = decay S + k u^T, o = scale S^T q
    std::fill(tmp.begin(), tmp.end(), T(0));
    for (int64_t d = 0; d < K; ++d) {
      T* s = S.data() + d * V;
      for (int64_t c = 0; c < V; ++c) {
        s[c] *= decay;
        tmp[c] += k[d] * s[c];
      }
    }
    for (int64_t c = 0; c < V; ++c) tmp[c] = beta * (v[c] - tmp[c]);
    T* o = row_mut<T>(p.o, tok, HV, hd.hv, V);
    std::fill_n(o, V, T(0));
    for (int64_t d = 0; d < K; ++d) {
      T* s = S.data() + d * V;
      const T qd = scale * q[d];
      for (int64_t c = 0; c < V; ++c) {
        s[c] += k[d] * tmp[c];
        o[c] += qd * s[c];
      }
    }
  }
  if (p.ht != nullptr) std::copy(S.begin(), S.end(), static_cast<T*>(p.ht) + (n * HV + hd.hv) * K * V);
}

inline Heads heads_of(const FwdParams& p, int64_t task) {
  const int64_t hv = task % p.value_heads;
  return {hv / (p.value_heads / p.heads), hv};
}

template <typename T>
void forward_range(const FwdParams& p, int64_t begin, int64_t end) {
  Work<T> w(p.dim_k, p.dim_v);
  std::vector<T> S(static_cast<size_t>(p.dim_k * p.dim_v));
  for (int64_t task = begin; task < end; ++task) forward_task<T>(p, task / p.value_heads, heads_of(p, task), w, S);
}

template <typename T>
void backward_range(const BwdParams& p, int64_t begin, int64_t end) {
  Work<T> w(p.dim_k, p.dim_v);
  std::vector<T> states, dS(static_cast<size_t>(p.dim_k * p.dim_v));
  for (int64_t task = begin; task < end; ++task)
    backward_task<T>(p, task / p.value_heads, heads_of(p, task), w, states, dS);
}

LINATTN_CPU_CLONES void forward_range_f32(const FwdParams& p, int64_t begin, int64_t end) {
  forward_range<float>(p, begin, end);
}
LINATTN_CPU_CLONES void backward_range_f32(const BwdParams& p, int64_t begin, int64_t end) {
  backward_range<float>(p, begin, end);
}

}  // namespace

template <typename T>
void chunk_forward(const FwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.value_heads, 1, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      forward_range_f32(p, begin, end);
    } else {
      forward_range<T>(p, begin, end);
    }
  });
}

template <typename T>
void recurrent_forward(const FwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.value_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> S(static_cast<size_t>(p.dim_k * p.dim_v)), tmp(p.dim_v);
    for (int64_t task = begin; task < end; ++task) recurrent_task<T>(p, task / p.value_heads, heads_of(p, task), S, tmp);
  });
}

template <typename T>
void chunk_backward(const BwdParams& p) {
  at::parallel_for(0, p.num_seqs * p.value_heads, 1, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      backward_range_f32(p, begin, end);
    } else {
      backward_range<T>(p, begin, end);
    }
  });
}

template void chunk_forward<float>(const FwdParams&);
template void chunk_forward<double>(const FwdParams&);
template void recurrent_forward<float>(const FwdParams&);
template void recurrent_forward<double>(const FwdParams&);
template void chunk_backward<float>(const BwdParams&);
template void chunk_backward<double>(const BwdParams&);

}  // namespace linattn::delta::cpu
