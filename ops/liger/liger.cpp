// liger_gate, a registered composite (CompositeImplicitAutograd) of ATen ops, and the C++ API of both Liger ops.
// liger_attention itself is a real op with its own autograd (liger_autograd.cpp) and CPU / CUDA / Meta kernels.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <linattn/liger.h>

#include "core/api_util.h"
#include "core/checks.h"

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
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::liger_attention", "")
                       .typed<decltype(liger_attention)>();
  return drop_unrequested_state(op.call(q, k, v, g, q_rot, k_rot, window_size, initial_state, output_final_state,
                                        softmax_weight, linear_weight),
                                output_final_state);
}

TORCH_LIBRARY_IMPL(linattn, CompositeImplicitAutograd, m) {
  m.impl("liger_gate", &liger_gate);
}

}  // namespace linattn
