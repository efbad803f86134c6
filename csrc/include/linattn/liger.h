#pragma once
// Liger: gates built from the pretrained key projection, and Liger attention.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

// g = logsigmoid(avgpool_last_dim(k, out_dim)) / divisor; out_dim absent keeps the size (no pooling).
LINATTN_API at::Tensor liger_gate(const at::Tensor& k, std::optional<int64_t> out_dim = std::nullopt,
                                  double divisor = 16.0);

// o = softmax_weight * sliding_window_attention(q_rot, k_rot, v, window_size)
//   + linear_weight * GLA(softmax_D(q), softmax_D(k), v, g, scale = 1); returns (o, GLA final state or
// undefined). q, k raw projections [B,T,H,D]; q_rot, k_rot the rotated ones; g [B,T,H,D] (a log gate per key) or
// [B,T,H] (one per head, simple GLA); v [B,T,H,V]; initial_state [B,H,D,V]. Differentiable w.r.t. every tensor
// (C++ autograd); on CUDA the parts run fused (see ops/liger/README.md).
LINATTN_API std::tuple<at::Tensor, at::Tensor> liger_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& q_rot,
    const at::Tensor& k_rot, int64_t window_size = 64, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, double softmax_weight = 0.5, double linear_weight = 0.5);

}  // namespace linattn
