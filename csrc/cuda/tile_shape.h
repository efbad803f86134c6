#pragma once
// Tile shapes of the SIMT attention kernels (csrc/cuda/simt_tiles.cuh), usable from host code compiled by a
// plain C++ compiler (the glue sizes workspaces with them).
#include <cstdint>

#if defined(__CUDACC__)
#define LINATTN_HOST_DEVICE __host__ __device__
#else
#define LINATTN_HOST_DEVICE
#endif

namespace linattn::cuda_utils::simt {

// Feature tiles are padded to 32, 64, 128 or 256 columns: the smallest of these >= dim (dim <= 256).
LINATTN_HOST_DEVICE constexpr int width_bucket(int64_t dim) {
  return dim <= 32 ? 32 : dim <= 64 ? 64 : dim <= 128 ? 128 : 256;
}

// Rows of the query and key tiles at a padded width: 64, or 32 at width 256 so that four feature tiles and
// two score tiles (fp32) fit the 163 KB of shared memory an sm_80 CTA can have.
LINATTN_HOST_DEVICE constexpr int tile_rows_for(int width) { return width <= 128 ? 64 : 32; }

}  // namespace linattn::cuda_utils::simt
