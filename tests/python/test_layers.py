"""Layers: the op-backed layers (with the fla-style constructors) equal the float64 token-by-token reference of
layer_reference.py and backpropagate, decoding token by token through the cache equals the full forward, and
LightningAttention's constant decays are the documented ones. test_layers_fla.py covers fla compatibility."""
import math

import pytest
import torch

from linattn.layers import (DeltaNet, GatedDeltaNet, GatedLinearAttention, LightningAttention,
                            SimpleGatedLinearAttention)
from helpers import assert_close
from layer_reference import randomize, reference

LAYERS = {
    "gla": lambda: GatedLinearAttention(hidden_size=64, num_heads=4, gate_low_rank_dim=8),
    "simple_gla": lambda: SimpleGatedLinearAttention(hidden_size=64, num_heads=2),
    "lightning": lambda: LightningAttention(hidden_size=64, num_heads=4),
    "deltanet": lambda: DeltaNet(hidden_size=48, num_heads=2, expand_k=0.5),
    "gated_deltanet": lambda: GatedDeltaNet(hidden_size=48, num_heads=2, head_dim=8, num_v_heads=4, expand_v=1),
}


def hidden(layer):
    return layer.hidden_size


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_matches_reference_and_backprops(name):
    layer = randomize(LAYERS[name]().double())
    x = torch.randn(2, 90, hidden(layer), dtype=torch.float64, requires_grad=True)
    y, _, _ = layer(x)
    assert_close(y, reference(layer, x), atol=1e-9, rtol=1e-9, name=name)
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("name", list(LAYERS))
def test_decode_equals_prefill(name):
    layer = randomize(LAYERS[name]().double()).eval()
    x = torch.randn(2, 75, hidden(layer), dtype=torch.float64)
    with torch.no_grad():
        full, _, _ = layer(x)
        out, _, cache = layer(x[:, :40], use_cache=True)
        pieces = [out]
        for t in range(40, 75):
            o, _, cache = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            pieces.append(o)
    assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=1e-10, name=name)


def test_lightning_decays():
    retnet = LightningAttention(hidden_size=32, num_heads=4)
    assert not hasattr(retnet, "gk_proj") and "g_gamma" not in retnet.state_dict()
    assert_close(retnet.g_gamma, torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(4)]), atol=1e-7, rtol=0)
    lightning = LightningAttention(hidden_size=32, num_heads=4, layer_idx=2, num_layers=8)
    assert_close(lightning.g_gamma, torch.tensor([-8 * h / 4 * (1 - 2 / 8) for h in range(4)]), atol=1e-7, rtol=0)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        GatedLinearAttention(mode="parallel")
