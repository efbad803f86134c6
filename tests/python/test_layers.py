"""Layers: the op-backed layer equals the same layer computed with the float64 reference recurrence, and
decoding token by token with the carried state equals the full forward."""
import pytest
import torch
import torch.nn.functional as F

from linattn.layers import GatedLinearAttention, SimpleGatedLinearAttention
from linattn.reference import gla_recurrence
from helpers import assert_close


def reference_layer(layer, x):
    q = layer._heads(layer.q_proj(x), layer.head_k)
    k = layer._heads(layer.k_proj(x), layer.head_k)
    v = layer._heads(layer.v_proj(x), layer.head_v)
    if isinstance(layer, GatedLinearAttention):
        g, gamma = layer._heads(F.logsigmoid(layer.gk_proj(x)) / layer.gate_logit_normalizer, layer.head_k), None
    elif layer.decay == "data":
        g, gamma = F.logsigmoid(layer.gh_proj(x)) / layer.gate_logit_normalizer, None
    else:
        g, gamma = None, layer.g_gamma.double()
    o, _ = gla_recurrence(q, k, v, g, gamma)
    return layer._finish(x, o)


LAYERS = [
    lambda: GatedLinearAttention(64, 4, gate_low_rank_dim=8),
    lambda: SimpleGatedLinearAttention(64, 2, decay="data"),
    lambda: SimpleGatedLinearAttention(64, 4, decay="fixed"),
]


@pytest.mark.parametrize("make", LAYERS, ids=["gla", "simple_gla", "lightning"])
def test_layer_matches_reference_and_backprops(make):
    layer = make().double()
    x = torch.randn(2, 90, 64, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    assert_close(y, reference_layer(layer, x), atol=1e-9, rtol=1e-9)
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("make", LAYERS, ids=["gla", "simple_gla", "lightning"])
def test_decode_equals_prefill(make):
    layer = make().double().eval()
    x = torch.randn(2, 75, 64, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        out, state = layer(x[:, :40], use_cache=True)
        pieces = [out]
        for t in range(40, 75):
            o, state = layer(x[:, t:t + 1], state=state, use_cache=True)
            pieces.append(o)
    assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=1e-10)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be"):
        GatedLinearAttention(64, 4, mode="parallel")


DELTA_LAYERS = [
    lambda: __import__("linattn").layers.DeltaNet(48, 2, head_dim=12),
    lambda: __import__("linattn").layers.GatedDeltaNet(48, 2, head_dim=8, num_v_heads=4),
]


@pytest.mark.parametrize("make", DELTA_LAYERS, ids=["deltanet", "gated_deltanet"])
def test_delta_layers_decode_equals_prefill_and_match_reference(make):
    from linattn.reference import delta_rule_recurrence

    layer = make().double().eval()
    x = torch.randn(2, 75, 48, dtype=torch.float64)
    with torch.no_grad():
        full, _ = layer(x)
        out, state = layer(x[:, :40], use_cache=True)
        pieces = [out]
        for t in range(40, 75):
            o, state = layer(x[:, t:t + 1], state=state, use_cache=True)
            pieces.append(o)
        assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=1e-10)

        B, T = 2, 75
        q = F.silu(layer.q_proj(x)).view(B, T, layer.num_heads, layer.head_k)
        k = F.silu(layer.k_proj(x)).view(B, T, layer.num_heads, layer.head_k)
        v = F.silu(layer.v_proj(x)).view(B, T, layer.num_v_heads, layer.head_v)
        beta = torch.sigmoid(layer.b_proj(x))
        g = -layer.A_log.exp() * F.softplus(layer.a_proj(x) + layer.dt_bias) if layer.gated else None
        o, _ = delta_rule_recurrence(q, k, v, beta, g, use_qk_l2norm_in_kernel=True)
        o = layer.o_norm(o, layer.g_proj(x).view(B, T, layer.num_v_heads, layer.head_v))
        assert_close(layer.o_proj(o.reshape(B, T, -1)), full, atol=1e-10, rtol=1e-10)
