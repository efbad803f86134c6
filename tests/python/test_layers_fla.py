"""GatedLinearAttention, SimpleGatedLinearAttention, DeltaNet, GatedDeltaNet as drop-ins for fla 0.5.2's layers.

* state dict keys, order and shapes equal fla's (hard-coded below: read off fla 0.5.2's layer sources, since fla
  itself cannot be imported here without triton);
* the forward equals a float64 reference spelled out token by token (layer_reference.py) from the same weights
  (projections, the short convolution as an explicit tap sum, activations, norms, gates, the recurrence from
  linattn.reference), including attention_mask padding and cu_seqlens, in both kernel modes;
* gradients of the input and every parameter equal the reference's;
* decoding one token at a time through the cache equals the full forward (StateCache, dict, transformers Cache,
  with padding and varlen);
* bad arguments raise errors that say what is wrong.
"""
import warnings

import pytest
import torch

from linattn.layers import (DeltaNet, GatedDeltaNet, GatedLinearAttention, LightningAttention,
                            LinearAttentionState, SimpleGatedLinearAttention, StateCache)
from helpers import assert_close
from layer_reference import FEATURE_MAPS, randomize, reference

D = 32
TOL = dict(atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------------------------------------ fla's state dicts
# Facts about fla 0.5.2 (fla/layers/gla.py, simple_gla.py, delta_net.py, gated_deltanet.py and the modules they
# build): parameter names in registration order (module parameters first, as state_dict lists them) and shapes.

# GatedLinearAttention(hidden_size=32, num_heads=4): key_dim 16, value_dim 32, head_v_dim 8.
GLA_DEFAULT = {
    "q_proj.weight": (16, 32), "k_proj.weight": (16, 32), "v_proj.weight": (32, 32), "g_proj.weight": (32, 32),
    "gk_proj.0.weight": (16, 32), "gk_proj.1.weight": (16, 16), "gk_proj.1.bias": (16,),
    "o_proj.weight": (32, 32), "g_norm_swish_gate.weight": (8,),
}
# ... num_kv_heads=2 (k/v/gate projections to half width), use_short_conv=True, conv_size=3, conv_bias=True,
# fuse_norm=False (plain g_norm), gate_low_rank_dim=8.
GLA_GQA_CONV = {
    "q_proj.weight": (16, 32), "k_proj.weight": (8, 32), "v_proj.weight": (16, 32), "g_proj.weight": (32, 32),
    "q_conv1d.weight": (16, 1, 3), "q_conv1d.bias": (16,), "k_conv1d.weight": (8, 1, 3), "k_conv1d.bias": (8,),
    "v_conv1d.weight": (16, 1, 3), "v_conv1d.bias": (16,),
    "gk_proj.0.weight": (8, 32), "gk_proj.1.weight": (8, 8), "gk_proj.1.bias": (8,),
    "o_proj.weight": (32, 32), "g_norm.weight": (8,),
}
# ... use_output_gate=False, elementwise_affine=False: no g_proj, a weightless g_norm.
GLA_NO_GATE = {
    "q_proj.weight": (16, 32), "k_proj.weight": (16, 32), "v_proj.weight": (32, 32),
    "gk_proj.0.weight": (16, 32), "gk_proj.1.weight": (16, 16), "gk_proj.1.bias": (16,), "o_proj.weight": (32, 32),
}
# SimpleGatedLinearAttention(hidden_size=32, num_heads=4): key_dim = value_dim = 32, convolutions on by default,
# gk_proj = Linear(hidden, num_heads) with bias, the norm registered before o_proj.
SGLA_DEFAULT = {
    "q_proj.weight": (32, 32), "k_proj.weight": (32, 32), "v_proj.weight": (32, 32), "g_proj.weight": (32, 32),
    "q_conv1d.weight": (32, 1, 4), "k_conv1d.weight": (32, 1, 4), "v_conv1d.weight": (32, 1, 4),
    "gk_proj.weight": (4, 32), "gk_proj.bias": (4,), "g_norm_swish_gate.weight": (8,), "o_proj.weight": (32, 32),
}
# ... expand_k=0.5, num_kv_heads=2, use_short_conv=False, gate_fn='sigmoid' (plain g_norm).
SGLA_GQA = {
    "q_proj.weight": (16, 32), "k_proj.weight": (8, 32), "v_proj.weight": (16, 32), "g_proj.weight": (32, 32),
    "gk_proj.weight": (4, 32), "gk_proj.bias": (4,), "g_norm.weight": (8,), "o_proj.weight": (32, 32),
}
# DeltaNet(hidden_size=32, num_heads=4): b_proj, convolutions, ungated o_norm.
DN_DEFAULT = {
    "q_proj.weight": (32, 32), "k_proj.weight": (32, 32), "v_proj.weight": (32, 32), "b_proj.weight": (4, 32),
    "q_conv1d.weight": (32, 1, 4), "k_conv1d.weight": (32, 1, 4), "v_conv1d.weight": (32, 1, 4),
    "o_norm.weight": (8,), "o_proj.weight": (32, 32),
}
# DeltaNet(d_model=32 (overrides hidden_size), num_heads=4, expand_k=0.5, expand_v=2, use_beta=False,
# use_gate=True, conv_size=2, conv_bias=True): key_dim 16, value_dim 64, head_v_dim 16.
DN_GATED = {
    "q_proj.weight": (16, 32), "k_proj.weight": (16, 32), "v_proj.weight": (64, 32),
    "q_conv1d.weight": (16, 1, 2), "q_conv1d.bias": (16,), "k_conv1d.weight": (16, 1, 2), "k_conv1d.bias": (16,),
    "v_conv1d.weight": (64, 1, 2), "v_conv1d.bias": (64,), "g_proj.weight": (64, 32), "o_norm.weight": (16,),
    "o_proj.weight": (32, 64),
}
# GatedDeltaNet(hidden_size=32, head_dim=8, num_heads=2): expand_v 2 -> head_v_dim 16, value_dim 32.
GDN_DEFAULT = {
    "A_log": (2,), "dt_bias": (2,), "q_proj.weight": (16, 32), "k_proj.weight": (16, 32), "v_proj.weight": (32, 32),
    "a_proj.weight": (2, 32), "b_proj.weight": (2, 32), "q_conv1d.weight": (16, 1, 4), "k_conv1d.weight": (16, 1, 4),
    "v_conv1d.weight": (32, 1, 4), "g_proj.weight": (32, 32), "o_norm.weight": (16,), "o_proj.weight": (32, 32),
}
# ... num_v_heads=4, expand_v=1, use_gate=False, use_short_conv=False.
GDN_GVA = {
    "A_log": (4,), "dt_bias": (4,), "q_proj.weight": (16, 32), "k_proj.weight": (16, 32), "v_proj.weight": (32, 32),
    "a_proj.weight": (4, 32), "b_proj.weight": (4, 32), "o_norm.weight": (8,), "o_proj.weight": (32, 32),
}

STATE_DICTS = [
    (GLA_DEFAULT, GatedLinearAttention, dict(hidden_size=32, num_heads=4)),
    (GLA_GQA_CONV, GatedLinearAttention, dict(hidden_size=32, num_heads=4, num_kv_heads=2, use_short_conv=True,
                                              conv_size=3, conv_bias=True, fuse_norm=False, gate_low_rank_dim=8)),
    (GLA_NO_GATE, GatedLinearAttention, dict(hidden_size=32, num_heads=4, use_output_gate=False,
                                             elementwise_affine=False)),
    (SGLA_DEFAULT, SimpleGatedLinearAttention, dict(hidden_size=32, num_heads=4)),
    (SGLA_GQA, SimpleGatedLinearAttention, dict(hidden_size=32, num_heads=4, expand_k=0.5, num_kv_heads=2,
                                                use_short_conv=False, gate_fn="sigmoid")),
    (DN_DEFAULT, DeltaNet, dict(hidden_size=32, num_heads=4)),
    (DN_GATED, DeltaNet, dict(d_model=32, hidden_size=999, num_heads=4, expand_k=0.5, expand_v=2, use_beta=False,
                              use_gate=True, conv_size=2, conv_bias=True)),
    (GDN_DEFAULT, GatedDeltaNet, dict(hidden_size=32, head_dim=8, num_heads=2)),
    (GDN_GVA, GatedDeltaNet, dict(hidden_size=32, head_dim=8, num_heads=2, num_v_heads=4, expand_v=1,
                                  use_gate=False, use_short_conv=False)),
]


@pytest.mark.filterwarnings("ignore:use_short_conv=False")
@pytest.mark.parametrize("keys,cls,kw", STATE_DICTS,
                         ids=["gla", "gla_gqa_conv", "gla_no_gate", "sgla", "sgla_gqa", "deltanet",
                              "deltanet_gated", "gdn", "gdn_gva"])
def test_state_dict_matches_fla(keys, cls, kw):
    layer = cls(**kw)
    assert [(n, tuple(t.shape)) for n, t in layer.state_dict().items()] == list(keys.items())
    sd = {name: torch.randn(shape) for name, shape in keys.items()}
    layer.load_state_dict(sd, strict=True)
    for name, t in layer.state_dict().items():
        assert torch.equal(t, sd[name]), name
    o, attn, _ = layer(torch.randn(2, 5, 32))
    assert attn is None and o.shape == (2, 5, 32) and torch.isfinite(o).all()


def test_fla_defaults():
    gla = GatedLinearAttention()
    assert (gla.mode, gla.hidden_size, gla.key_dim, gla.value_dim, gla.num_heads, gla.use_short_conv,
            gla.gate_logit_normalizer, gla.gate_low_rank_dim) == ("chunk", 1024, 512, 1024, 4, False, 16, 16)
    sgla = SimpleGatedLinearAttention()
    assert (sgla.key_dim, sgla.value_dim, sgla.use_short_conv, sgla.conv_size) == (1024, 1024, True, 4)
    # fla's count: key_dim * head_v_dim for the recurrent state + channels * kernel per convolution
    assert SimpleGatedLinearAttention(hidden_size=32, num_heads=4).state_size() == 32 * 8 + 3 * 32 * 4
    dn = DeltaNet()
    assert (dn.hidden_size, dn.key_dim, dn.num_heads, dn.use_beta, dn.use_gate, dn.qk_activation, dn.qk_norm) == \
        (1024, 1024, 4, True, False, "silu", "l2")
    gdn = GatedDeltaNet()
    assert (gdn.hidden_size, gdn.head_dim, gdn.head_v_dim, gdn.num_heads, gdn.num_v_heads, gdn.use_gate) == \
        (2048, 256, 512, 6, 6, True)
    # fla's DeltaNet and GatedDeltaNet take (and ignore) extra keywords; GLA and simple GLA do not.
    DeltaNet(hidden_size=32, num_heads=4, some_config_key=1)
    GatedDeltaNet(hidden_size=32, head_dim=8, num_heads=2, some_config_key=1)
    with pytest.raises(TypeError):
        GatedLinearAttention(hidden_size=32, some_config_key=1)


# ---------------------------------------------------------------------------------------------- configurations
def build(cls, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize(cls(**kw).double())


CONFIGS = {
    "gla": (GatedLinearAttention, dict(hidden_size=D, num_heads=4)),
    "gla_gqa_conv_fmap": (GatedLinearAttention, dict(hidden_size=D, num_heads=4, num_kv_heads=2, use_short_conv=True,
                                                     conv_bias=True, feature_map="relu", gate_low_rank_dim=8,
                                                     clamp_min=-0.05)),
    "gla_unfused_sigmoid_gate": (GatedLinearAttention, dict(hidden_size=D, num_heads=2, fuse_norm=False,
                                                         gate_fn="sigmoid", feature_map="gelu", expand_k=1.0)),
    "gla_fused_chunk_no_gate": (GatedLinearAttention, dict(mode="fused_chunk", hidden_size=D, num_heads=4,
                                                         use_output_gate=False, elementwise_affine=False)),
    "sgla": (SimpleGatedLinearAttention, dict(hidden_size=D, num_heads=4, conv_size=3)),
    "sgla_gqa": (SimpleGatedLinearAttention, dict(hidden_size=D, num_heads=4, num_kv_heads=2, expand_k=0.5,
                                                  conv_bias=True, feature_map="sqrelu", gate_fn="swish",
                                                  fuse_norm=False)),
    "sgla_noconv": (SimpleGatedLinearAttention, dict(hidden_size=D, num_heads=2, use_short_conv=False,
                                                     gate_logit_normalizer=4)),
    "lightning": (LightningAttention, dict(hidden_size=D, num_heads=4, layer_idx=1, num_layers=4)),
    "deltanet": (DeltaNet, dict(hidden_size=D, num_heads=4)),
    "deltanet_elu_sum_gate": (DeltaNet, dict(hidden_size=D, num_heads=2, qk_activation="elu", qk_norm="sum",
                                             use_gate=True, conv_bias=True, expand_v=2)),
    "deltanet_relu_nobeta_neg": (DeltaNet, dict(hidden_size=D, num_heads=4, qk_activation="relu", use_beta=False,
                                                allow_neg_eigval=True, expand_k=0.5)),
    "deltanet_identity_noconv": (DeltaNet, dict(hidden_size=D, num_heads=4, qk_activation="identity",
                                                use_short_conv=False)),
    "gdn": (GatedDeltaNet, dict(hidden_size=D, head_dim=8, num_heads=2)),
    "gdn_gva_neg_nogate": (GatedDeltaNet, dict(hidden_size=D, head_dim=8, num_heads=2, num_v_heads=4, expand_v=1,
                                               use_gate=False, allow_neg_eigval=True, conv_bias=True)),
    "gdn_noconv": (GatedDeltaNet, dict(hidden_size=D, head_dim=6, num_heads=2, expand_v=1.5,
                                       use_short_conv=False)),
}
NAMES = list(CONFIGS)


def make(name):
    cls, kw = CONFIGS[name]
    return build(cls, **kw)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [70, 13], ids=["chunk", "recurrent"])
def test_forward_and_backward_match_reference(name, T):
    layer = make(name).eval()  # eval: GatedDeltaNet switches to its recurrent kernel at T <= 64 only then
    x = torch.randn(2, T, D, dtype=torch.float64, requires_grad=True)
    o, attn, cache = layer(x)
    assert attn is None and cache is None
    params = [p for p in layer.parameters()]
    w = torch.randn_like(o)
    grads = torch.autograd.grad((o * w).sum(), [x] + params)
    expected = reference(layer, x)
    assert_close(o, expected, name=name, **TOL)
    expected_grads = torch.autograd.grad((expected * w).sum(), [x] + params)
    names = ["x"] + [n for n, _ in layer.named_parameters()]
    for n, got, want in zip(names, grads, expected_grads):
        assert_close(got, want, atol=1e-8, rtol=1e-8, name=f"{name}: grad of {n}")


@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "sgla", "deltanet", "gdn"])
def test_training_mode_chunk_kernels(name):
    # In training GatedDeltaNet uses the chunked kernel at every length; the others switch at T <= 64 as in fla.
    layer = make(name).train()
    x = torch.randn(1, 9, D, dtype=torch.float64)
    assert_close(layer(x)[0], reference(layer, x), name=name, **TOL)


@pytest.mark.parametrize("fmap", sorted(FEATURE_MAPS))
def test_every_feature_map(fmap):
    layer = build(GatedLinearAttention, hidden_size=D, num_heads=2, feature_map=fmap)
    x = torch.randn(1, 7, D, dtype=torch.float64)
    assert_close(layer(x)[0], reference(layer, x), name=fmap, **TOL)


def padding_mask(B, T):
    """Left padding, right padding and a hole: every row has real tokens at different places."""
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :5] = 0
    mask[1, T - 7:] = 0
    if B > 2:
        mask[2, 10:13] = 0
    return mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [72, 20], ids=["chunk", "recurrent"])
def test_attention_mask(name, T):
    layer = make(name).eval()
    x = torch.randn(3, T, D, dtype=torch.float64)
    mask = padding_mask(3, T)
    o, _, _ = layer(x, attention_mask=mask)
    assert_close(o, reference(layer, x, attention_mask=mask), name=name, **TOL)
    # a longer [B, past + T] mask: only its last T columns describe hidden_states
    longer = torch.cat([torch.randint(0, 2, (3, 4)), mask], 1)
    assert torch.equal(layer(x, attention_mask=longer)[0], o)
    if not isinstance(layer, SimpleGatedLinearAttention):
        # padding is removed: each row equals that row's real tokens run alone
        assert_close(o[0, 5:], layer(x[:1, 5:])[0][0], name=name, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_cu_seqlens(name):
    layer = make(name).eval()
    cu = torch.tensor([0, 30, 31, 100, 140])
    x = torch.randn(1, 140, D, dtype=torch.float64)
    o, _, _ = layer(x, cu_seqlens=cu)
    assert_close(o, reference(layer, x, cu_seqlens=cu), name=name, **TOL)


def decode(layer, x, prefill, cache, mask=None, **kw):
    """Prefill the first `prefill` tokens, then one token at a time through the cache."""
    T = x.shape[1]
    m = None if mask is None else mask[:, :prefill]
    out, _, cache = layer(x[:, :prefill], attention_mask=m, past_key_values=cache, use_cache=True, **kw)
    pieces = [out]
    for t in range(prefill, T):
        m = None if mask is None else mask[:, :t + 1]
        o, _, cache = layer(x[:, t:t + 1], attention_mask=m, past_key_values=cache, use_cache=True, **kw)
        pieces.append(o)
    return torch.cat(pieces, 1), cache


@pytest.mark.parametrize("name", NAMES)
def test_decode_equals_full_forward(name):
    layer = make(name).eval()
    x = torch.randn(2, 75, D, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)[0]
        got, cache = decode(layer, x, 40, None)  # a StateCache is created on the first use_cache call
        slot = layer.layer_idx or 0
        assert isinstance(cache, StateCache) and cache.get_seq_length(slot) == 75
        assert_close(got, full, name=name, **TOL)
        state = cache.states[slot][0]
        assert isinstance(state, LinearAttentionState) and state.recurrent.shape[0] == 2
        # a plain dict works as well; a layer_idx picks the slot
        layer.layer_idx = 3
        cache = {}
        got, cache = decode(layer, x, 70, cache)
        assert list(cache) == [3]
        assert_close(got, full, name=name, **TOL)


@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "sgla", "lightning", "deltanet_elu_sum_gate", "gdn"])
def test_decode_with_left_padding(name):
    layer = make(name).eval()
    x = torch.randn(3, 50, D, dtype=torch.float64)
    mask = torch.ones(3, 50, dtype=torch.long)
    mask[0, :6] = 0
    mask[2, :2] = 0
    with torch.no_grad():
        full = layer(x, attention_mask=mask)[0]
        got, _ = decode(layer, x, 20, None, mask=mask)
    assert_close(got, full, name=name, **TOL)


@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "sgla", "deltanet", "gdn"])
def test_fully_padded_row_and_padded_decode_step(name):
    # An all-padding row is an empty sequence (zero output, state untouched); a decode step whose token is padding
    # changes nothing for that row, exactly as in the full forward with the same mask.
    layer = make(name).eval()
    x = torch.randn(2, 70, D, dtype=torch.float64)
    mask = torch.ones(2, 70, dtype=torch.long)
    mask[1] = 0
    o = layer(x, attention_mask=mask)[0]
    assert_close(o[:1], reference(layer, x[:1]), name=name, **TOL)
    assert torch.equal(o[1], torch.zeros_like(o[1]))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[0, 25] = 0
    with torch.no_grad():
        full = layer(x[:, :30], attention_mask=mask)[0]
        got, _ = decode(layer, x[:, :30], 20, None, mask=mask)
    assert_close(got, full, name=name, **TOL)


@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "sgla", "deltanet", "gdn_gva_neg_nogate"])
def test_decode_varlen(name):
    # Three packed sequences prefilled with cu_seqlens, then one token per sequence per step (B = 1, T = 3).
    layer = make(name).eval()
    lens, steps = [20, 3, 33], 6
    seqs = [torch.randn(n + steps, D, dtype=torch.float64) for n in lens]
    with torch.no_grad():
        full = [layer(s[None])[0][0] for s in seqs]
        cu = torch.tensor([0, 20, 23, 56])
        prefill = torch.cat([s[:n] for s, n in zip(seqs, lens)])[None]
        o, _, cache = layer(prefill, cu_seqlens=cu, use_cache=True)
        assert_close(o, torch.cat([f[:n] for f, n in zip(full, lens)])[None], name=name, **TOL)
        for t in range(steps):
            step = torch.stack([s[n + t] for s, n in zip(seqs, lens)])[None]
            o, _, cache = layer(step, cu_seqlens=torch.arange(4), past_key_values=cache, use_cache=True)
            assert_close(o[0], torch.stack([f[n + t] for f, n in zip(full, lens)]), name=name, **TOL)


def test_transformers_cache():
    transformers = pytest.importorskip("transformers")
    layers = [make("gla_gqa_conv_fmap").eval(), make("gdn").eval()]
    for i, layer in enumerate(layers):
        layer.layer_idx = i
    x = torch.randn(2, 30, D, dtype=torch.float64)
    with torch.no_grad():
        full = [layer(x)[0] for layer in layers]
        cache = transformers.DynamicCache()
        outs = [[] for _ in layers]
        for t0, t1 in [(0, 12)] + [(t, t + 1) for t in range(12, 30)]:
            for i, layer in enumerate(layers):
                o, _, cache = layer(x[:, t0:t1], past_key_values=cache, use_cache=True)
                outs[i].append(o)
        assert cache.get_seq_length(0) == 30
        for i in range(2):
            assert_close(torch.cat(outs[i], 1), full[i], **TOL)


def test_cache_is_read_without_use_cache():
    # As in fla: past_key_values is read even when use_cache=False (the cache is then left as it was).
    layer = make("deltanet").eval()
    x = torch.randn(1, 30, D, dtype=torch.float64)
    with torch.no_grad():
        _, _, cache = layer(x[:, :20], use_cache=True)
        before = cache.states[0][0].recurrent.clone()
        o, _, _ = layer(x[:, 20:], past_key_values=cache)
        assert torch.equal(cache.states[0][0].recurrent, before)
        assert_close(o, layer(x)[0][:, 20:], **TOL)


def test_gradcheck_tiny_layers():
    for name, cls, kw in [("gla", GatedLinearAttention, dict(hidden_size=8, num_heads=2, use_short_conv=True,
                                                            gate_low_rank_dim=4)),
                          ("gdn", GatedDeltaNet, dict(hidden_size=8, head_dim=4, num_heads=1, num_v_heads=2))]:
        layer = build(cls, **kw)
        x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
        mask = torch.tensor([[0, 1, 1, 1, 1]])
        assert torch.autograd.gradcheck(lambda t: layer(t, attention_mask=mask)[0], (x,)), name


# ----------------------------------------------------------------------------------------------------- bad inputs
def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        GatedLinearAttention(mode="parallel")
    with pytest.raises(ValueError, match="mode must be one of"):
        SimpleGatedLinearAttention(mode="fused_chunk")
    with pytest.raises(NotImplementedError, match="fused_chunk"):
        DeltaNet(mode="fused_chunk")
    with pytest.raises(ValueError, match="mode must be one of"):
        GatedDeltaNet(mode="fused_chunk")
    with pytest.raises(ValueError, match="num_heads 4 must be a multiple of num_kv_heads 3"):
        GatedLinearAttention(hidden_size=48, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="must be divisible by num_heads 3"):
        SimpleGatedLinearAttention(hidden_size=32, num_heads=3)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        GatedLinearAttention(hidden_size=32, feature_map="elu")
    with pytest.raises(ValueError, match="bias_gelu"):
        SimpleGatedLinearAttention(hidden_size=32, gate_fn="bias_gelu")
    with pytest.raises(ValueError, match="qk_activation"):
        DeltaNet(hidden_size=32, qk_activation="tanh")
    with pytest.raises(ValueError, match="qk_norm"):
        DeltaNet(hidden_size=32, qk_norm="l1")
    with pytest.raises(ValueError, match="num_v_heads=3 must be a multiple of num_heads=2"):
        GatedDeltaNet(hidden_size=32, head_dim=8, num_heads=2, num_v_heads=3)
    with pytest.raises(ValueError, match="must be an integer"):
        GatedDeltaNet(hidden_size=32, head_dim=5, num_heads=2, expand_v=0.5)
    with pytest.warns(UserWarning, match="use_short_conv=False"):
        DeltaNet(hidden_size=32, use_short_conv=False)
    with pytest.raises(ValueError, match="layer_idx"):
        LightningAttention(hidden_size=32, num_layers=4)


def test_bad_forward_arguments():
    layer = make("gla_gqa_conv_fmap")
    x = torch.randn(2, 6, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"hidden_states must be \[B, T, hidden_size=32\]"):
        layer(torch.randn(2, 6, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="attention_mask must be a 0/1 padding mask"):
        layer(x, attention_mask=torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match="attention_mask must be a 0/1 padding mask"):
        layer(x, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="batch size must be 1"):
        layer(x, cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        layer(x[:1], cu_seqlens=torch.tensor([0, 4, 5]))
    with pytest.raises(ValueError, match="either cu_seqlens or attention_mask"):
        layer(x[:1], cu_seqlens=torch.tensor([0, 6]), attention_mask=torch.ones(1, 6))
    with pytest.raises(TypeError, match="past_key_values"):
        layer(x, state=torch.zeros(2, 4, 4, 8))
    with pytest.raises(ValueError, match="cannot be combined"):
        make("sgla")(x[:1], cu_seqlens=torch.tensor([0, 6]), attention_mask=torch.ones(1, 6))
    _, _, cache = layer(x, use_cache=True)
    with pytest.raises(ValueError, match="cached state holds 2 sequences but this call has 3"):
        layer(torch.randn(3, 1, D, dtype=torch.float64), past_key_values=cache, use_cache=True)
    with pytest.raises(TypeError, match="LinearAttentionState"):
        layer(x, past_key_values={0: (torch.zeros(1),)})


@pytest.mark.parametrize("inputs", ["padding_mask", "cu_seqlens"])
@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "sgla", "deltanet", "gdn"])
def test_compile_fullgraph_with_padding_and_varlen(name, inputs):
    """Packed-sequence training and padded batches trace into one graph (no value reads of cu_seqlens, gates
    differentiable under data-dependent row counts); outputs and every gradient equal eager mode."""
    torch._dynamo.reset()
    layer = make(name).train()
    if inputs == "cu_seqlens":
        x, kw = torch.randn(1, 75, D, dtype=torch.float64), dict(cu_seqlens=torch.tensor([0, 30, 31, 75]))
    else:
        x, kw = torch.randn(3, 26, D, dtype=torch.float64), dict(attention_mask=padding_mask(3, 26))

    def run(fn):
        xin = x.clone().requires_grad_()
        o = fn(xin, **kw)[0]
        grads = torch.autograd.grad(o.sin().sum(), [xin] + list(layer.parameters()))
        return o, grads

    o_e, g_e = run(layer)
    o_c, g_c = run(torch.compile(layer, fullgraph=True))
    assert_close(o_c, o_e, name=name, atol=1e-10, rtol=1e-10)
    for n, a, b in zip(["x"] + [n for n, _ in layer.named_parameters()], g_c, g_e):
        assert_close(a, b, name=f"{name}: grad of {n}", atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", ["gla_gqa_conv_fmap", "gdn"])
def test_torch_export_with_dynamic_length(name):
    """torch.export captures the layer (the ops are opaque with Meta kernels) and the exported program runs at
    another length, equal to eager; lengths above 64 keep eval mode on the chunk kernels (fla's switch)."""
    layer = make(name).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)[0]

    wrapped = Wrapped(layer)
    program = torch.export.export(wrapped, (torch.randn(2, 70, D, dtype=torch.float64),),
                                  dynamic_shapes={"x": {1: torch.export.Dim("T", min=65, max=8192)}})
    x = torch.randn(2, 131, D, dtype=torch.float64)
    assert_close(program.module()(x), wrapped(x), name=name, atol=1e-12, rtol=1e-12)
