// Emulator controls for the tests: per-case reset (scheduler seed, counters that show the kernels really
// went through barriers and shuffles), the half / bfloat16 conversions (checked against PyTorch's) and the
// deliberately broken kernels of selftest/broken_kernels.cuh.
#include <torch/library.h>

#include <string>

#include "common.h"
#include "tests/emulator/selftest/broken_kernels.cuh"

namespace linattn_emu {
namespace {

void reset(int64_t seed) {
  emu::seed(static_cast<uint64_t>(seed));
  emu::Scheduler& s = emu::g_sched;
  s.launches = s.blocks = s.block_barriers = s.warp_syncs = 0;
}

std::vector<int64_t> counters() {
  const emu::Scheduler& s = emu::g_sched;
  return {s.launches, s.blocks, s.block_barriers, s.warp_syncs};
}

// float32 -> dtype -> float32 through the emulator's __float2half_rn / __float2bfloat16_rn.
at::Tensor round_trip(const at::Tensor& x, at::ScalarType dtype) {
  at::Tensor in = x.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(in);
  const float* a = in.data_ptr<float>();
  float* b = out.data_ptr<float>();
  for (int64_t i = 0; i < in.numel(); ++i) {
    b[i] = dtype == at::kHalf ? __half2float(__float2half_rn(a[i])) : __bfloat162float(__float2bfloat16_rn(a[i]));
  }
  return out;
}

// Output of one broken kernel ([kSelftestBlocks blocks x 64 threads], NaN where nothing was written); emulator errors
// surface as exceptions.
at::Tensor selftest(const std::string& name) {
  static const char* names[] = {"exchange",      "missing_barrier",     "static_race",   "divergent_barrier",
                                "split_barrier", "shuffle_exited_lane", "smem_overflow", "wmma_misaligned"};
  for (int i = 0; i < 8; ++i) {
    if (name != names[i]) continue;
    Fence fence;
    at::Tensor out = fence.empty({broken::kSelftestBlocks, 64}, at::kFloat, "out");
    broken::run(i, out.data_ptr<float>());
    fence.check();
    return out;
  }
  TORCH_CHECK(false, "unknown self-test ", name);
}

}  // namespace

TORCH_LIBRARY(linattn_emu, m) {
  m.def("reset(int seed) -> ()", &reset);
  m.def("counters() -> int[]", &counters);
  m.def("round_trip(Tensor x, ScalarType dtype) -> Tensor", &round_trip);
  m.def("selftest(str name) -> Tensor", &selftest);
}

}  // namespace linattn_emu
