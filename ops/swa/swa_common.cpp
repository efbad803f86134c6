#include "ops/swa/swa_common.h"

#include <cmath>

#include <ATen/ATen.h>

#include "core/checks.h"

namespace linattn::swa {

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window_size,
                  const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(window_size >= 1, op, ": window_size must be >= 1, got ", window_size);
  check_rank(q, op, "q", 4, "[B, T, H, K]");
  check_floating(q, op, "q");
  TORCH_CHECK(q.sym_size(2) >= 1 && q.sym_size(3) >= 1, op, ": q must have H >= 1 and K >= 1, got shape ",
              q.sym_sizes());
  check_rank(k, op, "k", 4, "[B, T, H, K]");
  check_same_device(k, q, op, "k");
  TORCH_CHECK(k.sym_sizes() == q.sym_sizes(), op, ": k must have the shape of q ", q.sym_sizes(), ", got ",
              k.sym_sizes());
  check_rank(v, op, "v", 4, "[B, T, H, V]");
  check_same_device(v, q, op, "v");
  for (int64_t d = 0; d < 3; ++d) check_dim_eq(v, d, q.sym_size(d), op, "v", "[B, T, H, V] with B, T, H of q");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k and v must share one dtype, got q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
              v.scalar_type());
  check_cu_seqlens(cu_seqlens, q, op);
}

std::tuple<at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v) {
  return {at::empty_symint(v.sym_sizes(), q.options()),
          at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2)}, q.options().dtype(state_dtype(q)))};
}

Inputs prepare(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
               const std::optional<at::Tensor>& cu_seqlens) {
  return {q.contiguous(), k.contiguous(), v.contiguous(), prepare_cu_seqlens(cu_seqlens, q.size(1), op)};
}

Params make_params(const Inputs& in, int64_t window_size, std::optional<double> scale) {
  Params p;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.cu_seqlens = in.cu_seqlens.defined() ? in.cu_seqlens.data_ptr<int64_t>() : nullptr;
  p.batch = in.q.size(0);
  p.seqlen = in.q.size(1);
  p.num_seqs = in.cu_seqlens.defined() ? in.cu_seqlens.size(0) - 1 : p.batch;
  p.heads = in.q.size(2);
  p.dim_k = in.q.size(3);
  p.dim_v = in.v.size(3);
  p.window = window_size;
  p.scale = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(p.dim_k));
  // Contiguous [B, T, H, D] (strides of size-1 dims of a contiguous tensor are arbitrary, so from sizes).
  p.qk_tok_stride = p.heads * p.dim_k;
  p.qk_head_stride = p.dim_k;
  p.v_tok_stride = p.heads * p.dim_v;
  p.v_head_stride = p.dim_v;
  return p;
}

}  // namespace linattn::swa
