// MoM routing ops as registered composites (CompositeImplicitAutograd) of ATen ops: differentiable through
// their parts (softmax/gather for the weights, index_select/index_add for the rows), traceable by
// torch.compile, and free of host synchronisation (all shapes follow from B, T, k and E).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <linattn/mom.h>

#include "core/checks.h"

namespace linattn {

namespace {

// Values are checked only where they can be read without tracing (not under FakeTensor/torch.compile).
bool readable(const at::Tensor& t) {
  return !t.is_meta() && !t.key_set().has(c10::DispatchKey::Python);
}

void check_indices(const char* op, const at::Tensor& indices, int64_t num_memories) {
  check_rank(indices, op, "indices", 3, "[B, T, k]");
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(num_memories >= 1, op, ": num_memories must be >= 1, got ", num_memories);
  if (readable(indices) && indices.numel() > 0 && !indices.is_cpu()) {
    // Reading the values back would stall the host on every call: the device checks them instead (a
    // failure surfaces as a device-side assertion at the next synchronisation).
    at::_assert_async(at::logical_and(indices.min() >= 0, indices.max() < num_memories),
                      "mom: indices out of range [0, num_memories)");
  } else if (readable(indices) && indices.numel() > 0) {
    const int64_t lo = indices.min().item<int64_t>(), hi = indices.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_memories, op, ": indices must lie in [0, ", num_memories, "), got values in [",
                lo, ", ", hi, "]");
  }
}

// Flat copy index (b*T + t)*k + j of every packed row: a stable sort of the copies by sequence e*B + b.
at::Tensor packing_order(const at::Tensor& indices) {
  const c10::SymInt B = indices.sym_size(0);
  const at::Tensor batch = at::arange(c10::Scalar(B), indices.options()).view({-1, 1, 1});
  const at::Tensor key = (indices * B + batch).reshape({-1});
  return std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> mom_route(const at::Tensor& router_logits, int64_t topk) {
  const char* op = "mom_route";
  check_rank(router_logits, op, "router_logits", 3, "[B, T, E]");
  check_floating(router_logits, op, "router_logits");
  TORCH_CHECK(topk >= 1 && router_logits.sym_size(2) >= topk, op, ": topk must be in [1, E=",
              router_logits.sym_size(2), "], got ", topk);
  // fp32 at least (float64 stays float64, for gradcheck).
  const at::Tensor probs = at::softmax(router_logits.to(at::promote_types(router_logits.scalar_type(), at::kFloat)), -1);
  const at::Tensor order = std::get<1>(at::sort(probs, /*stable=*/true, /*dim=*/-1, /*descending=*/true));
  const at::Tensor indices = order.narrow(-1, 0, topk).contiguous();
  const at::Tensor picked = probs.gather(-1, indices);
  return {(picked / picked.sum(-1, true)).to(router_logits.scalar_type()), indices};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mom_dispatch(const at::Tensor& x, const at::Tensor& indices,
                                                            int64_t num_memories) {
  const char* op = "mom_dispatch";
  check_indices(op, indices, num_memories);
  TORCH_CHECK(x.dim() >= 2 && x.sym_size(0) == indices.sym_size(0) && x.sym_size(1) == indices.sym_size(1), op,
              ": x must have shape [B, T, ...] with B, T of indices ", indices.sym_sizes(), ", got ", x.sym_sizes());
  check_same_device(indices, x, op, "indices");
  const c10::SymInt B = indices.sym_size(0), k = indices.sym_size(2);
  const at::Tensor order = packing_order(indices);
  const at::Tensor sort_index = at::floor_divide(order, k);
  const at::Tensor batch = at::arange(c10::Scalar(B), indices.options()).view({-1, 1, 1});
  const at::Tensor key = (indices * B + batch).reshape({-1});
  const at::Tensor counts = at::zeros_symint({B * num_memories}, indices.options()).index_add(0, key, at::ones_like(key));
  const at::Tensor cu_seqlens = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)});
  std::vector<c10::SymInt> flat_shape{-1};
  for (int64_t d = 2; d < x.dim(); ++d) flat_shape.push_back(x.sym_size(d));
  const at::Tensor x_sorted = x.reshape_symint(flat_shape).index_select(0, sort_index);
  return {x_sorted, cu_seqlens, sort_index};
}

at::Tensor mom_combine(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                       const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "mom_combine";
  check_indices(op, indices, num_memories);
  check_rank(weights, op, "weights", 3, "[B, T, k]");
  TORCH_CHECK(weights.sym_sizes() == indices.sym_sizes(), op, ": weights must have the shape of indices ",
              indices.sym_sizes(), ", got ", weights.sym_sizes());
  const c10::SymInt B = indices.sym_size(0), T = indices.sym_size(1);
  TORCH_CHECK(y_sorted.dim() >= 1 && y_sorted.sym_size(0) == indices.sym_numel(), op,
              ": y_sorted must have B*T*k = ", indices.sym_numel(), " rows, got shape ", y_sorted.sym_sizes());
  check_rank(sort_index, op, "sort_index", 1, "[B*T*k]");
  const at::Tensor order = packing_order(indices);
  const at::Tensor w = weights.reshape({-1}).index_select(0, order).to(y_sorted.scalar_type());
  std::vector<c10::SymInt> wshape{y_sorted.sym_size(0)};
  for (int64_t d = 1; d < y_sorted.dim(); ++d) wshape.push_back(1);
  const at::Tensor contrib = y_sorted * w.view_symint(wshape);
  std::vector<c10::SymInt> out_rows{B * T};
  for (int64_t d = 1; d < y_sorted.dim(); ++d) out_rows.push_back(y_sorted.sym_size(d));
  at::Tensor y = at::zeros_symint(out_rows, y_sorted.options()).index_add(0, sort_index, contrib);
  std::vector<c10::SymInt> out_shape{B, T};
  for (int64_t d = 1; d < y_sorted.dim(); ++d) out_shape.push_back(y_sorted.sym_size(d));
  return y.view_symint(out_shape);
}

TORCH_LIBRARY_IMPL(linattn, CompositeImplicitAutograd, m) {
  m.impl("mom_route", &mom_route);
  m.impl("mom_dispatch", &mom_dispatch);
  m.impl("mom_combine", &mom_combine);
}

}  // namespace linattn
