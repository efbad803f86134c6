// CPU autocast for the public ops. The CPU kernels compute in float32 / float64 only, so inside
// torch.autocast("cpu") (bfloat16 or float16) an op would otherwise receive the reduced-precision activations of
// the autocast linears and refuse them. This boxed kernel on the AutocastCPU key upcasts every reduced-precision
// floating CPU tensor argument to float32 and runs the op there (outputs float32, as for autocast's fp32 ops);
// the casts are recorded by autograd, so gradients return in the inputs' dtypes. Arguments the op writes to
// (fused_recurrent_delta_rule_inplace's state) are left alone: a copy would lose the write. CUDA autocast keeps
// the fallthrough: the CUDA kernels take float16 / bfloat16 directly (gates and states stay float32).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace linattn {
namespace {

bool reduced_cpu(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() &&
         (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
}

void upcast_on_cpu_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& args = op.schema().arguments();
  const size_t first = stack->size() - args.size();
  for (size_t i = 0; i < args.size(); ++i) {
    const auto* alias = args[i].alias_info();
    if (alias != nullptr && alias->isWrite()) continue;
    c10::IValue& value = (*stack)[first + i];
    if (value.isTensor() && reduced_cpu(value.toTensor())) {
      value = value.toTensor().to(at::kFloat);
    }
  }
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  op.callBoxed(stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, AutocastCPU, m) {
  for (const char* name : {"chunk_gla", "fused_recurrent_gla", "chunk_simple_gla", "fused_recurrent_simple_gla",
                           "chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule",
                           "fused_recurrent_gated_delta_rule", "fused_recurrent_delta_rule_inplace",
                           "sliding_window_attention", "hedgehog_feature_map", "lolcats_attention",
                           "attention_transfer_loss", "liger_gate", "liger_attention"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&upcast_on_cpu_autocast>());
  }
}

}  // namespace linattn
