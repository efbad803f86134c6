#pragma once
// Shared pieces of the emulator harness: the ops mirror ops/*/*_cuda.cpp (same params, workspaces, dtype
// dispatch) but allocate every buffer a kernel touches through a Fence, and run the launchers on the CPU
// emulator instead of a device.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "csrc/core/cuda_dtype.h"
#include "cuda_emu.h"

namespace linattn_emu {

using OptTensor = std::optional<at::Tensor>;

// Buffers inside 0xff margins (NaN in every float dtype): a kernel that reads past a buffer pulls NaN into
// its results and one that writes past it is reported by check() (PyTorch itself is not instrumented, so
// check() may read poisoned margins). New buffers are NaN-filled too, so output elements a kernel forgets to
// write stay NaN, and workspaces start as garbage as on a device.
class Fence {
 public:
  Fence() = default;
  Fence(const Fence&) = delete;
  Fence& operator=(const Fence&) = delete;
#if EMU_ASAN
  ~Fence() {  // the tensors outlive the launch (outputs are views): their storage must be readable again
    for (const Entry& e : entries_) __asan_unpoison_memory_region(e.buffer.data_ptr(), e.buffer.numel());
  }
#endif
  at::Tensor empty(at::IntArrayRef sizes, at::ScalarType dtype, const char* name) {
    const int64_t bytes = c10::multiply_integers(sizes) * int64_t(c10::elementSize(dtype));
    at::Tensor buffer = at::full({bytes + 2 * kMargin}, 0xff, at::TensorOptions().dtype(at::kByte));
    entries_.push_back({buffer, bytes, name});
#if EMU_ASAN
    // Under AddressSanitizer any access to the margins from the (instrumented) kernels is reported at once.
    uint8_t* base = buffer.data_ptr<uint8_t>();
    __asan_poison_memory_region(base, kMargin);
    __asan_poison_memory_region(base + kMargin + bytes, kMargin);
#endif
    return buffer.narrow(0, kMargin, bytes).view(dtype).view(sizes);
  }
  // A contiguous copy of t in a fenced buffer (what the glue's .contiguous() / .to() would produce).
  at::Tensor copy(const at::Tensor& t, at::ScalarType dtype, const char* name) {
    at::Tensor out = empty(t.sizes(), dtype, name);
    out.copy_(t);
    return out;
  }
  at::Tensor copy(const at::Tensor& t, const char* name) { return copy(t, t.scalar_type(), name); }
  std::optional<at::Tensor> copy(const OptTensor& t, at::ScalarType dtype, const char* name) {
    if (!t.has_value()) return std::nullopt;
    return copy(*t, dtype, name);
  }
  void check() const {
    for (const Entry& e : entries_) {
      const at::Tensor before = e.buffer.narrow(0, 0, kMargin);
      const at::Tensor after = e.buffer.narrow(0, kMargin + e.bytes, kMargin);
      TORCH_CHECK(before.eq(0xff).all().item<bool>() && after.eq(0xff).all().item<bool>(),
                  "CUDA emulator: a kernel wrote outside ", e.name);
    }
  }

 private:
  static constexpr int64_t kMargin = 4096;  // bytes; keeps the 64-byte alignment of the allocation
  struct Entry {
    at::Tensor buffer;
    int64_t bytes;
    std::string name;
  };
  std::vector<Entry> entries_;
};

inline void* ptr(const OptTensor& t) { return t.has_value() ? t->data_ptr() : nullptr; }

// Runs f.template operator()<D>() for the kernels' DType matching a tensor's scalar type (the glue's map).
// DType: the family's gpu::DType, the same enum for every family.
template <class DType = linattn::cuda_utils::DType, class F>
void dispatch_dtype(at::ScalarType s, F&& f) {
  static_assert(std::is_same_v<DType, linattn::cuda_utils::DType>, "every family's gpu::DType is cuda_utils::DType");
  linattn::cuda_utils::visit_dtype(linattn::cuda_dtype("CUDA emulator", s, "inputs"), f);
}

}  // namespace linattn_emu
