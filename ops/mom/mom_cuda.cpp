// CUDA backend of mom_dispatch / mom_combine and their backward ops: float32, float16 and bfloat16 rows of
// any trailing shape (flattened to D elements), weights in any of the three. One kernel launch per op (plus
// the output allocations and, for non-contiguous inputs, their copies); no device->host synchronisation:
// every output shape follows from B, T, k and E, and the index range is checked by a device-side assertion
// inside the kernels (a bad index fails the next synchronising call; the kernels clamp it meanwhile, so
// nothing is written out of bounds).
#include <ATen/ATen.h>

// See ops/swa/swa_cuda.cpp: lets a CPU-only torch's headers syntax-check this file.
#if defined(__has_include)
#if !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>) && !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#endif
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "core/cuda_dtype.h"
#include "csrc/cuda/cuda_check.h"
#include "ops/mom/cuda/mom_launch.h"
#include "ops/mom/mom_common.h"

namespace linattn::mom {
namespace {

gpu::DType row_dtype(const char* op, const at::Tensor& rows) { return cuda_dtype(op, rows.scalar_type(), "rows"); }

WeightType weight_type(const char* op, const at::Tensor& weights) {
  return cuda_dtype(op, weights.scalar_type(), "weights");
}

void check_cuda_limits(const char* op, const at::Tensor& indices, int64_t num_memories) {
  TORCH_CHECK(num_memories <= gpu::kMaxMemories, op, ": the CUDA kernels take num_memories <= ", gpu::kMaxMemories,
              ", got ", num_memories);
  TORCH_CHECK(indices.size(2) <= gpu::kMaxTopk, op, ": the CUDA kernels take k <= ", gpu::kMaxTopk,
              " memories per token, got indices of shape ", indices.sizes());
  TORCH_CHECK(indices.numel() < std::numeric_limits<int32_t>::max(), op,
              ": the CUDA kernels take fewer than 2^31 (token, memory) copies, got ", indices.numel());
}

// Filled with what every kernel needs; the caller adds its buffers.
Params base_params(const at::Tensor& indices, int64_t num_memories, int64_t dim) {
  Params p;
  p.indices = indices.data_ptr<int64_t>();
  p.batch = indices.size(0);
  p.seqlen = indices.size(1);
  p.topk = indices.size(2);
  p.memories = num_memories;
  p.dim = dim;
  return p;
}

int64_t row_elems(const at::Tensor& t, int64_t first_dim) {
  int64_t n = 1;
  for (int64_t d = first_dim; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// Every CTA reads all B*T*k indices (mom_pack.cuh): two CTAs per SM keep the copies busy while bounding that.
int64_t max_blocks(const at::Tensor& t) {
  int sms = 0;
  LINATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, t.device().index()));
  return 2 * int64_t(sms);
}

cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> dispatch_cuda(const at::Tensor& x, const at::Tensor& indices,
                                                             int64_t num_memories) {
  const char* op = "mom_dispatch (CUDA)";
  check_dispatch(op, x, indices, num_memories);
  const gpu::DType dt = row_dtype(op, x);
  check_cuda_limits(op, indices, num_memories);
  const c10::cuda::CUDAGuard guard(x.device());
  auto [x_sorted, cu_seqlens, sort_index] = empty_dispatch_outputs(x, indices, num_memories);
  if (indices.numel() == 0) return {x_sorted, cu_seqlens.zero_(), sort_index};
  const at::Tensor xc = x.contiguous(), ic = indices.contiguous();
  Params p = base_params(ic, num_memories, row_elems(x, 2));
  p.x = xc.data_ptr();
  p.x_sorted = x_sorted.data_ptr();
  p.cu_seqlens = cu_seqlens.data_ptr<int64_t>();
  p.sort_index = sort_index.data_ptr<int64_t>();
  cuda_utils::visit_dtype(dt, [&]<gpu::DType D>() { gpu::dispatch<D>(p, max_blocks(x), stream_of(x)); });
  return {x_sorted, cu_seqlens, sort_index};
}

// combine and the backward of dispatch (weights undefined: all 1) share the kernel.
at::Tensor combine_rows(const char* op, const at::Tensor& rows, const at::Tensor& weights, const at::Tensor& indices,
                        const at::Tensor& sort_index, int64_t num_memories) {
  check_rows(op, weights.defined() ? "y_sorted" : "grad_x_sorted", rows, indices, sort_index, num_memories);
  if (weights.defined()) check_weights(op, weights, indices);
  const gpu::DType dt = row_dtype(op, rows);
  check_cuda_limits(op, indices, num_memories);
  const c10::cuda::CUDAGuard guard(rows.device());
  at::Tensor y = at::empty_symint(token_shape(indices, rows), rows.options());
  if (indices.numel() == 0) return y.zero_();  // no copies: every token sums nothing
  const at::Tensor rc = rows.contiguous(), ic = indices.contiguous();
  const at::Tensor wc = weights.defined() ? weights.contiguous() : at::Tensor();
  Params p = base_params(ic, num_memories, row_elems(rows, 1));
  p.y_sorted = rc.data_ptr();
  if (wc.defined()) {
    p.weights = wc.data_ptr();
    p.weight_type = weight_type(op, wc);
  }
  p.y = y.data_ptr();
  cuda_utils::visit_dtype(dt, [&]<gpu::DType D>() { gpu::combine<D>(p, max_blocks(rows), stream_of(rows)); });
  return y;
}

at::Tensor combine_cuda(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                        const at::Tensor& sort_index, int64_t num_memories) {
  TORCH_CHECK(weights.defined(), "mom_combine (CUDA): weights must be a tensor, got None");
  return combine_rows("mom_combine (CUDA)", y_sorted, weights, indices, sort_index, num_memories);
}

at::Tensor dispatch_backward_cuda(const at::Tensor& grad_x_sorted, const at::Tensor& indices,
                                  const at::Tensor& sort_index, int64_t num_memories) {
  return combine_rows("_mom_dispatch_backward (CUDA)", grad_x_sorted, at::Tensor(), indices, sort_index,
                      num_memories);
}

std::tuple<at::Tensor, at::Tensor> combine_backward_cuda(const at::Tensor& grad_y, const at::Tensor& y_sorted,
                                                         const at::Tensor& weights, const at::Tensor& indices,
                                                         const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "_mom_combine_backward (CUDA)";
  check_rows(op, "y_sorted", y_sorted, indices, sort_index, num_memories);
  check_weights(op, weights, indices);
  check_grad_y(op, grad_y, y_sorted, indices);
  const gpu::DType dt = row_dtype(op, y_sorted);
  const WeightType wt = weight_type(op, weights);
  check_cuda_limits(op, indices, num_memories);
  const c10::cuda::CUDAGuard guard(y_sorted.device());
  at::Tensor dy_sorted = at::empty(y_sorted.sizes(), y_sorted.options());
  at::Tensor dweights = at::empty(weights.sizes(), weights.options());
  if (indices.numel() == 0) return {dy_sorted, dweights};
  const at::Tensor gc = grad_y.contiguous(), yc = y_sorted.contiguous(), wc = weights.contiguous();
  const at::Tensor ic = indices.contiguous();
  Params p = base_params(ic, num_memories, row_elems(y_sorted, 1));
  p.dy = gc.data_ptr();
  p.y_sorted = yc.data_ptr();
  p.weights = wc.data_ptr();
  p.weight_type = wt;
  p.dy_sorted = dy_sorted.data_ptr();
  p.dweights = dweights.data_ptr();
  cuda_utils::visit_dtype(dt, [&]<gpu::DType D>() { gpu::combine_backward<D>(p, max_blocks(y_sorted), stream_of(y_sorted)); });
  return {dy_sorted, dweights};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) {
  m.impl("mom_dispatch", &dispatch_cuda);
  m.impl("mom_combine", &combine_cuda);
  m.impl("_mom_dispatch_backward", &dispatch_backward_cuda);
  m.impl("_mom_combine_backward", &combine_backward_cuda);
}

}  // namespace linattn::mom
