#pragma once
// Torch-side helpers of sliding-window attention shared by its backends.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "ops/swa/swa_params.h"

namespace linattn::swa {

// q, k [B, T, H, K]; v [B, T, H, V]; window_size >= 1; cu_seqlens int64 [N+1] with B == 1. Symbolic-safe.
void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window_size,
                  const std::optional<at::Tensor>& cu_seqlens);

// (o [B, T, H, V] in q's dtype, lse [B, T, H] in state precision). Symbolic-safe.
std::tuple<at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v);

struct Inputs {
  at::Tensor q, k, v, cu_seqlens;
};
Inputs prepare(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const std::optional<at::Tensor>& cu_seqlens);
Params make_params(const Inputs& in, int64_t window_size, std::optional<double> scale);

}  // namespace linattn::swa
