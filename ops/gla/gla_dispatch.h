#pragma once
// Typed dispatcher calls of the GLA ops as registered (final_state is an empty tensor when not requested).
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace linattn::gla::dispatch {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> chunk_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& g, std::optional<double> scale, const OptTensor& h0,
                                             bool output_final_state, const OptTensor& cu_seqlens);
std::tuple<at::Tensor, at::Tensor> fused_recurrent_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const OptTensor& gk, std::optional<double> scale,
                                                       const OptTensor& h0, bool output_final_state,
                                                       const OptTensor& cu_seqlens);
std::tuple<at::Tensor, at::Tensor> chunk_simple_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const OptTensor& g, const OptTensor& g_gamma,
                                                    std::optional<double> scale, const OptTensor& h0,
                                                    bool output_final_state, const OptTensor& cu_seqlens);
std::tuple<at::Tensor, at::Tensor> fused_recurrent_simple_gla(const at::Tensor& q, const at::Tensor& k,
                                                              const at::Tensor& v, const OptTensor& g,
                                                              const OptTensor& g_gamma, std::optional<double> scale,
                                                              const OptTensor& h0, bool output_final_state,
                                                              const OptTensor& cu_seqlens);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gla_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g, const OptTensor& g_gamma,
    const at::Tensor& do_, const OptTensor& dht, std::optional<double> scale, const OptTensor& h0,
    const OptTensor& cu_seqlens);

}  // namespace linattn::gla::dispatch
