#pragma once
// CPU kernels of the GLA family: chunked forward/backward (chunk 64 with 16-row secondary chunks for the
// intra-chunk scores) and the step-by-step recurrence. One task = one (sequence, head).
#include "ops/gla/gla_params.h"

namespace linattn::gla::cpu {

template <typename T>
void chunk_forward(const FwdParams& p);

template <typename T>
void recurrent_forward(const FwdParams& p);

template <typename T>
void chunk_backward(const BwdParams& p);

}  // namespace linattn::gla::cpu
