#pragma once
// LoLCATs building blocks.
#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

// phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]: x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F].
LINATTN_API at::Tensor hedgehog_feature_map(const at::Tensor& x, const at::Tensor& weight);

}  // namespace linattn
