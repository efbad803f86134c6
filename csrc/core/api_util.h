#pragma once
// Helpers of the public C++ API wrappers.
#include <tuple>

#include <ATen/core/Tensor.h>

namespace linattn {

// The ops return an empty final state when it was not requested; the C++ API says "undefined" instead.
inline std::tuple<at::Tensor, at::Tensor> drop_unrequested_state(std::tuple<at::Tensor, at::Tensor> r,
                                                                 bool output_final_state) {
  if (!output_final_state) std::get<1>(r) = at::Tensor();
  return r;
}

}  // namespace linattn
