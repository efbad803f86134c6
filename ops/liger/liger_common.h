#pragma once
// Torch-side helpers of liger_attention shared by its CPU, CUDA and Meta kernels: argument checks (symbolic-size
// safe) and the forward's outputs.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "ops/gla/gla_common.h"

namespace linattn::liger {

using OptTensor = std::optional<at::Tensor>;

// g [B, T, H, D] is a log gate per key (chunk_gla), g [B, T, H] one per head (chunk_simple_gla).
gla::GateLayout gate_layout(const char* op, const at::Tensor& g);

// q, k [B, T, H, D]; v [B, T, H, V]; g as gate_layout; q_rot, k_rot shaped as q, k; window_size >= 1;
// initial_state [B, H, D, V]; one dtype for q, k, v, q_rot, k_rot; one device.
void check_forward(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                   const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0);

// The forward's checks on (q_feat, k_feat, ...), plus o_win and do shaped as v and lse [B, T, H].
void check_backward(const char* op, const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v,
                    const at::Tensor& g, const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win,
                    const at::Tensor& lse, const at::Tensor& d_o, int64_t window_size, const OptTensor& h0);

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Uninitialised (o, final_state or an empty tensor, o_win, lse, q_feat, k_feat). Symbolic-size safe.
Forward alloc_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool output_final_state);

}  // namespace linattn::liger
