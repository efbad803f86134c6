// CPU kernels of the LoLCATs hybrid attention. Row i mixes a softmax window (keys i-w+1..i, weights
// gamma e^{s_ij - m_i}) with linear attention over the keys that have left the window (j <= i-w, weights
// phi(q_i).phi(k_j)) under one normaliser. One task per (batch, head), sequential over rows; the linear part
// is carried as running sums (sum phi(k) v^T, sum phi(k)), so work is O(T (w D + F V)) and memory O(T).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/checks.h"
#include "ops/lolcats/lolcats_common.h"

namespace linattn::lolcats {
namespace {

// Row pointers into contiguous [B, T, H, X] tensors.
template <typename T>
struct View {
  T* base;
  int64_t T_, H, X;
  T* row(int64_t b, int64_t t, int64_t h) const { return base + ((b * T_ + t) * H + h) * X; }
};

template <typename T>
View<T> view(const at::Tensor& x) {
  return {x.data_ptr<std::remove_const_t<T>>(), x.size(1), x.size(2), x.size(3)};
}

template <typename T>
T scores_row(const View<const T>& q, const View<const T>& k, int64_t b, int64_t i, int64_t h, int64_t j0, T scale,
             T* s) {
  const T* qi = q.row(b, i, h);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = j0; j <= i; ++j) {
    const T* kj = k.row(b, j, h);
    T dot = 0;
    for (int64_t d = 0; d < q.X; ++d) dot += qi[d] * kj[d];
    s[j - j0] = dot * scale;
    m = std::max(m, s[j - j0]);
  }
  return m;
}

template <typename T>
void forward_task(int64_t b, int64_t h, int64_t w, T scale, T gamma, const View<const T>& q, const View<const T>& k,
                  const View<const T>& v, const View<const T>& fq, const View<const T>& fk, const View<T>& o,
                  T* m_out, T* z_out) {
  const int64_t Tn = q.T_, V = v.X, F = fq.X, H = q.H;
  std::vector<T> Hs(F * V, T(0)), zs(F, T(0)), s(std::min(w, Tn));
  for (int64_t i = 0; i < Tn; ++i) {
    if (i - w >= 0) {  // key i-w leaves the window: fold it into the running sums
      const T* fkj = fk.row(b, i - w, h);
      const T* vj = v.row(b, i - w, h);
      for (int64_t f = 0; f < F; ++f) {
        zs[f] += fkj[f];
        for (int64_t c = 0; c < V; ++c) Hs[f * V + c] += fkj[f] * vj[c];
      }
    }
    const int64_t j0 = std::max<int64_t>(0, i - w + 1);
    const T m = scores_row(q, k, b, i, h, j0, scale, s.data());
    T* oi = o.row(b, i, h);
    std::fill_n(oi, V, T(0));
    T z = 0;
    for (int64_t j = j0; j <= i; ++j) {
      const T e = gamma * std::exp(s[j - j0] - m);
      z += e;
      const T* vj = v.row(b, j, h);
      for (int64_t c = 0; c < V; ++c) oi[c] += e * vj[c];
    }
    const T* fqi = fq.row(b, i, h);
    for (int64_t f = 0; f < F; ++f) {
      z += fqi[f] * zs[f];
      for (int64_t c = 0; c < V; ++c) oi[c] += fqi[f] * Hs[f * V + c];
    }
    for (int64_t c = 0; c < V; ++c) oi[c] /= z;
    m_out[(b * Tn + i) * H + h] = m;
    z_out[(b * Tn + i) * H + h] = z;
  }
}

template <typename T>
struct Grads {
  View<T> dq, dk, dv, dfq, dfk;
  T* dgamma;  // [B, H] partial sums (per task) of dL/dgamma
};

template <typename T>
void backward_task(int64_t b, int64_t h, int64_t w, T scale, T gamma, const View<const T>& q, const View<const T>& k,
                   const View<const T>& v, const View<const T>& fq, const View<const T>& fk, const View<const T>& o,
                   const View<const T>& d_o, const T* m_in, const T* z_in, const Grads<T>& g) {
  const int64_t Tn = q.T_, V = v.X, F = fq.X, D = q.X, H = q.H;
  for (int64_t i = 0; i < Tn; ++i) {
    std::fill_n(g.dq.row(b, i, h), D, T(0));
    std::fill_n(g.dk.row(b, i, h), D, T(0));
    std::fill_n(g.dv.row(b, i, h), V, T(0));
  }
  std::vector<T> dN(Tn * V), dZ(Tn), s(std::min(w, Tn)), ds(std::min(w, Tn));
  std::vector<T> Hs(F * V, T(0)), zs(F, T(0));
  T dgamma = 0;
  // Forward sweep: window part and dphi(q) of the linear part (needs the prefix sums).
  for (int64_t i = 0; i < Tn; ++i) {
    if (i - w >= 0) {
      const T* fkj = fk.row(b, i - w, h);
      const T* vj = v.row(b, i - w, h);
      for (int64_t f = 0; f < F; ++f) {
        zs[f] += fkj[f];
        for (int64_t c = 0; c < V; ++c) Hs[f * V + c] += fkj[f] * vj[c];
      }
    }
    const T z = z_in[(b * Tn + i) * H + h], m = m_in[(b * Tn + i) * H + h];
    const T* doi = d_o.row(b, i, h);
    const T* oi = o.row(b, i, h);
    T dot = 0;
    for (int64_t c = 0; c < V; ++c) {
      dN[i * V + c] = doi[c] / z;
      dot += doi[c] * oi[c];
    }
    dZ[i] = -dot / z;
    const T* dNi = dN.data() + i * V;
    const int64_t j0 = std::max<int64_t>(0, i - w + 1);
    scores_row(q, k, b, i, h, j0, scale, s.data());
    T dm = 0;
    int64_t ties = 0;
    for (int64_t j = j0; j <= i; ++j) {
      const T e = gamma * std::exp(s[j - j0] - m);
      const T* vj = v.row(b, j, h);
      T de = dZ[i];
      T* dvj = g.dv.row(b, j, h);
      for (int64_t c = 0; c < V; ++c) {
        de += dNi[c] * vj[c];
        dvj[c] += e * dNi[c];
      }
      ds[j - j0] = de * e;
      dm -= de * e;
      dgamma += de * e / gamma;
      ties += s[j - j0] == m;
    }
    // m_i = max_j s_ij: its gradient goes to the maximal scores, split evenly among ties (as amax does).
    for (int64_t j = j0; j <= i; ++j)
      if (s[j - j0] == m) ds[j - j0] += dm / static_cast<T>(ties);
    const T* qi = q.row(b, i, h);
    T* dqi = g.dq.row(b, i, h);
    for (int64_t j = j0; j <= i; ++j) {
      const T* kj = k.row(b, j, h);
      T* dkj = g.dk.row(b, j, h);
      const T f = ds[j - j0] * scale;
      for (int64_t d = 0; d < D; ++d) {
        dqi[d] += f * kj[d];
        dkj[d] += f * qi[d];
      }
    }
    T* dfqi = g.dfq.row(b, i, h);
    for (int64_t f = 0; f < F; ++f) {
      T acc = zs[f] * dZ[i];
      for (int64_t c = 0; c < V; ++c) acc += Hs[f * V + c] * dNi[c];
      dfqi[f] = acc;
    }
  }
  // Reverse sweep: dphi(k_j) and the linear part of dv_j from the suffix sums over rows i >= j + w.
  std::vector<T> G(F * V, T(0)), gz(F, T(0));
  for (int64_t j = Tn - 1; j >= 0; --j) {
    if (j + w < Tn) {
      const int64_t i = j + w;
      const T* fqi = fq.row(b, i, h);
      for (int64_t f = 0; f < F; ++f) {
        gz[f] += fqi[f] * dZ[i];
        for (int64_t c = 0; c < V; ++c) G[f * V + c] += fqi[f] * dN[i * V + c];
      }
    }
    const T* vj = v.row(b, j, h);
    const T* fkj = fk.row(b, j, h);
    T* dfkj = g.dfk.row(b, j, h);
    T* dvj = g.dv.row(b, j, h);
    for (int64_t f = 0; f < F; ++f) {
      T acc = gz[f];
      for (int64_t c = 0; c < V; ++c) {
        acc += G[f * V + c] * vj[c];
        dvj[c] += G[f * V + c] * fkj[f];
      }
      dfkj[f] = acc;
    }
  }
  g.dgamma[b * H + h] = dgamma;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, const at::Tensor& fq,
                                                           const at::Tensor& fk, const at::Tensor& window_factor,
                                                           int64_t window_size, std::optional<double> scale) {
  const char* op = "lolcats_attention";
  check_inputs(op, q, k, v, fq, fk, window_factor, window_size);
  check_cpu_dtype(op, q);
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), fqc = fq.contiguous(),
             fkc = fk.contiguous();
  const at::Tensor gamma = at::sigmoid(window_factor).contiguous();
  auto [o, m, z] = alloc_outputs(q, v);
  const int64_t B = q.size(0), H = q.size(2);
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "lolcats_forward_cpu", [&] {
    using T = scalar_t;
    const View<const T> Q = view<const T>(qc), Kv = view<const T>(kc), Vv = view<const T>(vc),
                        FQ = view<const T>(fqc), FK = view<const T>(fkc);
    const View<T> O = view<T>(o);
    const T* gam = gamma.data_ptr<T>();
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        forward_task<T>(t / H, t % H, window_size, static_cast<T>(sc), gam[t % H], Q, Kv, Vv, FQ, FK, O,
                        m.data_ptr<T>(), z.data_ptr<T>());
    });
  });
  return {o, m, z};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq, const at::Tensor& fk,
    const at::Tensor& window_factor, const at::Tensor& o, const at::Tensor& m, const at::Tensor& z,
    const at::Tensor& do_, int64_t window_size, std::optional<double> scale) {
  const char* op = "_lolcats_attention_backward";
  check_inputs(op, q, k, v, fq, fk, window_factor, window_size);
  check_cpu_dtype(op, q);
  const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), fqc = fq.contiguous(),
             fkc = fk.contiguous(), oc = o.contiguous(), mc = m.contiguous(), zc = z.contiguous(),
             doc = do_.to(q.scalar_type()).contiguous();
  const at::Tensor gamma = at::sigmoid(window_factor).contiguous();
  at::Tensor dq = at::empty_like(qc), dk = at::empty_like(kc), dv = at::empty_like(vc), dfq = at::empty_like(fqc),
             dfk = at::empty_like(fkc);
  const int64_t B = q.size(0), H = q.size(2);
  at::Tensor dgamma = at::empty({B, H}, q.options());
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "lolcats_backward_cpu", [&] {
    using T = scalar_t;
    const View<const T> Q = view<const T>(qc), Kv = view<const T>(kc), Vv = view<const T>(vc),
                        FQ = view<const T>(fqc), FK = view<const T>(fkc), O = view<const T>(oc),
                        DO = view<const T>(doc);
    const Grads<T> g{view<T>(dq), view<T>(dk), view<T>(dv), view<T>(dfq), view<T>(dfk), dgamma.data_ptr<T>()};
    const T* gam = gamma.data_ptr<T>();
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        backward_task<T>(t / H, t % H, window_size, static_cast<T>(sc), gam[t % H], Q, Kv, Vv, FQ, FK, O, DO,
                         mc.data_ptr<T>(), zc.data_ptr<T>(), g);
    });
  });
  // gamma = sigmoid(window_factor)
  const at::Tensor dwf = dgamma.sum(0) * gamma * (1 - gamma);
  return {dq, dk, dv, dfq, dfk, dwf};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) {
  m.impl("_lolcats_attention_forward", &forward_cpu);
  m.impl("_lolcats_attention_backward", &backward_cpu);
}

}  // namespace linattn::lolcats
