// mom_route as a registered composite (CompositeImplicitAutograd) of ATen ops: differentiable through
// softmax / gather, traceable by torch.compile, no host synchronisation.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <linattn/mom.h>

#include "core/checks.h"

namespace linattn {

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

TORCH_LIBRARY_IMPL(linattn, CompositeImplicitAutograd, m) { m.impl("mom_route", &mom_route); }

}  // namespace linattn
