#pragma once
// CPU kernels of the delta-rule family: chunked forward/backward (chunk 64, UT transform by forward
// substitution) and the step-by-step recurrence. One task = one (sequence, value head).
#include "ops/delta_rule/delta_params.h"

namespace linattn::delta::cpu {

template <typename T>
void chunk_forward(const FwdParams& p);

template <typename T>
void recurrent_forward(const FwdParams& p);

template <typename T>
void chunk_backward(const BwdParams& p);

}  // namespace linattn::delta::cpu
