#include "ops/lolcats/lolcats_common.h"

#include <ATen/ATen.h>

#include "core/checks.h"

namespace linattn::lolcats {

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& window_factor, int64_t window_size) {
  TORCH_CHECK(window_size >= 1, op, ": window_size must be >= 1, got ", window_size);
  check_rank(q, op, "q", 4, "[B, T, H, D]");
  check_floating(q, op, "q");
  check_rank(k, op, "k", 4, "[B, T, H, D]");
  TORCH_CHECK(k.sym_sizes() == q.sym_sizes(), op, ": k must have the shape of q ", q.sym_sizes(), ", got ",
              k.sym_sizes());
  check_rank(v, op, "v", 4, "[B, T, H, V]");
  for (int64_t d = 0; d < 3; ++d) check_dim_eq(v, d, q.sym_size(d), op, "v", "[B, T, H, V] with B, T, H of q");
  check_rank(fq, op, "fq", 4, "[B, T, H, F]");
  for (int64_t d = 0; d < 3; ++d) check_dim_eq(fq, d, q.sym_size(d), op, "fq", "[B, T, H, F] with B, T, H of q");
  check_rank(fk, op, "fk", 4, "[B, T, H, F]");
  TORCH_CHECK(fk.sym_sizes() == fq.sym_sizes(), op, ": fk must have the shape of fq ", fq.sym_sizes(),
              " (the same feature size F), got ", fk.sym_sizes());
  check_rank(window_factor, op, "window_factor", 1, "[H]");
  check_dim_eq(window_factor, 0, q.sym_size(2), op, "window_factor", "[H] with H of q");
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{k, "k"}, {v, "v"}, {fq, "fq"},
                                {fk, "fk"}, {window_factor, "window_factor"}}) {
    check_same_device(t, q, op, name);
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": ", name, " must have q's dtype ", q.scalar_type(),
                ", got ", t.scalar_type());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v) {
  const auto sd = state_dtype(q);
  const auto rows = std::vector<c10::SymInt>{q.sym_size(0), q.sym_size(1), q.sym_size(2)};
  return {at::empty_symint(v.sym_sizes(), q.options()), at::empty_symint(rows, q.options().dtype(sd)),
          at::empty_symint(rows, q.options().dtype(sd))};
}

}  // namespace linattn::lolcats
