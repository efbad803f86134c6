"""MomAttention: the layer against an explicit per-batch, per-memory, per-token loop built from the same weights,
gradients, decoding == full forward, untouched memories, the aux loss by hand, fla state dict names, errors."""
import pytest
import torch
import torch.nn.functional as F

from linattn.layers import MomAttention, StateCache
import linattn.layers.mom as mom_module
from linattn.layers.mom import MomState, load_balancing_loss
from linattn.reference import delta_rule_recurrence
from helpers import assert_close

D = 32


def make(**kw):
    cfg = dict(hidden_size=D, head_dim=8, num_heads=2, expand_v=2, num_memories=4, topk=2, shared_mem=True)
    cfg.update(kw)
    layer = MomAttention(**cfg).double()
    with torch.no_grad():  # larger than fla's init so that every part of the layer matters in the comparison
        for name, p in layer.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.normal_(0, 0.3)
            elif "conv1d" in name:
                p.normal_(0, 0.5)
            elif name == "o_norm.weight":
                p.uniform_(0.5, 1.5)
    return layer


def topk_loop(p, k):
    order = sorted(range(len(p)), key=lambda e: (-p[e].item(), e))[:k]
    return order, [p[e] / sum(p[j] for j in order) for e in order]


def naive(layer, x):
    """Routing, per-memory short convolution from zero state and gated DeltaNet, token by token."""
    B, T, _ = x.shape
    H, K, Vd, W = layer.num_heads, layer.head_dim, layer.head_v_dim, layer.conv_size
    probs = layer.gate(x).double().softmax(-1)

    def conv(pre, module):
        if not layer.use_short_conv:
            return F.silu(pre)
        rows = []
        for j in range(pre.shape[0]):
            acc = module.bias.clone() if module.bias is not None else torch.zeros_like(pre[0])
            for d in range(W):
                if j - d >= 0:
                    acc = acc + module.weight[:, 0, W - 1 - d] * pre[j - d]
            rows.append(F.silu(acc))
        return torch.stack(rows) if rows else pre

    def memory(xm, kp, vp, bp, ap):
        L = xm.shape[0]
        q = conv(layer.q_proj(xm), getattr(layer, "q_conv1d", None)).view(1, L, H, K)
        k = conv(kp(xm), getattr(layer, "k_conv1d", None)).view(1, L, H, K)
        v = conv(vp(xm), getattr(layer, "v_conv1d", None)).view(1, L, H, Vd)
        beta = torch.sigmoid(bp(xm))[None]
        g = (-layer.A_log.exp() * F.softplus(ap(xm) + layer.dt_bias))[None]
        o, _ = delta_rule_recurrence(q, k, v, beta, g, use_qk_l2norm_in_kernel=True)
        return o[0].reshape(L, H * Vd)

    def projections(e):
        if layer.single_kv_proj or e == "shared":
            return layer.shared_k, layer.shared_v, layer.shared_b, layer.shared_a
        return layer.k_proj[e], layer.v_proj[e], layer.b_proj[e], layer.a_proj[e]

    out = torch.zeros(B, T, H * Vd, dtype=x.dtype)
    for b in range(B):
        routes = [topk_loop(probs[b, t], layer.topk) for t in range(T)]
        for e in range(layer.num_memories):
            ts = [t for t in range(T) if e in routes[t][0]]
            if not ts:
                continue
            o = memory(x[b, ts], *projections(e))
            for j, t in enumerate(ts):
                out[b, t] = out[b, t] + routes[t][1][routes[t][0].index(e)] * o[j]
        if layer.shared_mem:
            out[b] = out[b] + memory(x[b], *projections("shared"))
    o = out.view(B, T, H, Vd)
    o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + layer.norm_eps) * layer.o_norm.weight
    if layer.use_output_gate:
        o = o * F.silu(layer.g_proj(x).view(B, T, H, Vd))
    return layer.o_proj(o.reshape(B, T, H * Vd))


CONFIGS = {
    "top2_shared": dict(),
    "top1_noshared_nogate": dict(topk=1, shared_mem=False, use_output_gate=False),
    "topk_eq_E": dict(num_memories=3, topk=3, conv_bias=True),
    "single_kv_proj": dict(single_kv_proj=True, shared_mem=False, conv_size=3),
    "no_conv": dict(use_short_conv=False),
}


@pytest.mark.parametrize("train", [False, True], ids=["recurrent", "chunk"])
@pytest.mark.parametrize("cfg", list(CONFIGS), ids=list(CONFIGS))
def test_matches_naive_loop(cfg, train):
    layer = make(**CONFIGS[cfg]).train(train)
    x = torch.randn(2, 19, D, dtype=torch.float64)
    o, attn, cache, logits = layer(x)
    assert attn is None and cache is None and logits.shape == (2 * 19, layer.num_memories)
    assert_close(o, naive(layer, x), atol=1e-10, rtol=1e-10, name=cfg)


def test_gradients_reach_every_parameter():
    layer = make(conv_bias=True).float().train()
    x = torch.randn(2, 24, D, requires_grad=True)
    o, _, _, logits = layer(x)
    _, idx = torch.topk(logits.softmax(-1), layer.topk)
    assert idx.unique().numel() == layer.num_memories, "every memory should receive tokens"
    (o.square().mean() + 0.1 * layer.load_balancing_loss(logits)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_match_naive_loop():
    layer = make()
    x = torch.randn(1, 13, D, dtype=torch.float64, requires_grad=True)
    kw = dict(allow_unused=True, materialize_grads=True)  # a memory may receive no token
    got = torch.autograd.grad(layer(x)[0].sin().sum(), [x, *layer.parameters()], **kw)
    want = torch.autograd.grad(naive(layer, x).sin().sum(), [x, *layer.parameters()], **kw)
    for (name, _), a, b in zip([("x", x), *layer.named_parameters()], got, want):
        assert_close(a, b, atol=1e-9, rtol=1e-8, name=name)


def decode(layer, x, prefix, cache, check_untouched=False, prefill_train=False):
    layer.train(prefill_train)
    out, _, cache, _ = layer(x[:, :prefix], past_key_values=cache, use_cache=True)
    layer.eval()
    pieces = [out]
    for t in range(prefix, x.shape[1]):
        before = _state(cache, layer)
        o, _, cache, logits = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        pieces.append(o)
        if check_untouched:
            after = _state(cache, layer)
            _, idx = torch.topk(logits.softmax(-1), layer.topk)
            for b in range(x.shape[0]):
                for e in range(layer.num_memories):
                    fields = (after.recurrent, after.conv_q, after.conv_k, after.conv_v)
                    olds = (before.recurrent, before.conv_q, before.conv_k, before.conv_v)
                    same = [torch.equal(n[b, e], p[b, e]) for n, p in zip(fields, olds)]
                    if e in idx[b].tolist():
                        assert not any(same), (t, b, e)
                    else:
                        assert all(same), (t, b, e)
                if layer.shared_mem:
                    assert not torch.equal(after.shared_recurrent[b], before.shared_recurrent[b])
    return torch.cat(pieces, 1), cache


def _state(cache, layer):
    if isinstance(cache, dict):
        return cache[layer.layer_idx or 0]
    if isinstance(cache, StateCache):
        return cache.states[layer.layer_idx or 0][0]
    return cache.layers[layer.layer_idx or 0].linattn_state


def test_decode_equals_full_forward_and_untouched_memories_float64():
    layer = make(conv_bias=True, layer_idx=1).eval()
    x = torch.randn(2, 30, D, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)[0]
        got, cache = decode(layer, x, 11, StateCache(), check_untouched=True)
    assert_close(got, full, atol=1e-10, rtol=1e-10)
    assert cache.get_seq_length(1) == 30
    st = cache.states[1][0]
    assert isinstance(st, MomState)
    assert st.recurrent.shape == (2, 4, 2, 8, 16) and st.recurrent.dtype == torch.float64
    assert st.conv_q.shape == (2, 4, 16, 3) and st.conv_v.shape == (2, 4, 32, 3)
    assert st.shared_recurrent.shape == (2, 1, 2, 8, 16) and st.shared_conv_k.shape == (2, 1, 16, 3)


@pytest.mark.parametrize("cfg", ["top1_noshared_nogate", "no_conv", "topk_eq_E"])
def test_decode_equals_full_forward_float32_chunk_prefill(cfg):
    layer = make(**CONFIGS[cfg]).float()
    x = torch.randn(2, 26, D)
    with torch.no_grad():
        full = layer.eval()(x)[0]
        got, _ = decode(layer, x, 9, {}, check_untouched=cfg != "no_conv", prefill_train=True)
    assert_close(got, full, atol=1e-4, rtol=1e-4)


def test_decode_with_transformers_cache():
    DynamicCache = pytest.importorskip("transformers").DynamicCache
    layer = make(layer_idx=0).eval()
    x = torch.randn(1, 14, D, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)[0]
        got, cache = decode(layer, x, 5, DynamicCache())
    assert_close(got, full, atol=1e-10, rtol=1e-10)
    assert cache.get_seq_length(0) == 14


def test_padding_mask_and_varlen_equal_separate_sequences():
    layer = make().eval()
    lengths = [17, 9, 12]
    seqs = [torch.randn(1, n, D, dtype=torch.float64) for n in lengths]
    with torch.no_grad():
        alone = [layer(s)[0] for s in seqs]
        # A padding mask with holes anywhere: padded tokens are skipped, not zeroed.
        T = 20
        x = torch.randn(3, T, D, dtype=torch.float64)
        mask = torch.zeros(3, T, dtype=torch.long)
        where = [torch.sort(torch.randperm(T)[:n]).values for n in lengths]
        for b, pos in enumerate(where):
            x[b, pos] = seqs[b][0]
            mask[b, pos] = 1
        o, _, _, logits = layer(x, attention_mask=mask)
        for b, pos in enumerate(where):
            assert_close(o[b, pos], alone[b][0], atol=1e-10, rtol=1e-10, name=f"mask row {b}")
        assert logits.shape == (3 * T, layer.num_memories)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
        o, _, _, logits = layer(torch.cat(seqs, 1), cu_seqlens=cu)
        assert_close(o, torch.cat(alone, 1), atol=1e-10, rtol=1e-10, name="varlen")
        assert logits.shape == (sum(lengths), layer.num_memories)


@pytest.mark.parametrize("many_sequences", [False, True], ids=["packed_dispatch", "padded_fallback"])
def test_varlen_prefill_then_batched_decode_equals_separate_sequences(many_sequences, monkeypatch):
    """cu_seqlens: memories see (memory, sequence) pairs; with more pairs than the CUDA dispatch takes, the layer
    pads the sequences into rows instead. Either way each sequence equals its own run, and the cache (one state
    per sequence) continues as a batch of rows."""
    if many_sequences:
        monkeypatch.setattr(mom_module, "_MAX_VIRTUAL_MEMORIES", 4)
    layer = make().eval()
    lengths = [11, 1, 7]
    seqs = [torch.randn(1, n + 3, D, dtype=torch.float64) for n in lengths]
    with torch.no_grad():
        alone = [layer(s)[0] for s in seqs]
        cache = StateCache()
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
        o, _, _, logits = layer(torch.cat([s[:, :n] for s, n in zip(seqs, lengths)], 1), cu_seqlens=cu,
                                past_key_values=cache, use_cache=True)
        assert logits.shape == (sum(lengths), layer.num_memories)
        for n, (s, L) in enumerate(zip(alone, lengths)):
            assert_close(o[0, int(cu[n]):int(cu[n + 1])], s[0, :L], atol=1e-10, rtol=1e-10, name=f"prefill {n}")
        for t in range(3):
            step = torch.cat([s[:, L + t:L + t + 1] for s, L in zip(seqs, lengths)], 0)
            out = layer(step, past_key_values=cache, use_cache=True)[0]
            for n, (s, L) in enumerate(zip(alone, lengths)):
                assert_close(out[n, 0], s[0, L + t], atol=1e-10, rtol=1e-10, name=f"decode {n} step {t}")


def test_left_padded_batch_decodes_like_unpadded_rows():
    layer = make().eval()
    x = torch.randn(2, 16, D, dtype=torch.float64)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        want = layer(x[1:, 5:])[0]
        cache = StateCache()
        pieces = [layer(x[:, :8], attention_mask=mask[:, :8], past_key_values=cache, use_cache=True)[0]]
        for t in range(8, 16):
            pieces.append(layer(x[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache,
                                use_cache=True)[0])
    assert_close(torch.cat(pieces, 1)[1, 5:], want[0], atol=1e-10, rtol=1e-10)


def test_aux_loss_by_hand():
    layer = make(num_memories=5, topk=2)
    x = torch.randn(2, 11, D, dtype=torch.float64)
    _, _, _, logits = layer(x)
    E, k = 5, 2
    probs = logits.detach().softmax(-1)

    def by_hand(rows):
        counts, psum = [0.0] * E, [0.0] * E
        for r in rows:
            for e in topk_loop(probs[r], k)[0]:
                counts[e] += 1
            for e in range(E):
                psum[e] += probs[r, e].item()
        return E * sum(counts[e] / len(rows) * psum[e] / len(rows) for e in range(E))

    assert abs(layer.load_balancing_loss(logits).item() - by_hand(range(22))) < 1e-12
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :4] = 0
    rows = [r for r in range(22) if mask.view(-1)[r]]
    assert abs(layer.load_balancing_loss(logits, mask).item() - by_hand(rows)) < 1e-12
    # several layers: the tokens of all layers pooled, as fla's model computes it
    two = load_balancing_loss((logits, logits.flip(0)), E, k)
    assert abs(two.item() - by_hand(range(22))) < 1e-12
    # uniform router with k = E: f_e = 1, P_e = 1/E -> loss = E
    assert abs(load_balancing_loss(torch.zeros(8, E, dtype=torch.float64), E, E).item() - E) < 1e-12


# fla's MomAttention(hidden_size=32, head_dim=8, num_heads=2, expand_v=2, num_memories=3, topk=2,
# shared_mem=True, conv_size=4): key_dim 16, value_dim 32, head_v_dim 16.
FLA_KEYS_SHARED = {
    "A_log": (2,), "dt_bias": (2,),
    "q_proj.weight": (16, 32), "gate.weight": (3, 32),
    **{f"k_proj.{i}.weight": (16, 32) for i in range(3)},
    **{f"v_proj.{i}.weight": (32, 32) for i in range(3)},
    **{f"b_proj.{i}.weight": (2, 32) for i in range(3)},
    **{f"a_proj.{i}.weight": (2, 32) for i in range(3)},
    "shared_k.weight": (16, 32), "shared_v.weight": (32, 32), "shared_b.weight": (2, 32), "shared_a.weight": (2, 32),
    "q_conv1d.weight": (16, 1, 4), "k_conv1d.weight": (16, 1, 4), "v_conv1d.weight": (32, 1, 4),
    "g_proj.weight": (32, 32), "o_norm.weight": (16,), "o_proj.weight": (32, 32),
}
# ... with single_kv_proj=True, use_output_gate=False, conv_bias=True, conv_size=2.
FLA_KEYS_SINGLE = {
    "A_log": (2,), "dt_bias": (2,), "q_proj.weight": (16, 32), "gate.weight": (3, 32),
    "shared_k.weight": (16, 32), "shared_v.weight": (32, 32), "shared_b.weight": (2, 32), "shared_a.weight": (2, 32),
    "q_conv1d.weight": (16, 1, 2), "q_conv1d.bias": (16,), "k_conv1d.weight": (16, 1, 2), "k_conv1d.bias": (16,),
    "v_conv1d.weight": (32, 1, 2), "v_conv1d.bias": (32,), "o_norm.weight": (16,), "o_proj.weight": (32, 32),
}


@pytest.mark.parametrize("keys,kw", [
    (FLA_KEYS_SHARED, dict(shared_mem=True)),
    (FLA_KEYS_SINGLE, dict(single_kv_proj=True, use_output_gate=False, conv_bias=True, conv_size=2)),
], ids=["shared_mem", "single_kv_proj"])
def test_strict_load_of_fla_state_dict(keys, kw):
    layer = MomAttention(hidden_size=32, head_dim=8, num_heads=2, expand_v=2, num_memories=3, topk=2, **kw)
    sd = {name: torch.randn(shape) for name, shape in keys.items()}
    layer.load_state_dict(sd, strict=True)
    assert list(layer.state_dict()) == list(keys)  # same registration order as fla
    for name, t in layer.state_dict().items():
        assert torch.equal(t, sd[name]), name
    o, _, _, _ = layer(torch.randn(2, 6, 32))
    assert torch.isfinite(o).all()


def test_short_convolution_against_conv1d():
    from linattn.layers.mom import ShortConvolution

    conv = ShortConvolution(6, 4, bias=True).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)

    def causal(z):  # z [T, C] -> silu(causal conv), by torch's conv1d
        return F.silu(F.conv1d(z.t()[None], conv.weight, conv.bias, padding=3, groups=6)[0, :, :z.shape[0]].t())

    assert_close(conv(x), torch.stack([causal(x[0]), causal(x[1])]), atol=1e-12, rtol=1e-12)
    # packed with initial states (one empty sequence): the same as convolving [state, x] and dropping the state
    lengths = [5, 0, 2]
    rows = torch.randn(sum(lengths), 6, dtype=torch.float64)
    init = torch.randn(3, 6, 3, dtype=torch.float64)
    y, final = conv.packed(rows, torch.tensor([0, 5, 5, 7]), init)
    start = 0
    for n, L in enumerate(lengths):
        full = torch.cat([init[n].t(), rows[start:start + L]])
        assert_close(y[start:start + L], causal(full)[3:], atol=1e-12, rtol=1e-12)
        assert torch.equal(final[n], full[-3:].t())
        start += L


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"topk must be in \[1, num_memories=3\], got 4"):
        MomAttention(32, 8, 2, num_memories=3, topk=4)
    with pytest.raises(ValueError, match="mode must be"):
        MomAttention(32, 8, 2, num_memories=3, mode="parallel")
    layer = make()
    with pytest.raises(ValueError, match="hidden_states must be"):
        layer(torch.randn(2, 5, D + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="attention_mask must be"):
        layer(torch.randn(2, 5, D, dtype=torch.float64), attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("inputs", ["dense", "padding_mask", "cu_seqlens"])
def test_compile_fullgraph_equals_eager(inputs):
    """The whole layer (routing, grouped projections, packed convolutions, gated DeltaNet, combine, cache update)
    traces into one graph; outputs, the new cache and the gradients equal eager mode."""
    torch._dynamo.reset()
    layer = make(num_memories=3).float().train()
    x = torch.randn(2, 21, D)
    kw = {}
    if inputs == "padding_mask":
        kw["attention_mask"] = torch.ones(2, 21, dtype=torch.long)
        kw["attention_mask"][1, :5] = 0  # left padding
    elif inputs == "cu_seqlens":
        x, kw["cu_seqlens"] = x.view(1, 42, D), torch.tensor([0, 13, 14, 42])

    def run(fn):
        xin = x.clone().requires_grad_()
        cache = StateCache()
        o, _, cache, logits = fn(xin, past_key_values=cache, use_cache=True, **kw)
        (o.square().sum() + logits.sum()).backward()
        state = cache.states[0][0]
        grads = [xin.grad] + [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        return o.detach(), state, grads

    o_e, s_e, g_e = run(layer)
    o_c, s_c, g_c = run(torch.compile(layer, fullgraph=True))
    assert_close(o_c, o_e, atol=2e-5, rtol=2e-5)
    for a, b in zip(s_c, s_e):
        assert_close(a, b, atol=2e-5, rtol=2e-5)
    for a, b in zip(g_c, g_e):
        assert_close(a, b, atol=2e-4, rtol=2e-4)
