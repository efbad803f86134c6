// The sliding-window, LoLCATs, Liger and MoM C++ API from LibTorch: values and torch::autograd gradients
// against explicit definitions written with plain tensor ops (float64).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <linattn/linattn.h>

namespace {

torch::Tensor randn(torch::IntArrayRef shape) { return torch::randn(shape, torch::kFloat64); }

std::vector<torch::Tensor> leaves(const std::vector<torch::Tensor>& base) {
  std::vector<torch::Tensor> out;
  for (const auto& t : base) out.push_back(t.clone().requires_grad_());
  return out;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Masks [T, T]: the window {i-w+1..i} and the keys before it {j <= i-w}.
std::pair<torch::Tensor, torch::Tensor> masks(int64_t T, int64_t w) {
  const torch::Tensor i = torch::arange(T).unsqueeze(1), j = torch::arange(T).unsqueeze(0);
  return {(j <= i).logical_and(j > i - w), j <= i - w};
}

torch::Tensor swa_definition(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t w,
                             double scale) {
  const torch::Tensor win = masks(q.size(1), w).first;
  const torch::Tensor s = torch::einsum("bihd,bjhd->bhij", {q, k}) * scale;
  return torch::einsum("bhij,bjhv->bihv", {s.masked_fill(win.logical_not(), -INFINITY).softmax(-1), v});
}

torch::Tensor lolcats_definition(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& fq, const torch::Tensor& fk, const torch::Tensor& wf, int64_t w,
                                 double scale) {
  auto [win, lin] = masks(q.size(1), w);
  const torch::Tensor s = torch::einsum("bihd,bjhd->bhij", {q, k}) * scale;
  const torch::Tensor m = s.masked_fill(win.logical_not(), -INFINITY).amax(-1, true);
  const torch::Tensor e = wf.sigmoid().view({1, -1, 1, 1}) * (s - m).exp() * win;
  const torch::Tensor a = torch::einsum("bihf,bjhf->bhij", {fq, fk}) * lin;
  const torch::Tensor num = torch::einsum("bhij,bjhv->bihv", {e + a, v});
  return num / (e + a).sum(-1).transpose(1, 2).unsqueeze(-1);
}

void expect_grads_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double tol) {
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].grad().defined()) << "input " << i;
    EXPECT_LT(max_diff(a[i].grad(), b[i].grad()), tol) << "gradient of input " << i;
  }
}

TEST(SlidingWindowAttention, ValuesAndGradientsMatchDefinition) {
  torch::manual_seed(31);
  for (int64_t w : {1, 5, 200}) {
    const auto base = std::vector<torch::Tensor>{randn({2, 70, 3, 7}), randn({2, 70, 3, 7}), randn({2, 70, 3, 5})};
    auto mine = leaves(base), theirs = leaves(base);
    const torch::Tensor o = linattn::sliding_window_attention(mine[0], mine[1], mine[2], w, 0.4);
    const torch::Tensor r = swa_definition(theirs[0], theirs[1], theirs[2], w, 0.4);
    EXPECT_LT(max_diff(o, r), 1e-12) << "window " << w;
    const torch::Tensor dout = randn(o.sizes());
    (o * dout).sum().backward();
    (r * dout).sum().backward();
    expect_grads_close(mine, theirs, 1e-10);
  }
}

TEST(LolcatsAttention, ValuesAndGradientsMatchDefinition) {
  torch::manual_seed(32);
  const int64_t B = 2, T = 67, H = 2, D = 6, V = 4, F = 5;
  const auto base = std::vector<torch::Tensor>{randn({B, T, H, D}), randn({B, T, H, D}), randn({B, T, H, V}),
                                               randn({B, T, H, F}).softmax(-1), randn({B, T, H, F}).softmax(-1),
                                               randn({H})};
  auto mine = leaves(base), theirs = leaves(base);
  const torch::Tensor o = linattn::lolcats_attention(mine[0], mine[1], mine[2], mine[3], mine[4], mine[5], 9);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const torch::Tensor r =
      lolcats_definition(theirs[0], theirs[1], theirs[2], theirs[3], theirs[4], theirs[5], 9, scale);
  EXPECT_LT(max_diff(o, r), 1e-12);
  const torch::Tensor dout = randn(o.sizes());
  (o * dout).sum().backward();
  (r * dout).sum().backward();
  expect_grads_close(mine, theirs, 1e-10);
}

TEST(LolcatsAttention, BadInputNamesTheArgument) {
  const torch::Tensor x = randn({1, 8, 2, 4}), f = randn({1, 8, 2, 3}), wf = randn({2});
  EXPECT_THROW(linattn::lolcats_attention(x, x, x, f, f, wf, 0), c10::Error);
  EXPECT_THROW(linattn::lolcats_attention(x, x, x, f, randn({1, 8, 2, 5}), wf, 4), c10::Error);
  EXPECT_THROW(linattn::hedgehog_feature_map(x, randn({2, 5, 3})), c10::Error);
}

TEST(Liger, AttentionIsTheMixOfWindowAndGlaOnSoftmaxFeatures) {
  torch::manual_seed(33);
  const int64_t B = 1, T = 40, H = 2, D = 6;
  const torch::Tensor q = randn({B, T, H, D}), k = randn({B, T, H, D}), v = randn({B, T, H, D});
  const torch::Tensor qr = randn({B, T, H, D}), kr = randn({B, T, H, D});
  const torch::Tensor g = linattn::liger_gate(k);
  EXPECT_LT(max_diff(g, torch::log_sigmoid(k) / 16.0), 1e-14);
  auto [o, ht] = linattn::liger_attention(q, k, v, g, qr, kr, 8, std::nullopt, true, 0.25, 0.75);
  // GLA by its recurrence: S <- diag(exp g) S + k v^T, o = S^T q with softmax feature maps and scale 1.
  const torch::Tensor fq = q.softmax(-1), fk = k.softmax(-1);
  torch::Tensor S = torch::zeros({B, H, D, D}, torch::kFloat64);
  std::vector<torch::Tensor> lin;
  for (int64_t t = 0; t < T; ++t) {
    S = g.select(1, t).exp().unsqueeze(-1) * S + fk.select(1, t).unsqueeze(-1) * v.select(1, t).unsqueeze(-2);
    lin.push_back(torch::einsum("bhkv,bhk->bhv", {S, fq.select(1, t)}));
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const torch::Tensor r = 0.25 * swa_definition(qr, kr, v, 8, scale) + 0.75 * torch::stack(lin, 1);
  EXPECT_LT(max_diff(o, r), 1e-12);
  EXPECT_LT(max_diff(ht, S), 1e-12);
}

TEST(Mom, DispatchThenCombineWithRoutedWeightsGivesTheWeightedCopies) {
  torch::manual_seed(34);
  const int64_t B = 2, T = 13, E = 4, k = 2;
  auto [weights, indices] = linattn::mom_route(randn({B, T, E}), k);
  EXPECT_LT(max_diff(weights.sum(-1), torch::ones({B, T}, torch::kFloat64)), 1e-12);
  const torch::Tensor x = randn({B, T, 3});
  auto [xs, cu, sort_index] = linattn::mom_dispatch(x, indices, E);
  ASSERT_EQ(xs.size(0), B * T * k);
  ASSERT_EQ(cu.size(0), E * B + 1);
  EXPECT_EQ(cu[-1].item<int64_t>(), B * T * k);
  // Every packed row is a copy of the token that sort_index names.
  EXPECT_LT(max_diff(xs, x.reshape({B * T, 3}).index_select(0, sort_index)), 1e-15);
  // Memory e's output = 2x for e even, -x for odd: combine must give sum_j w_j * f_{idx_j}(x).
  torch::Tensor factor = torch::zeros({xs.size(0)}, torch::kFloat64);
  for (int64_t s = 0; s < E * B; ++s) {
    const int64_t lo = cu[s].item<int64_t>(), hi = cu[s + 1].item<int64_t>();
    factor.slice(0, lo, hi).fill_((s / B) % 2 == 0 ? 2.0 : -1.0);
  }
  const torch::Tensor y = linattn::mom_combine(xs * factor.unsqueeze(-1), weights, indices, sort_index, E);
  const torch::Tensor f = torch::where(indices.remainder(2) == 0, 2.0, -1.0).to(torch::kFloat64);
  EXPECT_LT(max_diff(y, (weights * f).sum(-1, true) * x), 1e-12);
  EXPECT_THROW(linattn::mom_route(randn({B, T, E}), E + 1), c10::Error);
}

TEST(Mom, GroupedLinearProjectsEachMemorysRowsWithItsWeightAndDifferentiates) {
  torch::manual_seed(35);
  const int64_t B = 2, T = 11, E = 3, k = 2, D = 5, O = 4;
  auto [weights, indices] = linattn::mom_route(randn({B, T, E}), k);
  auto [xs, cu, sort_index] = linattn::mom_dispatch(randn({B, T, D}), indices, E);
  const torch::Tensor offsets = cu.slice(0, 0, E * B + 1, B);  // memory e: rows offsets[e] .. offsets[e+1]
  const auto x = leaves({xs}), w = leaves({randn({O, D}), randn({O, D}), randn({O, D})});
  const torch::Tensor y = linattn::mom_grouped_linear(x[0], w, offsets);
  const auto xr = leaves({xs}), wr = leaves({w[0].detach(), w[1].detach(), w[2].detach()});
  std::vector<torch::Tensor> parts;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t lo = offsets[e].item<int64_t>(), hi = offsets[e + 1].item<int64_t>();
    parts.push_back(torch::matmul(xr[0].slice(0, lo, hi), wr[e].t()));
  }
  const torch::Tensor r = torch::cat(parts);
  EXPECT_LT(max_diff(y, r), 1e-12);
  const torch::Tensor gy = randn({xs.size(0), O});
  (y * gy).sum().backward();
  (r * gy).sum().backward();
  expect_grads_close(x, xr, 1e-12);
  expect_grads_close(w, wr, 1e-12);
  EXPECT_THROW(linattn::mom_grouped_linear(xs, {randn({O, D + 1})}, offsets.slice(0, 0, 2)), c10::Error);
}

}  // namespace
