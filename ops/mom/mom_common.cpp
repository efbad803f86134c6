#include "ops/mom/mom_common.h"

#include "core/checks.h"

namespace linattn::mom {

void check_indices(const char* op, const at::Tensor& indices, int64_t num_memories) {
  check_rank(indices, op, "indices", 3, "[B, T, k]");
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(num_memories >= 1, op, ": num_memories must be >= 1, got ", num_memories);
}

void check_index_values(const char* op, const at::Tensor& indices, int64_t num_memories) {
  if (indices.is_meta() || indices.key_set().has(c10::DispatchKey::Python) || indices.numel() == 0) return;
  const int64_t lo = indices.min().item<int64_t>(), hi = indices.max().item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < num_memories, op, ": indices must lie in [0, ", num_memories, "), got values in [",
              lo, ", ", hi, "]");
}

void check_dispatch(const char* op, const at::Tensor& x, const at::Tensor& indices, int64_t num_memories) {
  check_indices(op, indices, num_memories);
  check_defined(x, op, "x");
  TORCH_CHECK(x.dim() >= 2 && x.sym_size(0) == indices.sym_size(0) && x.sym_size(1) == indices.sym_size(1), op,
              ": x must have shape [B, T, ...] with B, T of indices ", indices.sym_sizes(), ", got ", x.sym_sizes());
  check_same_device(indices, x, op, "indices");
}

void check_rows(const char* op, const char* name, const at::Tensor& rows, const at::Tensor& indices,
                const at::Tensor& sort_index, int64_t num_memories) {
  check_indices(op, indices, num_memories);
  check_defined(rows, op, name);
  TORCH_CHECK(rows.dim() >= 1 && rows.sym_size(0) == indices.sym_numel(), op, ": ", name,
              " must have B*T*k = ", indices.sym_numel(), " rows, got shape ", rows.sym_sizes());
  check_rank(sort_index, op, "sort_index", 1, "[B*T*k]");
  TORCH_CHECK(sort_index.scalar_type() == at::kLong, op, ": sort_index must be int64, got ",
              sort_index.scalar_type());
  check_dim_eq(sort_index, 0, indices.sym_numel(), op, "sort_index", "[B*T*k]");
  check_same_device(indices, rows, op, "indices");
  check_same_device(sort_index, rows, op, "sort_index");
}

void check_weights(const char* op, const at::Tensor& weights, const at::Tensor& indices) {
  check_rank(weights, op, "weights", 3, "[B, T, k]");
  check_floating(weights, op, "weights");
  TORCH_CHECK(weights.sym_sizes() == indices.sym_sizes(), op, ": weights must have the shape of indices ",
              indices.sym_sizes(), ", got ", weights.sym_sizes());
  check_same_device(weights, indices, op, "weights");
}

void check_grad_y(const char* op, const at::Tensor& grad_y, const at::Tensor& y_sorted, const at::Tensor& indices) {
  check_defined(grad_y, op, "grad_y");
  const auto want = token_shape(indices, y_sorted);
  TORCH_CHECK(grad_y.sym_sizes() == c10::SymIntArrayRef(want), op, ": grad_y must have shape ", want, ", got ",
              grad_y.sym_sizes());
  TORCH_CHECK(grad_y.scalar_type() == y_sorted.scalar_type(), op, ": grad_y must have y_sorted's dtype ",
              y_sorted.scalar_type(), ", got ", grad_y.scalar_type());
  check_same_device(grad_y, y_sorted, op, "grad_y");
}

namespace {

void check_offsets(const char* op, const at::Tensor& offsets, int64_t groups, const at::Tensor& x) {
  check_rank(offsets, op, "offsets", 1, "[G+1]");
  TORCH_CHECK(offsets.scalar_type() == at::kLong, op, ": offsets must be int64, got ", offsets.scalar_type());
  check_dim_eq(offsets, 0, groups + 1, op, "offsets", "[G+1] (one more than the number of groups)");
  TORCH_CHECK(offsets.device() == x.device() || offsets.device().is_cpu(), op, ": offsets must be on x's device (",
              x.device(), ") or on the host, got ", offsets.device());
}

}  // namespace

void check_grouped_linear(const char* op, const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets) {
  check_rank(x, op, "x", 2, "[N, D]");
  check_floating(x, op, "x");
  TORCH_CHECK(!weights.empty(), op, ": weights must hold at least one [O, D] tensor, got an empty list");
  for (size_t g = 0; g < weights.size(); ++g) {
    const at::Tensor& w = weights[g];
    TORCH_CHECK(w.defined() && w.dim() == 2, op, ": weights[", g, "] must have shape [O, D] (2-D), got ",
                w.defined() ? w.sym_sizes() : c10::SymIntArrayRef());
    TORCH_CHECK(w.sym_size(1) == x.sym_size(1) && w.sym_size(0) == weights[0].sym_size(0), op, ": weights[", g,
                "] must have shape [O=", weights[0].sym_size(0), ", D=", x.sym_size(1), "] (D of x [N, D]), got ",
                w.sym_sizes());
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": weights[", g, "] must have x's dtype ", x.scalar_type(),
                ", got ", w.scalar_type());
    TORCH_CHECK(w.device() == x.device(), op, ": weights[", g, "] is on ", w.device(), " but x is on ", x.device());
  }
  check_offsets(op, offsets, static_cast<int64_t>(weights.size()), x);
}

void check_grouped_linear_weight_grad(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                                      const at::Tensor& offsets, int64_t num_groups) {
  check_rank(x, op, "x", 2, "[N, D]");
  check_rank(grad_y, op, "grad_y", 2, "[N, O]");
  check_dim_eq(grad_y, 0, x.sym_size(0), op, "grad_y", "[N, O] (N of x)");
  TORCH_CHECK(grad_y.scalar_type() == x.scalar_type(), op, ": grad_y must have x's dtype ", x.scalar_type(),
              ", got ", grad_y.scalar_type());
  TORCH_CHECK(grad_y.device() == x.device(), op, ": grad_y is on ", grad_y.device(), " but x is on ", x.device());
  TORCH_CHECK(num_groups >= 1, op, ": num_groups must be >= 1, got ", num_groups);
  check_offsets(op, offsets, num_groups, x);
}

std::vector<int64_t> host_offsets(const char* op, const at::Tensor& offsets, int64_t rows) {
  const at::Tensor host = offsets.to(at::kCPU).contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  std::vector<int64_t> off(p, p + host.numel());
  TORCH_CHECK(off.front() >= 0, op, ": offsets must start at >= 0, got ", off.front());
  for (size_t g = 1; g < off.size(); ++g) {
    TORCH_CHECK(off[g] >= off[g - 1], op, ": offsets must be non-decreasing, got ", off[g - 1], " then ", off[g],
                " at index ", g);
  }
  TORCH_CHECK(off.back() <= rows, op, ": offsets must end at <= N=", rows, " rows of x, got ", off.back());
  return off;
}

std::vector<c10::SymInt> token_shape(const at::Tensor& indices, const at::Tensor& rows) {
  std::vector<c10::SymInt> shape{indices.sym_size(0), indices.sym_size(1)};
  for (int64_t d = 1; d < rows.dim(); ++d) shape.push_back(rows.sym_size(d));
  return shape;
}

std::vector<c10::SymInt> row_shape(const at::Tensor& indices, const at::Tensor& x) {
  std::vector<c10::SymInt> shape{indices.sym_numel()};
  for (int64_t d = 2; d < x.dim(); ++d) shape.push_back(x.sym_size(d));
  return shape;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_dispatch_outputs(const at::Tensor& x, const at::Tensor& indices,
                                                                      int64_t num_memories) {
  const at::TensorOptions longs = indices.options().dtype(at::kLong);
  return {at::empty_symint(row_shape(indices, x), x.options()),
          at::empty_symint({indices.sym_size(0) * num_memories + 1}, longs),
          at::empty_symint({indices.sym_numel()}, longs)};
}

}  // namespace linattn::mom
