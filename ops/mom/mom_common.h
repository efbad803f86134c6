#pragma once
// Argument checks and output shapes shared by the MoM dispatch / combine kernels (CPU, CUDA, Meta). They
// compare symbolic sizes, so the Meta kernels run them while torch.compile traces.
#include <ATen/ATen.h>

#include <vector>

namespace linattn::mom {

// indices [B, T, k] int64 and num_memories >= 1 (shape and dtype only; values: check_index_values).
void check_indices(const char* op, const at::Tensor& indices, int64_t num_memories);

// Values in [0, num_memories): a clear error on CPU (reads the data; skipped for fake / meta tensors).
void check_index_values(const char* op, const at::Tensor& indices, int64_t num_memories);

// x [B, T, ...] against indices.
void check_dispatch(const char* op, const at::Tensor& x, const at::Tensor& indices, int64_t num_memories);

// rows [B*T*k, ...] (y_sorted or grad_x_sorted) and sort_index [B*T*k] against indices.
void check_rows(const char* op, const char* name, const at::Tensor& rows, const at::Tensor& indices,
                const at::Tensor& sort_index, int64_t num_memories);

// weights [B, T, k] floating point.
void check_weights(const char* op, const at::Tensor& weights, const at::Tensor& indices);

// grad_y [B, T, trailing dims of y_sorted].
void check_grad_y(const char* op, const at::Tensor& grad_y, const at::Tensor& y_sorted, const at::Tensor& indices);

// x [N, D], weights: G >= 1 tensors [O, D] of x's dtype and device, offsets int64 [G+1] on x's device or the host.
void check_grouped_linear(const char* op, const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets);

// grad_y [N, O] of x's dtype and device, x [N, D], offsets int64 [num_groups + 1].
void check_grouped_linear_weight_grad(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                                      const at::Tensor& offsets, int64_t num_groups);

// The group bounds on the host, checked: 0 <= offsets[0] <= ... <= offsets[G] <= rows.
std::vector<int64_t> host_offsets(const char* op, const at::Tensor& offsets, int64_t rows);

// [B, T] + rows' trailing dims, and [B*T*k] + x's trailing dims.
std::vector<c10::SymInt> token_shape(const at::Tensor& indices, const at::Tensor& rows);
std::vector<c10::SymInt> row_shape(const at::Tensor& indices, const at::Tensor& x);

// Output buffers of dispatch: (x_sorted, cu_seqlens [E*B+1] int64, sort_index [B*T*k] int64), uninitialised.
std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_dispatch_outputs(const at::Tensor& x, const at::Tensor& indices,
                                                                      int64_t num_memories);

}  // namespace linattn::mom
