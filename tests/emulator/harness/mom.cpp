// MoM dispatch / combine launchers on the emulator; mirrors ops/mom/mom_cuda.cpp (flat rows, weight dtype
// tag, zero-filled outputs when there are no copies). max_blocks stands in for 2 * the SM count, so small
// cases still spread over several CTAs with several chunks each.
#include <torch/library.h>

#include "common.h"
#include "ops/mom/cuda/mom_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::mom::gpu;
using linattn::mom::Params;
using linattn::mom::WeightType;

int64_t row_elems(const at::Tensor& t, int64_t first_dim) {
  int64_t n = 1;
  for (int64_t d = first_dim; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

WeightType weight_type(at::ScalarType s) { return linattn::cuda_dtype("CUDA emulator", s, "weights"); }

Params base(const at::Tensor& indices, int64_t memories, int64_t dim) {
  Params p;
  p.indices = indices.data_ptr<int64_t>();
  p.batch = indices.size(0);
  p.seqlen = indices.size(1);
  p.topk = indices.size(2);
  p.memories = memories;
  p.dim = dim;
  return p;
}

std::vector<int64_t> token_shape(const at::Tensor& indices, const at::Tensor& rows) {
  std::vector<int64_t> s{indices.size(0), indices.size(1)};
  for (int64_t d = 1; d < rows.dim(); ++d) s.push_back(rows.size(d));
  return s;
}

std::vector<at::Tensor> dispatch(const at::Tensor& x, const at::Tensor& indices, int64_t memories,
                                 int64_t max_blocks) {
  Fence f;
  const at::Tensor xc = f.copy(x, "x"), ic = f.copy(indices, "indices");
  std::vector<int64_t> rows{indices.numel()};
  for (int64_t d = 2; d < x.dim(); ++d) rows.push_back(x.size(d));
  at::Tensor xs = f.empty(rows, x.scalar_type(), "x_sorted");
  at::Tensor cu = f.empty({indices.size(0) * memories + 1}, at::kLong, "cu_seqlens");
  at::Tensor si = f.empty({indices.numel()}, at::kLong, "sort_index");
  if (indices.numel() == 0) {
    cu.zero_();
  } else {
    Params p = base(ic, memories, row_elems(x, 2));
    p.x = xc.data_ptr();
    p.x_sorted = xs.data_ptr();
    p.cu_seqlens = cu.data_ptr<int64_t>();
    p.sort_index = si.data_ptr<int64_t>();
    dispatch_dtype<gpu::DType>(x.scalar_type(), [&]<gpu::DType D>() { gpu::dispatch<D>(p, max_blocks, nullptr); });
  }
  f.check();
  return {xs, cu, si};
}

at::Tensor combine(const at::Tensor& rows, const OptTensor& weights, const at::Tensor& indices, int64_t memories,
                   int64_t max_blocks) {
  Fence f;
  const at::Tensor rc = f.copy(rows, "y_sorted"), ic = f.copy(indices, "indices");
  const OptTensor wc = f.copy(weights, weights ? weights->scalar_type() : at::kFloat, "weights");
  at::Tensor y = f.empty(token_shape(indices, rows), rows.scalar_type(), "y");
  if (indices.numel() == 0) {
    y.zero_();
  } else {
    Params p = base(ic, memories, row_elems(rows, 1));
    p.y_sorted = rc.data_ptr();
    if (wc) {
      p.weights = wc->data_ptr();
      p.weight_type = weight_type(wc->scalar_type());
    }
    p.y = y.data_ptr();
    dispatch_dtype<gpu::DType>(rows.scalar_type(), [&]<gpu::DType D>() { gpu::combine<D>(p, max_blocks, nullptr); });
  }
  f.check();
  return y;
}

std::vector<at::Tensor> combine_backward(const at::Tensor& dy, const at::Tensor& rows, const at::Tensor& weights,
                                         const at::Tensor& indices, int64_t memories, int64_t max_blocks) {
  Fence f;
  const at::Tensor gc = f.copy(dy, "dy"), rc = f.copy(rows, "y_sorted"), wc = f.copy(weights, "weights");
  const at::Tensor ic = f.copy(indices, "indices");
  at::Tensor dys = f.empty(rows.sizes(), rows.scalar_type(), "dy_sorted");
  at::Tensor dw = f.empty(weights.sizes(), weights.scalar_type(), "dweights");
  if (indices.numel() > 0) {
    Params p = base(ic, memories, row_elems(rows, 1));
    p.dy = gc.data_ptr();
    p.y_sorted = rc.data_ptr();
    p.weights = wc.data_ptr();
    p.weight_type = weight_type(weights.scalar_type());
    p.dy_sorted = dys.data_ptr();
    p.dweights = dw.data_ptr();
    dispatch_dtype<gpu::DType>(rows.scalar_type(),
                               [&]<gpu::DType D>() { gpu::combine_backward<D>(p, max_blocks, nullptr); });
  }
  f.check();
  return {dys, dw};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("mom_dispatch(Tensor x, Tensor indices, int memories, int max_blocks) -> Tensor[]", &dispatch);
  m.def("mom_combine(Tensor y_sorted, Tensor? weights, Tensor indices, int memories, int max_blocks) -> Tensor",
        &combine);
  m.def("mom_combine_backward(Tensor dy, Tensor y_sorted, Tensor weights, Tensor indices, int memories, "
        "int max_blocks) -> Tensor[]",
        &combine_backward);
}

}  // namespace linattn_emu
