// The C++ API of the GLA family: calls through the dispatcher, so autograd, CPU/CUDA selection and
// torch.compile all see the same ops as Python does.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <linattn/gla.h>

#include "core/api_util.h"
#include "ops/gla/gla_dispatch.h"

namespace linattn {

namespace gla::dispatch {

namespace {
c10::OperatorHandle handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> chunk_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, std::optional<double> scale, const OptTensor& h0,
                                             bool output_final_state, const OptTensor& cu_seqlens) {
  static auto op = handle("linattn::chunk_gla").typed<decltype(chunk_gla)>();
  return op.call(q, k, v, g, scale, h0, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const OptTensor& gk, std::optional<double> scale,
                                                       const OptTensor& h0, bool output_final_state,
                                                       const OptTensor& cu_seqlens) {
  static auto op = handle("linattn::fused_recurrent_gla").typed<decltype(fused_recurrent_gla)>();
  return op.call(q, k, v, gk, scale, h0, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> chunk_simple_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const OptTensor& g, const OptTensor& g_gamma,
                                                    std::optional<double> scale, const OptTensor& h0,
                                                    bool output_final_state, const OptTensor& cu_seqlens) {
  static auto op = handle("linattn::chunk_simple_gla").typed<decltype(chunk_simple_gla)>();
  return op.call(q, k, v, g, g_gamma, scale, h0, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_simple_gla(const at::Tensor& q, const at::Tensor& k,
                                                              const at::Tensor& v, const OptTensor& g,
                                                              const OptTensor& g_gamma, std::optional<double> scale,
                                                              const OptTensor& h0, bool output_final_state,
                                                              const OptTensor& cu_seqlens) {
  static auto op = handle("linattn::fused_recurrent_simple_gla").typed<decltype(fused_recurrent_simple_gla)>();
  return op.call(q, k, v, g, g_gamma, scale, h0, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gla_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g, const OptTensor& g_gamma,
    const at::Tensor& do_, const OptTensor& dht, std::optional<double> scale, const OptTensor& h0,
    const OptTensor& cu_seqlens) {
  static auto op = handle("linattn::_gla_backward").typed<decltype(gla_backward)>();
  return op.call(q, k, v, g, g_gamma, do_, dht, scale, h0, cu_seqlens);
}

}  // namespace gla::dispatch

std::tuple<at::Tensor, at::Tensor> chunk_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, std::optional<double> scale,
                                             const std::optional<at::Tensor>& initial_state, bool output_final_state,
                                             const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(gla::dispatch::chunk_gla(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens),
                       output_final_state);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const std::optional<at::Tensor>& gk,
                                                       std::optional<double> scale,
                                                       const std::optional<at::Tensor>& initial_state,
                                                       bool output_final_state,
                                                       const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(
      gla::dispatch::fused_recurrent_gla(q, k, v, gk, scale, initial_state, output_final_state, cu_seqlens),
      output_final_state);
}

std::tuple<at::Tensor, at::Tensor> chunk_simple_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const std::optional<at::Tensor>& g,
                                                    const std::optional<at::Tensor>& g_gamma,
                                                    std::optional<double> scale,
                                                    const std::optional<at::Tensor>& initial_state,
                                                    bool output_final_state,
                                                    const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(
      gla::dispatch::chunk_simple_gla(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens),
      output_final_state);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_simple_gla(const at::Tensor& q, const at::Tensor& k,
                                                              const at::Tensor& v, const std::optional<at::Tensor>& g,
                                                              const std::optional<at::Tensor>& g_gamma,
                                                              std::optional<double> scale,
                                                              const std::optional<at::Tensor>& initial_state,
                                                              bool output_final_state,
                                                              const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(gla::dispatch::fused_recurrent_simple_gla(q, k, v, g, g_gamma, scale, initial_state,
                                                                 output_final_state, cu_seqlens),
                       output_final_state);
}

at::Tensor lightning_attn_decay(int64_t num_heads, int64_t layer_idx, int64_t num_layers,
                                const at::TensorOptions& options) {
  TORCH_CHECK(num_heads >= 1, "lightning_attn_decay: num_heads must be >= 1, got ", num_heads);
  TORCH_CHECK(num_layers >= 1 && layer_idx >= 0 && layer_idx <= num_layers,
              "lightning attention: layer_idx must be in [0, num_layers] with num_layers >= 1, got layer_idx=",
              layer_idx, ", num_layers=", num_layers);
  const double rate = 8.0 / static_cast<double>(num_heads) *
                      (1.0 - static_cast<double>(layer_idx) / static_cast<double>(num_layers));
  return at::arange(num_heads, options) * (-rate);
}

namespace {
at::TensorOptions decay_options(const at::Tensor& q) {
  return q.options().dtype(q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> chunk_lightning_attn(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        int64_t layer_idx, int64_t num_layers,
                                                        std::optional<double> scale,
                                                        const std::optional<at::Tensor>& initial_state,
                                                        bool output_final_state,
                                                        const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.dim() == 4, "chunk_lightning_attn: q must be [B, T, H, K], got ", q.sizes());
  const at::Tensor decay = lightning_attn_decay(q.size(2), layer_idx, num_layers, decay_options(q));
  return chunk_simple_gla(q, k, v, std::nullopt, decay, scale, initial_state, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_lightning_attn(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v, int64_t layer_idx,
                                                                  int64_t num_layers, std::optional<double> scale,
                                                                  const std::optional<at::Tensor>& initial_state,
                                                                  bool output_final_state,
                                                                  const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.dim() == 4, "fused_recurrent_lightning_attn: q must be [B, T, H, K], got ", q.sizes());
  const at::Tensor decay = lightning_attn_decay(q.size(2), layer_idx, num_layers, decay_options(q));
  return fused_recurrent_simple_gla(q, k, v, std::nullopt, decay, scale, initial_state, output_final_state,
                                    cu_seqlens);
}

at::Tensor retention_decay(int64_t num_heads, const at::TensorOptions& options) {
  TORCH_CHECK(num_heads >= 1, "retention_decay: num_heads must be >= 1, got ", num_heads);
  return at::log1p(at::exp2(at::arange(num_heads, options).add(5.0).neg()).neg());
}

std::tuple<at::Tensor, at::Tensor> chunk_retention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   std::optional<double> scale,
                                                   const std::optional<at::Tensor>& initial_state,
                                                   bool output_final_state,
                                                   const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.dim() == 4, "chunk_retention: q must be [B, T, H, K], got ", q.sizes());
  return chunk_simple_gla(q, k, v, std::nullopt, retention_decay(q.size(2), decay_options(q)), scale, initial_state,
                          output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_retention(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, std::optional<double> scale,
                                                             const std::optional<at::Tensor>& initial_state,
                                                             bool output_final_state,
                                                             const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.dim() == 4, "fused_recurrent_retention: q must be [B, T, H, K], got ", q.sizes());
  return fused_recurrent_simple_gla(q, k, v, std::nullopt, retention_decay(q.size(2), decay_options(q)), scale,
                                    initial_state, output_final_state, cu_seqlens);
}

}  // namespace linattn
