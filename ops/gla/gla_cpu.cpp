// CPU backend of the GLA ops: float32 and float64.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "core/checks.h"
#include "ops/gla/gla_cpu_kernel.h"
#include "ops/gla/gla_entries.h"

namespace linattn::gla {
namespace {

struct CpuBackend {
  static void check_dtype(const char* op, const at::Tensor& q) { check_cpu_dtype(op, q); }
  static void forward(const FwdParams& p, at::ScalarType dtype, Algo algo, const at::Tensor&) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "gla_forward_cpu", [&] {
      if (algo == Algo::Chunk) {
        cpu::chunk_forward<scalar_t>(p);
      } else {
        cpu::recurrent_forward<scalar_t>(p);
      }
    });
  }
  static void backward(const BwdParams& p, at::ScalarType dtype, const at::Tensor&) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "gla_backward_cpu", [&] { cpu::chunk_backward<scalar_t>(p); });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) { register_backend<CpuBackend>(m); }

}  // namespace linattn::gla
