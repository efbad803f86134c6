#pragma once
// Shared pieces of the LoLCATs hybrid attention backends: checks and output allocation.
#include <tuple>

#include <ATen/core/Tensor.h>

namespace linattn::lolcats {

// q, k [B, T, H, D]; v [B, T, H, V]; fq, fk [B, T, H, F]; window_factor [H]; window_size >= 1.
void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& window_factor, int64_t window_size);

// (o [B, T, H, V] in q's dtype, m [B, T, H], z [B, T, H] in state precision): the window max of the scaled
// scores and the shared normaliser of each row, saved for the backward. Symbolic-safe.
std::tuple<at::Tensor, at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v);

}  // namespace linattn::lolcats
