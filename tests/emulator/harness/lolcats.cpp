// LoLCATs hybrid-attention launchers on the emulator; mirrors ops/lolcats/lolcats_cuda.cpp (make_params with
// the window clamped to the sequence length, the fp32 state / row workspaces).
#include <torch/library.h>

#include <algorithm>

#include "common.h"
#include "ops/lolcats/cuda/lolcats_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::lolcats::gpu;

struct LolcatsCall {
  Fence fence;
  std::vector<at::Tensor> in;  // q, k, v, fq, fk, window_factor
  linattn::lolcats::Params p;
};

void setup(LolcatsCall& c, const std::vector<at::Tensor>& inputs, int64_t window, double scale) {
  TORCH_CHECK(inputs.size() == 6, "lolcats: expected q, k, v, fq, fk, window_factor");
  const char* names[] = {"q", "k", "v", "fq", "fk", "window_factor"};
  for (size_t i = 0; i < inputs.size(); ++i) c.in.push_back(c.fence.copy(inputs[i], names[i]));
  const at::Tensor &q = c.in[0], &v = c.in[2], &fq = c.in[3];
  auto& p = c.p;
  p.q = q.data_ptr();
  p.k = c.in[1].data_ptr();
  p.v = v.data_ptr();
  p.fq = fq.data_ptr();
  p.fk = c.in[4].data_ptr();
  p.window_factor = c.in[5].data_ptr();
  p.batch = q.size(0);
  p.seqlen = q.size(1);
  p.heads = q.size(2);
  p.dim_qk = q.size(3);
  p.dim_v = v.size(3);
  p.dim_f = fq.size(3);
  p.window = std::min(window, std::max<int64_t>(p.seqlen, 1));  // w >= T: no key leaves the window
  p.scale = scale;
  p.qk_tok_stride = p.heads * p.dim_qk;
  p.qk_head_stride = p.dim_qk;
  p.v_tok_stride = p.heads * p.dim_v;
  p.v_head_stride = p.dim_v;
  p.f_tok_stride = p.heads * p.dim_f;
  p.f_head_stride = p.dim_f;
}

// Returns o, m, z.
std::vector<at::Tensor> forward(const std::vector<at::Tensor>& inputs, int64_t window, double scale) {
  LolcatsCall c;
  setup(c, inputs, window, scale);
  const at::Tensor& q = c.in[0];
  const std::vector<int64_t> rows = {q.size(0), q.size(1), q.size(2)};
  at::Tensor o = c.fence.empty(c.in[2].sizes(), q.scalar_type(), "o");
  at::Tensor m = c.fence.empty(rows, at::kFloat, "m");
  at::Tensor z = c.fence.empty(rows, at::kFloat, "z");
  if (q.size(0) * q.size(1) * q.size(2) > 0) {
    c.p.o = o.data_ptr();
    c.p.m = m.data_ptr<float>();
    c.p.z = z.data_ptr<float>();
    const at::Tensor states =
        c.fence.empty({std::max<int64_t>(gpu::fwd_workspace_elems(c.p), 1)}, at::kFloat, "ws.states");
    dispatch_dtype<gpu::DType>(q.scalar_type(),
                               [&]<gpu::DType D>() { gpu::forward<D>(c.p, states.data_ptr<float>(), nullptr); });
  }
  c.fence.check();
  return {o, m, z};
}

// Returns dq, dk, dv, dfq, dfk, dwindow_factor.
std::vector<at::Tensor> backward(const std::vector<at::Tensor>& inputs, const at::Tensor& o, const at::Tensor& m,
                                 const at::Tensor& z, const at::Tensor& d_o, int64_t window, double scale) {
  LolcatsCall c;
  setup(c, inputs, window, scale);
  const at::Tensor& q = c.in[0];
  const char* names[] = {"dq", "dk", "dv", "dfq", "dfk", "dwindow_factor"};
  std::vector<at::Tensor> grads;
  for (int i = 0; i < 6; ++i) grads.push_back(c.fence.empty(c.in[i].sizes(), c.in[i].scalar_type(), names[i]));
  if (q.size(0) * q.size(1) * q.size(2) == 0) return grads;
  const at::Tensor oc = c.fence.copy(o, q.scalar_type(), "o");
  const at::Tensor dc = c.fence.copy(d_o, q.scalar_type(), "do");
  const at::Tensor mc = c.fence.copy(m, at::kFloat, "m");
  const at::Tensor zc = c.fence.copy(z, at::kFloat, "z");
  auto& p = c.p;
  p.o = oc.data_ptr();
  p.m = mc.data_ptr<float>();
  p.z = zc.data_ptr<float>();
  p.do_ = dc.data_ptr();
  p.dq = grads[0].data_ptr();
  p.dk = grads[1].data_ptr();
  p.dv = grads[2].data_ptr();
  p.dfq = grads[3].data_ptr();
  p.dfk = grads[4].data_ptr();
  p.dwindow_factor = grads[5].data_ptr();
  const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
  auto ws_buffer = [&](int64_t n, const char* name) { return c.fence.empty({n}, at::kFloat, name).data_ptr<float>(); };
  gpu::BwdWorkspace ws;
  ws.states = ws_buffer(std::max<int64_t>(sizes.states, 1), "ws.states");
  ws.dz = ws_buffer(sizes.rows, "ws.dz");  // the glue takes dz and tie_grad from one [2, rows] tensor
  ws.tie_grad = ws_buffer(sizes.rows, "ws.tie_grad");
  ws.dv_linear = ws_buffer(std::max<int64_t>(sizes.dv_linear, 1), "ws.dv_linear");
  ws.dm_partial = ws_buffer(sizes.dm_partial, "ws.dm_partial");
  dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() { gpu::backward<D>(p, ws, nullptr); });
  c.fence.check();
  return grads;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("lolcats_forward(Tensor[] inputs, int window, float scale) -> Tensor[]", &forward);
  m.def("lolcats_backward(Tensor[] inputs, Tensor o, Tensor m, Tensor z, Tensor do, int window, float scale) "
        "-> Tensor[]",
        &backward);
}

}  // namespace linattn_emu
