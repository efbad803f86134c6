#pragma once
// LoLCATs building blocks.
#include <optional>

#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

// phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]: x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F].
LINATTN_API at::Tensor hedgehog_feature_map(const at::Tensor& x, const at::Tensor& weight);

// Hybrid sliding-window softmax + linear attention with one shared normaliser (window w, gamma = sigmoid of
// window_factor [H]): y_i = (sum_{j in W(i)} gamma e^{s_ij - m_i} v_j + sum_{j <= i-w} (fq_i . fk_j) v_j)
//                          / (sum_{j in W(i)} gamma e^{s_ij - m_i} + sum_{j <= i-w} fq_i . fk_j),
// s_ij = scale q_i . k_j, m_i = max over the window. q, k [B,T,H,D]; v [B,T,H,V]; fq, fk [B,T,H,F].
LINATTN_API at::Tensor lolcats_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& window_factor,
                                         int64_t window_size = 64, std::optional<double> scale = std::nullopt);

// MSE between lolcats_attention(...) and causal softmax attention on the same q, k, v (the teacher, computed
// without gradient by scaled_dot_product_attention): the stage-1 objective of LoLCATs.
LINATTN_API at::Tensor attention_transfer_loss(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const at::Tensor& fq, const at::Tensor& fk,
                                               const at::Tensor& window_factor, int64_t window_size = 64,
                                               std::optional<double> scale = std::nullopt);

}  // namespace linattn
