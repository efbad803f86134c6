#pragma once
// Umbrella header of the linattn C++ API. Link against linattn::linattn (CMake: find_package(linattn)).

#include <cstdint>

#include <linattn/export.h>
#include <linattn/delta_rule.h>
#include <linattn/gla.h>
#include <linattn/liger.h>
#include <linattn/lolcats.h>
#include <linattn/mom.h>
#include <linattn/swa.h>

namespace linattn {

// Encoded as major * 10000 + minor * 100 + patch.
LINATTN_API int64_t version_code();

// True when the library was built with its CUDA kernels.
LINATTN_API bool built_with_cuda();

}  // namespace linattn

// Every translation unit that includes this header references a symbol of liblinattn, so the linker keeps
// the library even under --as-needed and its static initializers register the operators.
extern "C" {
__attribute__((weak)) int64_t (*linattn_register_ops_anchor)() = &linattn::version_code;
}
