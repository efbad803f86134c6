#pragma once
// Sliding-window attention: causal softmax attention where query i sees keys i-w+1 .. i of its sequence.
// q, k [B, T, H, K]; v [B, T, H, V]; varlen via cu_seqlens (int64 [N+1], B == 1). Returns o [B, T, H, V].
#include <optional>

#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

LINATTN_API at::Tensor sliding_window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                int64_t window_size, std::optional<double> scale = std::nullopt,
                                                const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

}  // namespace linattn
