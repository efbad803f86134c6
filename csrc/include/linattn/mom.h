#pragma once
// Mixture-of-memories routing: route tokens to memories, pack each memory's tokens as varlen sequences,
// and combine the memories' outputs back per token.
#include <tuple>

#include <ATen/core/ATen_fwd.h>
#include <ATen/core/Tensor.h>

#include <linattn/export.h>

namespace linattn {

// fp32 softmax over memories, top-k (ties to the lower index), weights renormalised over the k.
// router_logits [B, T, E] -> (weights [B, T, k] in the logits' dtype, indices [B, T, k] int64).
LINATTN_API std::tuple<at::Tensor, at::Tensor> mom_route(const at::Tensor& router_logits, int64_t topk);

// x [B, T, ...], indices [B, T, k] -> (x_sorted [B*T*k, ...], cu_seqlens [E*B+1] int64, sort_index [B*T*k]):
// sequence e*B + b holds, in token order, the tokens of batch b routed to memory e (stable, deterministic);
// sort_index[r] = b*T + t of packed row r. No host synchronisation.
LINATTN_API std::tuple<at::Tensor, at::Tensor, at::Tensor> mom_dispatch(const at::Tensor& x,
                                                                        const at::Tensor& indices,
                                                                        int64_t num_memories);

// y[b, t] = sum_j weights[b, t, j] * (row of y_sorted holding copy j of token (b, t)), summed in packed-row
// order in fp32 (float64 for float64 rows) and rounded once to y_sorted's dtype.
LINATTN_API at::Tensor mom_combine(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                                   const at::Tensor& sort_index, int64_t num_memories);

// Per-memory projections of packed rows without a loop over memories: y [N, O] with
// y[r] = x[r] weights[g]^T for offsets[g] <= r < offsets[g+1] (weights: G tensors [O, D], like nn.Linear's;
// offsets int64 [G+1], e.g. every B-th entry of mom_dispatch's cu_seqlens) and y[r] = 0 outside
// offsets[0] .. offsets[G]. Differentiable w.r.t. x and every weight. Offsets on the GPU are read to the host
// once per call (CPU offsets avoid that read).
LINATTN_API at::Tensor mom_grouped_linear(const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets);

}  // namespace linattn
