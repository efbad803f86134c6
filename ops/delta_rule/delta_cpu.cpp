// CPU backend of the delta-rule ops: float32 and float64.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "core/checks.h"
#include "ops/delta_rule/delta_common.h"
#include "ops/delta_rule/delta_cpu_kernel.h"

namespace linattn::delta {
namespace {

struct CpuBackend {
  static constexpr bool kRecurrentL2InKernel = false;  // ATen normalises q and k first
  static constexpr bool kRecurrentGatesInInputDtype = false;  // float32 / float64 only: nothing to convert
  static void check_dtype(const char* op, const at::Tensor& q) { check_cpu_dtype(op, q); }
  static void forward(const FwdParams& p, at::ScalarType dtype, bool recurrent) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "delta_rule_forward_cpu", [&] {
      if (recurrent) {
        cpu::recurrent_forward<scalar_t>(p);
      } else {
        cpu::chunk_forward<scalar_t>(p);
      }
    });
  }
  static void backward(const BwdParams& p, at::ScalarType dtype) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "delta_rule_backward_cpu", [&] { cpu::chunk_backward<scalar_t>(p); });
  }
};

Pair chunk_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                      std::optional<double> scale, const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  return run_forward<CpuBackend>("chunk_delta_rule", false, q, k, v, std::nullopt, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                                bool l2, const OptTensor& cu) {
  return run_forward<CpuBackend>("fused_recurrent_delta_rule", true, q, k, v, std::nullopt, beta, scale, h0, ofs, l2,
                                 cu);
}
Pair chunk_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                            const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                            bool l2, const OptTensor& cu) {
  return run_forward<CpuBackend>("chunk_gated_delta_rule", false, q, k, v, g, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, std::optional<double> scale,
                                      const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  return run_forward<CpuBackend>("fused_recurrent_gated_delta_rule", true, q, k, v, g, beta, scale, h0, ofs, l2, cu);
}
at::Tensor fused_recurrent_delta_rule_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const OptTensor& g, const at::Tensor& beta, const at::Tensor& state,
                                              std::optional<double> scale, bool l2, const OptTensor& cu) {
  return run_recurrent_inplace<CpuBackend>("fused_recurrent_delta_rule_inplace", q, k, v, g, beta, state, scale, l2,
                                           cu);
}
BwdResult delta_rule_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                              const at::Tensor& beta, const at::Tensor& do_, const OptTensor& dht,
                              std::optional<double> scale, const OptTensor& h0, const OptTensor& cu) {
  return run_backward_cpu_like(q, k, v, g, beta, do_, dht, scale, h0, cu, &CpuBackend::backward,
                               &CpuBackend::check_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) {
  m.impl("chunk_delta_rule", &chunk_delta_rule);
  m.impl("fused_recurrent_delta_rule", &fused_recurrent_delta_rule);
  m.impl("chunk_gated_delta_rule", &chunk_gated_delta_rule);
  m.impl("fused_recurrent_gated_delta_rule", &fused_recurrent_gated_delta_rule);
  m.impl("fused_recurrent_delta_rule_inplace", &fused_recurrent_delta_rule_inplace);
  m.impl("_delta_rule_backward", &delta_rule_backward);
}

}  // namespace linattn::delta
