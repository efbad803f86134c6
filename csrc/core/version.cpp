#include <linattn/linattn.h>

#include <torch/library.h>

namespace linattn {

int64_t version_code() { return 1 * 100; }  // 0.1.0

bool built_with_cuda() {
#ifdef LINATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace linattn
