#pragma once
// Typed dispatcher calls of the sliding-window attention forward (o, lse) and backward ops, shared by its
// autograd Function and by composite callers (Liger's CPU path).
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace linattn::swa::dispatch {

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           int64_t window, std::optional<double> scale,
                                           const std::optional<at::Tensor>& cu_seqlens);
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& o, const at::Tensor& lse,
                                                        const at::Tensor& d_o, int64_t window,
                                                        std::optional<double> scale,
                                                        const std::optional<at::Tensor>& cu_seqlens);

}  // namespace linattn::swa::dispatch
