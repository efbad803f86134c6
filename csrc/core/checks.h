#pragma once
// Argument checks shared by every op. They compare symbolic sizes, so Meta kernels run them while
// torch.compile traces; each message names the argument and what was expected.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace linattn {

inline void check_defined(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " must be a tensor, got None");
}

inline void check_rank(const at::Tensor& t, const char* op, const char* name, int64_t rank, const char* layout) {
  check_defined(t, op, name);
  TORCH_CHECK(t.dim() == rank, op, ": ", name, " must have shape ", layout, " (", rank, "-D), got shape ",
              t.sym_sizes());
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got dtype ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but q is on ", ref.device(),
              "; all inputs must be on the same device");
}

inline void check_dim_eq(const at::Tensor& t, int64_t dim, const c10::SymInt& expected, const char* op,
                         const char* name, const char* layout) {
  TORCH_CHECK(t.sym_size(dim) == expected, op, ": ", name, " must have shape ", layout, ", got shape ",
              t.sym_sizes(), " (dim ", dim, " should be ", expected, ")");
}

// cu_seqlens: int64 [N+1] with B == 1. Values are checked by value_check_cu_seqlens where data is readable.
inline void check_cu_seqlens(const std::optional<at::Tensor>& cu_seqlens, const at::Tensor& q, const char* op) {
  if (!cu_seqlens.has_value()) return;
  const at::Tensor& cu = *cu_seqlens;
  check_rank(cu, op, "cu_seqlens", 1, "[N+1]");
  TORCH_CHECK(cu.scalar_type() == at::kLong, op, ": cu_seqlens must be int64 (torch.long), got ", cu.scalar_type());
  TORCH_CHECK(cu.sym_size(0) >= 2, op, ": cu_seqlens must hold at least 2 offsets [0, T], got shape ", cu.sym_sizes());
  TORCH_CHECK(q.sym_size(0) == 1, op, ": with cu_seqlens the batch size must be 1 (sequences packed along T), got B=",
              q.sym_size(0));
  check_same_device(cu, q, op, "cu_seqlens");
}

// Offsets must start at 0, never decrease and end at total_len. Reads the data: CPU tensors only.
void value_check_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total_len, const char* op);

// The contiguous cu_seqlens for a kernel, or an undefined tensor when absent. The values are checked on the
// tensor's device (linattn::_check_cu_seqlens): at once on CPU, asynchronously by a device-side assertion on
// CUDA, so varlen calls never synchronise with the host.
at::Tensor prepare_cu_seqlens(const std::optional<at::Tensor>& cu_seqlens, int64_t total_len, const char* op);

// float64 inputs keep float64 states and accumulation; every other dtype uses float32.
inline at::ScalarType state_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The CPU kernels take float32 and float64 (half precision runs on CUDA).
inline void check_cpu_dtype(const char* op, const at::Tensor& q) {
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble, op,
              ": the CPU kernels take float32 or float64 inputs, got ", q.scalar_type(),
              " (half precision runs on CUDA)");
}

}  // namespace linattn
