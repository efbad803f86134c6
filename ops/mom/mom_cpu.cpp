// CPU kernels of mom_dispatch / mom_combine and their backward ops, in ATen. They define the results the
// CUDA kernels reproduce bit for bit: rows packed by a stable sort on e*B + b; every sum over a token's
// copies runs in packed-row order (index_add, sequential over the index) in fp32 (float64 for float64 rows),
// each product rounded before it is added; outputs rounded once to the rows' dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/mom/mom_common.h"

namespace linattn::mom {
namespace {

at::ScalarType accumulate_type(const at::Tensor& rows) {
  return rows.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Elements per row (the product of the trailing dims).
int64_t row_elems(const at::Tensor& t, int64_t first_dim) {
  int64_t n = 1;
  for (int64_t d = first_dim; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// Flat copy index (b*T + t)*k + j of every packed row: a stable sort of the copies by sequence e*B + b.
at::Tensor packing_order(const at::Tensor& indices) {
  const at::Tensor batch = at::arange(indices.size(0), indices.options()).view({-1, 1, 1});
  const at::Tensor key = (indices * indices.size(0) + batch).reshape({-1});
  return std::get<1>(at::sort(key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
}

// sum over each token's rows (in packed order) of rows * row_weight, as [B*T, D] in the accumulate type.
at::Tensor sum_rows(const at::Tensor& rows, const at::Tensor& row_weight, const at::Tensor& sort_index,
                    int64_t tokens) {
  const int64_t dim = row_elems(rows, 1);
  const at::ScalarType acc = accumulate_type(rows);
  at::Tensor contrib = rows.reshape({rows.size(0), dim}).to(acc);
  if (row_weight.defined()) contrib = contrib * row_weight.to(acc).unsqueeze(1);
  return at::zeros({tokens, dim}, rows.options().dtype(acc)).index_add_(0, sort_index, contrib);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dispatch_cpu(const at::Tensor& x, const at::Tensor& indices,
                                                            int64_t num_memories) {
  const char* op = "mom_dispatch";
  check_dispatch(op, x, indices, num_memories);
  check_index_values(op, indices, num_memories);
  const int64_t B = indices.size(0), k = indices.size(2);
  const at::Tensor order = packing_order(indices);
  const at::Tensor sort_index = at::floor_divide(order, std::max<int64_t>(k, 1));
  const at::Tensor batch = at::arange(B, indices.options()).view({-1, 1, 1});
  const at::Tensor key = (indices * B + batch).reshape({-1});
  const at::Tensor counts = at::zeros({B * num_memories}, indices.options()).index_add(0, key, at::ones_like(key));
  const at::Tensor cu_seqlens = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)});
  at::Tensor x_sorted = x.reshape({B * indices.size(1), row_elems(x, 2)}).index_select(0, sort_index);
  return {x_sorted.view_symint(row_shape(indices, x)), cu_seqlens, sort_index};
}

at::Tensor combine_cpu(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                       const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "mom_combine";
  check_rows(op, "y_sorted", y_sorted, indices, sort_index, num_memories);
  check_weights(op, weights, indices);
  check_index_values(op, indices, num_memories);
  const at::Tensor w = weights.reshape({-1}).index_select(0, packing_order(indices));
  const at::Tensor y = sum_rows(y_sorted, w, sort_index, indices.size(0) * indices.size(1));
  return y.to(y_sorted.scalar_type()).view_symint(token_shape(indices, y_sorted));
}

at::Tensor dispatch_backward_cpu(const at::Tensor& grad_x_sorted, const at::Tensor& indices,
                                 const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "_mom_dispatch_backward";
  check_rows(op, "grad_x_sorted", grad_x_sorted, indices, sort_index, num_memories);
  check_index_values(op, indices, num_memories);
  const at::Tensor dx = sum_rows(grad_x_sorted, at::Tensor(), sort_index, indices.size(0) * indices.size(1));
  return dx.to(grad_x_sorted.scalar_type()).view_symint(token_shape(indices, grad_x_sorted));
}

std::tuple<at::Tensor, at::Tensor> combine_backward_cpu(const at::Tensor& grad_y, const at::Tensor& y_sorted,
                                                        const at::Tensor& weights, const at::Tensor& indices,
                                                        const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "_mom_combine_backward";
  check_rows(op, "y_sorted", y_sorted, indices, sort_index, num_memories);
  check_weights(op, weights, indices);
  check_grad_y(op, grad_y, y_sorted, indices);
  check_index_values(op, indices, num_memories);
  const int64_t rows = y_sorted.size(0), dim = row_elems(y_sorted, 1);
  const at::ScalarType acc = accumulate_type(y_sorted);
  const at::Tensor order = packing_order(indices);
  const at::Tensor g = grad_y.reshape({indices.size(0) * indices.size(1), dim}).index_select(0, sort_index).to(acc);
  const at::Tensor w = weights.reshape({-1}).index_select(0, order).to(acc);
  const at::Tensor grad_y_sorted = (g * w.unsqueeze(1)).to(y_sorted.scalar_type()).view(y_sorted.sizes());
  const at::Tensor dots = (g * y_sorted.reshape({rows, dim}).to(acc)).sum(1);
  const at::Tensor grad_w = at::empty({rows}, dots.options()).index_copy_(0, order, dots);
  return {grad_y_sorted, grad_w.to(weights.scalar_type()).view(weights.sizes())};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) {
  m.impl("mom_dispatch", &dispatch_cpu);
  m.impl("mom_combine", &combine_cpu);
  m.impl("_mom_dispatch_backward", &dispatch_backward_cpu);
  m.impl("_mom_combine_backward", &combine_backward_cpu);
}

}  // namespace linattn::mom
