// CPU kernels of liger_attention's forward and backward ops, composed from the CPU ops of its parts (softmax,
// chunk_gla / chunk_simple_gla and _gla_backward, the sliding-window forward and backward), so the CPU results
// are those of the composition they replace. Fusion only pays on CUDA (ops/liger/liger_cuda.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/checks.h"
#include "ops/gla/gla_dispatch.h"
#include "ops/liger/liger_common.h"
#include "ops/swa/swa_dispatch.h"

namespace linattn::liger {
namespace {

Forward forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                    const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                    bool output_final_state, double softmax_weight, double linear_weight) {
  const char* op = "liger_attention";
  check_forward(op, q, k, v, g, q_rot, k_rot, window_size, h0);
  check_cpu_dtype(op, q);
  const at::Tensor q_feat = at::softmax(q, -1), k_feat = at::softmax(k, -1);
  auto [o_win, lse] = swa::dispatch::forward(q_rot, k_rot, v, window_size, std::nullopt, std::nullopt);
  auto [o_lin, ht] =
      gate_layout(op, g) == gla::GateLayout::PerKey
          ? gla::dispatch::chunk_gla(q_feat, k_feat, v, g, 1.0, h0, output_final_state, std::nullopt)
          : gla::dispatch::chunk_simple_gla(q_feat, k_feat, v, g, std::nullopt, 1.0, h0, output_final_state,
                                            std::nullopt);
  return {o_win * softmax_weight + o_lin * linear_weight, ht, o_win, lse, q_feat, k_feat};
}

Backward backward_cpu(const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v, const at::Tensor& g,
                      const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win,
                      const at::Tensor& lse, const at::Tensor& d_o, const OptTensor& dht, int64_t window_size,
                      const OptTensor& h0, double softmax_weight, double linear_weight) {
  const char* op = "_liger_attention_backward";
  check_backward(op, q_feat, k_feat, v, g, q_rot, k_rot, o_win, lse, d_o, window_size, h0);
  check_cpu_dtype(op, q_feat);
  auto [dq_rot, dk_rot, dv_win] =
      swa::dispatch::backward(q_rot, k_rot, v, o_win, lse, d_o * softmax_weight, window_size, std::nullopt,
                              std::nullopt);
  auto [dq_feat, dk_feat, dv, dg, dg_gamma, dh0] = gla::dispatch::gla_backward(
      q_feat, k_feat, v, g, std::nullopt, d_o * linear_weight, dht, 1.0, h0, std::nullopt);
  return {at::_softmax_backward_data(dq_feat, q_feat, -1, q_feat.scalar_type()),
          at::_softmax_backward_data(dk_feat, k_feat, -1, k_feat.scalar_type()),
          dv + dv_win,
          dg,
          dq_rot,
          dk_rot,
          dh0};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) {
  m.impl("_liger_attention_forward", &forward_cpu);
  m.impl("_liger_attention_backward", &backward_cpu);
}

}  // namespace linattn::liger
