#pragma once
// DeltaNet and gated DeltaNet. q, k [B, T, H, K]; v [B, T, HV, V] with HV a multiple of H (value head i uses
// q/k head i / (HV / H)); beta and g [B, T, HV]; states [N, HV, K, V] (float32, float64 for float64 inputs).
// Per value head: S <- exp(g_t) S (gated only); u_t = beta_t (v_t - S^T k_t); S <- S + k_t u_t^T;
// o_t = S^T (scale q_t). use_qk_l2norm_in_kernel normalises q and k (x / sqrt(sum x^2 + 1e-6)) first.
// Returns (o, final_state); final_state is undefined unless output_final_state.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, bool use_qk_l2norm_in_kernel = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, bool use_qk_l2norm_in_kernel = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> chunk_gated_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, bool use_qk_l2norm_in_kernel = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

LINATTN_API std::tuple<at::Tensor, at::Tensor> fused_recurrent_gated_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
    std::optional<double> scale = std::nullopt, const std::optional<at::Tensor>& initial_state = std::nullopt,
    bool output_final_state = false, bool use_qk_l2norm_in_kernel = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

// Decoding with one state buffer: reads state [N, HV, K, V] (contiguous, float32; float64 for float64 inputs)
// as the initial state and overwrites it with the final state, in the kernel (no copy). g may be absent
// (DeltaNet) or [B, T, HV] (gated DeltaNet). Returns o. Not differentiable: raises if an input requires grad
// while grad mode is on.
LINATTN_API at::Tensor fused_recurrent_delta_rule_inplace(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& g,
    const at::Tensor& beta, at::Tensor& state, std::optional<double> scale = std::nullopt,
    bool use_qk_l2norm_in_kernel = false, const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

}  // namespace linattn
