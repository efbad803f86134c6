// Liger ops as registered composites (CompositeImplicitAutograd) of linattn's own ops and ATen: gradients,
// backends and torch.compile come from the parts (chunk_gla and sliding_window_attention carry C++ autograd).
// A fused CUDA kernel (feature-map softmax in the GLA loads, the mix in the output write) can replace the
// composite later without changing the schema.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <linattn/gla.h>
#include <linattn/liger.h>
#include <linattn/swa.h>

#include "core/checks.h"
#include "ops/gla/gla_dispatch.h"

namespace linattn {

at::Tensor liger_gate(const at::Tensor& k, std::optional<int64_t> out_dim, double divisor) {
  const char* op = "liger_gate";
  check_defined(k, op, "k");
  check_floating(k, op, "k");
  TORCH_CHECK(k.dim() >= 1, op, ": k must have at least one dimension");
  TORCH_CHECK(divisor != 0.0, op, ": divisor must be non-zero");
  at::Tensor pooled = k;
  if (out_dim.has_value()) {
    TORCH_CHECK(*out_dim >= 1, op, ": out_dim must be >= 1, got ", *out_dim);
    const c10::SymInt D = k.sym_size(-1);
    if (D != *out_dim) {
      const at::Tensor flat = k.reshape_symint({-1, 1, D});
      std::vector<c10::SymInt> shape(k.sym_sizes().begin(), k.sym_sizes().end());
      shape.back() = *out_dim;
      pooled = at::adaptive_avg_pool1d(flat, {*out_dim}).reshape_symint(shape);
    }
  }
  return at::log_sigmoid(pooled) / divisor;
}

std::tuple<at::Tensor, at::Tensor> liger_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const at::Tensor& g, const at::Tensor& q_rot,
                                                   const at::Tensor& k_rot, int64_t window_size,
                                                   const std::optional<at::Tensor>& initial_state,
                                                   bool output_final_state, double softmax_weight,
                                                   double linear_weight) {
  const char* op = "liger_attention";
  check_rank(q_rot, op, "q_rot", 4, "[B, T, H, D] like q");
  check_rank(k_rot, op, "k_rot", 4, "[B, T, H, D] like k");
  TORCH_CHECK(q_rot.sym_sizes() == q.sym_sizes() && k_rot.sym_sizes() == k.sym_sizes(), op,
              ": q_rot and k_rot must have the shapes of q and k, got ", q_rot.sym_sizes(), " and ",
              k_rot.sym_sizes());
  auto [o_lin, ht] = gla::dispatch::chunk_gla(at::softmax(q, -1), at::softmax(k, -1), v, g, 1.0, initial_state,
                                              output_final_state, std::nullopt);
  const at::Tensor o_win = sliding_window_attention(q_rot, k_rot, v, window_size);
  return {o_win * softmax_weight + o_lin * linear_weight, ht};
}

TORCH_LIBRARY_IMPL(linattn, CompositeImplicitAutograd, m) {
  m.impl("liger_gate", &liger_gate);
  m.impl("liger_attention", &liger_attention);
}

}  // namespace linattn
