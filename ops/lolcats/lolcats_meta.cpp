// Meta kernels of the LoLCATs hybrid attention (symbolic shapes, for torch.compile).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/lolcats/lolcats_common.h"

namespace linattn::lolcats {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const at::Tensor& fq,
                                                            const at::Tensor& fk, const at::Tensor& wf,
                                                            int64_t window_size, std::optional<double>) {
  check_inputs("lolcats_attention", q, k, v, fq, fk, wf, window_size);
  return alloc_outputs(q, v);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq, const at::Tensor& fk,
    const at::Tensor& wf, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    int64_t window_size, std::optional<double>) {
  check_inputs("_lolcats_attention_backward", q, k, v, fq, fk, wf, window_size);
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  return {like(q), like(k), like(v), like(fq), like(fk), like(wf)};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("_lolcats_attention_forward", &forward_meta);
  m.impl("_lolcats_attention_backward", &backward_meta);
}

}  // namespace linattn::lolcats
