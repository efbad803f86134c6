// The GLA C++ API from LibTorch: values against the definition, gradients through torch::autograd, errors.
#include <ATen/core/dispatch/Dispatcher.h>
#include <cmath>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <linattn/linattn.h>

namespace {

using torch::indexing::Slice;

torch::Tensor randn(torch::IntArrayRef shape) { return torch::randn(shape, torch::kFloat64); }

// S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t), with plain autograd-able tensor ops.
std::tuple<torch::Tensor, torch::Tensor> reference(const torch::Tensor& q, const torch::Tensor& k,
                                                   const torch::Tensor& v, const torch::Tensor& g, double scale,
                                                   const torch::Tensor& h0) {
  torch::Tensor S = h0;
  std::vector<torch::Tensor> outs;
  for (int64_t t = 0; t < q.size(1); ++t) {
    S = g.select(1, t).exp().unsqueeze(-1) * S + k.select(1, t).unsqueeze(-1) * v.select(1, t).unsqueeze(-2);
    outs.push_back(torch::einsum("bhk,bhkv->bhv", {q.select(1, t) * scale, S}));
  }
  if (outs.empty()) return {torch::zeros({q.size(0), 0, q.size(2), v.size(3)}, q.options()), S};
  return {torch::stack(outs, 1), S};
}

struct Inputs {
  torch::Tensor q, k, v, g, h0;
};

Inputs make_inputs(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V) {
  return {randn({B, T, H, K}), randn({B, T, H, K}), randn({B, T, H, V}),
          torch::log_sigmoid(randn({B, T, H, K}) + 1.0), randn({B, H, K, V})};
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol, const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  if (a.numel() == 0) return;
  const double err = (a - b).abs().max().item<double>();
  EXPECT_LT(err, tol) << what << ": max abs error " << err;
}

TEST(LinattnLibrary, OpsAreRegisteredByLinking) {
  for (const char* name : {"linattn::chunk_gla", "linattn::fused_recurrent_gla", "linattn::chunk_simple_gla",
                           "linattn::fused_recurrent_simple_gla", "linattn::_gla_backward",
                           "linattn::chunk_delta_rule", "linattn::fused_recurrent_delta_rule",
                           "linattn::chunk_gated_delta_rule", "linattn::fused_recurrent_gated_delta_rule",
                           "linattn::_delta_rule_backward"}) {
    EXPECT_TRUE(c10::Dispatcher::singleton().findSchema({name, ""}).has_value()) << name;
  }
  EXPECT_EQ(linattn::version_code(), 100);
}

TEST(ChunkGla, ForwardMatchesDefinition) {
  torch::manual_seed(11);
  const auto in = make_inputs(2, 77, 3, 10, 6);
  const double scale = 0.37;
  auto [o, ht] = linattn::chunk_gla(in.q, in.k, in.v, in.g, scale, in.h0, /*output_final_state=*/true);
  auto [ro, rh] = reference(in.q, in.k, in.v, in.g, scale, in.h0);
  expect_close(o, ro, 1e-10, "o");
  expect_close(ht, rh, 1e-10, "final_state");
}

TEST(ChunkGla, FinalStateUndefinedUnlessRequested) {
  const auto in = make_inputs(1, 5, 1, 4, 4);
  auto [o, ht] = linattn::chunk_gla(in.q, in.k, in.v, in.g);
  EXPECT_TRUE(o.defined());
  EXPECT_FALSE(ht.defined());
}

TEST(ChunkGla, GradientsThroughTorchAutograd) {
  torch::manual_seed(12);
  const auto base = make_inputs(1, 70, 2, 5, 4);
  std::vector<torch::Tensor> mine, theirs;
  for (const auto& t : {base.q, base.k, base.v, base.g, base.h0}) {
    mine.push_back(t.clone().requires_grad_());
    theirs.push_back(t.clone().requires_grad_());
  }
  const torch::Tensor w = randn({1, 70, 2, 4});
  auto [o, ht] = linattn::chunk_gla(mine[0], mine[1], mine[2], mine[3], std::nullopt, mine[4], true);
  ((o * w).sum() + ht.square().sum()).backward();
  auto [ro, rh] = reference(theirs[0], theirs[1], theirs[2], theirs[3], 1.0 / std::sqrt(5.0), theirs[4]);
  ((ro * w).sum() + rh.square().sum()).backward();
  const char* names[] = {"dq", "dk", "dv", "dg", "dh0"};
  for (size_t i = 0; i < mine.size(); ++i) {
    ASSERT_TRUE(mine[i].grad().defined()) << names[i];
    expect_close(mine[i].grad(), theirs[i].grad(), 1e-9, names[i]);
  }
}

TEST(SimpleGla, ScalarGateAndGammaMatchExpandedGate) {
  torch::manual_seed(13);
  const auto in = make_inputs(2, 40, 3, 8, 5);
  const torch::Tensor g = torch::log_sigmoid(randn({2, 40, 3}));
  const torch::Tensor gamma = torch::log_sigmoid(randn({3}) + 2.0);
  const torch::Tensor expanded = (g + gamma).unsqueeze(-1).expand({2, 40, 3, 8});
  auto [o, ht] = linattn::chunk_simple_gla(in.q, in.k, in.v, g, gamma, std::nullopt, in.h0, true);
  auto [ro, rh] = reference(in.q, in.k, in.v, expanded, 1.0 / std::sqrt(8.0), in.h0);
  expect_close(o, ro, 1e-10, "o");
  expect_close(ht, rh, 1e-10, "final_state");
  auto [o2, h2] = linattn::fused_recurrent_simple_gla(in.q, in.k, in.v, g, gamma, std::nullopt, in.h0, true);
  expect_close(o2, ro, 1e-10, "recurrent o");
}

TEST(LightningAttn, SimpleGlaWithTheLayerDecay) {
  torch::manual_seed(15);
  const int64_t H = 4, layer = 2, layers = 6;
  const auto in = make_inputs(2, 70, H, 6, 5);
  // head h decays by -8 h / H (1 - layer / layers) per step, written out here from fla 0.5's definition
  std::vector<double> rates;
  for (int64_t h = 0; h < H; ++h) rates.push_back(-8.0 * h / H * (1.0 - double(layer) / layers));
  const torch::Tensor expanded =
      torch::tensor(rates, torch::kFloat64).view({1, 1, H, 1}).expand({2, 70, H, 6});
  auto [ro, rh] = reference(in.q, in.k, in.v, expanded, 1.0 / std::sqrt(6.0), in.h0);
  auto [o, ht] = linattn::chunk_lightning_attn(in.q, in.k, in.v, layer, layers, std::nullopt, in.h0, true);
  expect_close(o, ro, 1e-10, "chunk o");
  expect_close(ht, rh, 1e-10, "chunk final_state");
  auto [o2, h2] = linattn::fused_recurrent_lightning_attn(in.q, in.k, in.v, layer, layers, std::nullopt, in.h0, true);
  expect_close(o2, ro, 1e-10, "recurrent o");
  expect_close(h2, rh, 1e-10, "recurrent final_state");
  EXPECT_THROW(linattn::chunk_lightning_attn(in.q, in.k, in.v, 7, layers), c10::Error);
}

TEST(Retention, SimpleGlaWithTheRetNetDecay) {
  torch::manual_seed(16);
  const int64_t H = 3;
  const auto in = make_inputs(2, 67, H, 5, 4);
  // head h keeps 1 - 2^(-5 - h) of its state per step (RetNet), written out here
  std::vector<double> rates;
  for (int64_t h = 0; h < H; ++h) rates.push_back(std::log(1.0 - std::pow(2.0, -5.0 - double(h))));
  const torch::Tensor expanded = torch::tensor(rates, torch::kFloat64).view({1, 1, H, 1}).expand({2, 67, H, 5});
  auto [ro, rh] = reference(in.q, in.k, in.v, expanded, 0.25, in.h0);
  auto [o, ht] = linattn::chunk_retention(in.q, in.k, in.v, 0.25, in.h0, true);
  expect_close(o, ro, 1e-10, "chunk o");
  expect_close(ht, rh, 1e-10, "chunk final_state");
  auto [o2, h2] = linattn::fused_recurrent_retention(in.q, in.k, in.v, 0.25, in.h0, true);
  expect_close(o2, ro, 1e-10, "recurrent o");
  expect_close(h2, rh, 1e-10, "recurrent final_state");
}

TEST(FusedRecurrentGla, VarlenMatchesPerSequence) {
  torch::manual_seed(14);
  const auto in = make_inputs(1, 50, 2, 6, 3);
  const torch::Tensor cu = torch::tensor({0, 20, 20, 50}, torch::kLong);
  const torch::Tensor h0 = randn({3, 2, 6, 3});
  auto [o, ht] = linattn::fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, h0, true, cu);
  const int64_t bounds[][2] = {{0, 20}, {20, 20}, {20, 50}};
  for (int64_t n = 0; n < 3; ++n) {
    const auto s = Slice(bounds[n][0], bounds[n][1]);
    auto [ro, rh] = reference(in.q.index({Slice(), s}), in.k.index({Slice(), s}), in.v.index({Slice(), s}),
                              in.g.index({Slice(), s}), 1.0 / std::sqrt(6.0), h0.slice(0, n, n + 1));
    expect_close(o.index({Slice(), s}), ro, 1e-10, "o");
    expect_close(ht.slice(0, n, n + 1), rh, 1e-10, "final_state");
  }
}

TEST(ChunkGla, BadInputThrowsNamingTheArgument) {
  const auto in = make_inputs(2, 8, 2, 4, 4);
  try {
    linattn::chunk_gla(in.q, randn({2, 8, 2, 5}), in.v, in.g);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("k must have the shape of q"), std::string::npos) << e.what();
  }
  EXPECT_THROW(linattn::chunk_gla(in.q, in.k, in.v, in.g, std::nullopt, randn({2, 2, 4, 5})), c10::Error);
  EXPECT_THROW(linattn::chunk_gla(in.q, in.k, in.v, in.g, std::nullopt, std::nullopt, false,
                                  torch::tensor({0, 8}, torch::kLong)),
               c10::Error);
}

}  // namespace
