// The delta-rule C++ API from LibTorch: values and gradients against the definition, grouped value heads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <linattn/linattn.h>

namespace {

torch::Tensor randn(torch::IntArrayRef shape) { return torch::randn(shape, torch::kFloat64); }

// S <- exp(g) S; u = beta (v - S^T k); S <- S + k u^T; o = S^T (scale q), per value head (G = HV / H).
std::tuple<torch::Tensor, torch::Tensor> reference(torch::Tensor q, torch::Tensor k, const torch::Tensor& v,
                                                   const torch::Tensor& g, const torch::Tensor& beta, double scale,
                                                   const torch::Tensor& h0) {
  const int64_t G = v.size(2) / q.size(2);
  q = q.repeat_interleave(G, 2);
  k = k.repeat_interleave(G, 2);
  torch::Tensor S = h0;
  std::vector<torch::Tensor> outs;
  for (int64_t t = 0; t < q.size(1); ++t) {
    S = g.select(1, t).exp().unsqueeze(-1).unsqueeze(-1) * S;
    const torch::Tensor kt = k.select(1, t);
    const torch::Tensor u = beta.select(1, t).unsqueeze(-1) * (v.select(1, t) - torch::einsum("bhkv,bhk->bhv", {S, kt}));
    S = S + kt.unsqueeze(-1) * u.unsqueeze(-2);
    outs.push_back(torch::einsum("bhkv,bhk->bhv", {S, q.select(1, t) * scale}));
  }
  return {torch::stack(outs, 1), S};
}

TEST(GatedDeltaRule, ValuesAndGradientsMatchDefinition) {
  torch::manual_seed(21);
  const int64_t B = 2, T = 75, H = 2, HV = 4, K = 6, V = 5;
  std::vector<torch::Tensor> base = {randn({B, T, H, K}), torch::nn::functional::normalize(randn({B, T, H, K}),
                                         torch::nn::functional::NormalizeFuncOptions().dim(-1)),
                                     randn({B, T, HV, V}), torch::log_sigmoid(randn({B, T, HV}) + 2.0),
                                     torch::rand({B, T, HV}, torch::kFloat64), randn({B, HV, K, V})};
  std::vector<torch::Tensor> mine, theirs;
  for (const auto& t : base) {
    mine.push_back(t.clone().requires_grad_());
    theirs.push_back(t.clone().requires_grad_());
  }
  const torch::Tensor w = randn({B, T, HV, V});
  auto [o, ht] = linattn::chunk_gated_delta_rule(mine[0], mine[1], mine[2], mine[3], mine[4], 0.3, mine[5], true);
  ((o * w).sum() + ht.square().sum()).backward();
  auto [ro, rh] = reference(theirs[0], theirs[1], theirs[2], theirs[3], theirs[4], 0.3, theirs[5]);
  ((ro * w).sum() + rh.square().sum()).backward();
  EXPECT_LT((o - ro).abs().max().item<double>(), 1e-10);
  EXPECT_LT((ht - rh).abs().max().item<double>(), 1e-10);
  const char* names[] = {"dq", "dk", "dv", "dg", "dbeta", "dh0"};
  for (size_t i = 0; i < mine.size(); ++i) {
    ASSERT_TRUE(mine[i].grad().defined()) << names[i];
    EXPECT_LT((mine[i].grad() - theirs[i].grad()).abs().max().item<double>(), 1e-9) << names[i];
  }
}

TEST(DeltaRule, RecurrentEqualsChunkedAndRejectsBadHeads) {
  torch::manual_seed(22);
  const auto q = randn({1, 90, 1, 8}), k = randn({1, 90, 1, 8}), v = randn({1, 90, 2, 4});
  const auto beta = torch::rand({1, 90, 2}, torch::kFloat64);
  auto [a, ha] = linattn::chunk_delta_rule(q, k, v, beta, std::nullopt, std::nullopt, true, true);
  auto [b, hb] = linattn::fused_recurrent_delta_rule(q, k, v, beta, std::nullopt, std::nullopt, true, true);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-10);
  EXPECT_LT((ha - hb).abs().max().item<double>(), 1e-10);
  EXPECT_THROW(linattn::chunk_delta_rule(randn({1, 9, 2, 8}), randn({1, 9, 2, 8}), randn({1, 9, 3, 4}),
                                         torch::rand({1, 9, 3}, torch::kFloat64)),
               c10::Error);
}

// A serving loop with one state buffer: every step reads and overwrites `state` in the kernel.
TEST(GatedDeltaRule, InplaceDecodingLoopMatchesDefinition) {
  torch::manual_seed(23);
  const int64_t B = 2, T = 6, H = 1, HV = 2, K = 5, V = 3;
  const auto q = randn({B, T, H, K}), v = randn({B, T, HV, V}), g = torch::log_sigmoid(randn({B, T, HV}) + 2.0);
  const auto k = torch::nn::functional::normalize(randn({B, T, H, K}),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(-1));
  const auto beta = torch::rand({B, T, HV}, torch::kFloat64);
  const auto h0 = randn({B, HV, K, V});
  torch::Tensor state = h0.clone();
  const void* buffer = state.data_ptr();
  std::vector<torch::Tensor> outs;
  torch::NoGradGuard no_grad;
  for (int64_t t = 0; t < T; ++t) {
    auto step = [t](const torch::Tensor& x) { return x.narrow(1, t, 1); };
    outs.push_back(linattn::fused_recurrent_delta_rule_inplace(step(q), step(k), step(v), step(g), step(beta), state,
                                                               0.4));
  }
  EXPECT_EQ(state.data_ptr(), buffer);
  auto [ro, rh] = reference(q, k, v, g, beta, 0.4, h0);
  EXPECT_LT((torch::cat(outs, 1) - ro).abs().max().item<double>(), 1e-12);
  EXPECT_LT((state - rh).abs().max().item<double>(), 1e-12);
  torch::Tensor wrong = h0.to(torch::kFloat32);
  EXPECT_THROW(linattn::fused_recurrent_delta_rule_inplace(q, k, v, g, beta, wrong), c10::Error);
}

}  // namespace
