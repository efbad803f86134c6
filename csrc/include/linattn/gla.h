#pragma once
// Gated linear attention (GLA) and its scalar-gate form (simple GLA; lightning and retention decays).
//
// Layout [B, T, H, D]; varlen via cu_seqlens (int64 [N+1], B == 1). Every function returns
// (o, final_state): o is [B, T, H, V] in q's dtype, final_state is [N, H, K, V] in float32 (float64 for
// float64 inputs) when output_final_state is true and an undefined tensor otherwise. Gates are log-space
// per step. All functions go through the dispatcher, so gradients flow through torch::autograd.

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t); g is [B, T, H, K]. Chunked algorithm.
LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_gla(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

// Same recurrence evaluated step by step (decoding, short T); gk may be absent (no decay).
LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_gla(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& gk = std::nullopt, std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

// Scalar gate per head and step: g is [B, T, H], g_gamma a constant per-head decay [H]; both may be given
// (their sum is the gate) or neither (plain causal linear attention).
LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_simple_gla(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& g = std::nullopt, const std::optional<at::Tensor>& g_gamma = std::nullopt,
    std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_simple_gla(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& g = std::nullopt, const std::optional<at::Tensor>& g_gamma = std::nullopt,
    std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

// Lightning attention (fla's chunk_lightning_attn / fused_recurrent_lightning_attn): simple GLA with the constant
// per-head log decay lightning_attn_decay(H, layer_idx, num_layers) = -8 h / H * (1 - layer_idx / num_layers)
// for head h (head 0 does not decay). num_layers >= 1 and 0 <= layer_idx <= num_layers.
LINATTN_API at::Tensor lightning_attn_decay(int64_t num_heads, int64_t layer_idx, int64_t num_layers,
                                            const at::TensorOptions& options);

LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_lightning_attn(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t layer_idx, int64_t num_layers,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_lightning_attn(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t layer_idx, int64_t num_layers,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

// Retention (RetNet; fla's chunk_retention / fused_recurrent_retention): simple GLA with the constant per-head log
// decay retention_decay(H) = log(1 - 2^(-5 - h)) for head h.
LINATTN_API at::Tensor retention_decay(int64_t num_heads, const at::TensorOptions& options);

LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_retention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_retention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, std::optional<double> scale = std::nullopt,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

}  // namespace linattn
