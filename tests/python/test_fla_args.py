"""fla 0.5's extra keyword arguments (python/linattn/ops/_fla_args.py): state_v_first, reverse, the gate and beta
activations of the gated delta rule, lightning attention's decay, chunk_size / head_first, and the refusals.
Every value is checked against the float64 recurrences of python/linattn/reference, with the transposition, the
reversal or the activation written out here independently of the code under test."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference.delta_rule import delta_rule_recurrence
from linattn.reference.gla import gla_recurrence

from helpers import assert_close

TOL = dict(atol=1e-9, rtol=1e-9)
D64 = torch.float64


def _rand(*shape):
    return torch.randn(*shape, dtype=D64)


def _flip_each(x, spans, b_of):
    """x [B, T, ...] with every (batch row, bos, eos) span reversed in place, by explicit indexing."""
    y = x.clone()
    for n, (bos, eos) in enumerate(spans):
        b = b_of(n)
        for t in range(bos, eos):
            y[b, t] = x[b, bos + eos - 1 - t]
    return y


GLA_OPS = {
    "chunk_gla": lambda q, k, v, g, **kw: linattn.chunk_gla(q, k, v, g, **kw),
    "fused_recurrent_gla": lambda q, k, v, g, **kw: linattn.fused_recurrent_gla(q, k, v, g, **kw),
    "chunk_simple_gla": lambda q, k, v, g, **kw: linattn.chunk_simple_gla(q, k, v, g[..., 0], **kw),
    "fused_recurrent_simple_gla": lambda q, k, v, g, **kw: linattn.fused_recurrent_simple_gla(q, k, v, g[..., 0],
                                                                                              **kw),
}


def _gla_gate(name, B, T, H, K):
    g = F.logsigmoid(_rand(B, T, H, K) + 2)
    return g[..., :1].expand(B, T, H, K).contiguous() if "simple" in name else g


@pytest.mark.parametrize("name", sorted(GLA_OPS))
def test_gla_state_v_first_is_the_transposed_state(name):
    B, T, H, K, V = 2, 70, 2, 5, 7  # K != V: a layout mix-up changes shapes
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    g = _gla_gate(name, B, T, H, K)
    h0_vk = _rand(B, H, V, K)
    o, ht = GLA_OPS[name](q, k, v, g, initial_state=h0_vk, output_final_state=True, state_v_first=True)
    o_ref, ht_ref = gla_recurrence(q, k, v, g, initial_state=h0_vk.transpose(-1, -2).contiguous(),
                                   output_final_state=True)
    assert ht.shape == (B, H, V, K)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref.transpose(-1, -2), name="final_state", **TOL)


@pytest.mark.parametrize("name", ["fused_recurrent_gla", "fused_recurrent_simple_gla"])
@pytest.mark.parametrize("varlen", [False, True])
def test_gla_reverse_runs_every_sequence_backwards(name, varlen):
    H, K, V = 2, 4, 3
    if varlen:
        cu = torch.tensor([0, 3, 3, 9, 10])
        B, T = 1, 10
        spans, b_of = [(0, 3), (3, 3), (3, 9), (9, 10)], lambda n: 0
    else:
        cu = None
        B, T = 2, 9
        spans, b_of = [(0, T)] * B, lambda n: n
    N = len(spans)
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    g = _gla_gate(name, B, T, H, K)
    h0 = _rand(N, H, K, V)
    o, ht = GLA_OPS[name](q, k, v, g, initial_state=h0, output_final_state=True, reverse=True, cu_seqlens=cu)
    flip = [_flip_each(x, spans, b_of) for x in (q, k, v, g)]
    o_ref, ht_ref = gla_recurrence(*flip[:3], flip[3], initial_state=h0, output_final_state=True, cu_seqlens=cu)
    assert_close(o, _flip_each(o_ref, spans, b_of), name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


def test_gla_reverse_gradients():
    q, k, v = (_rand(1, 6, 1, 3).requires_grad_() for _ in range(3))
    g = F.logsigmoid(_rand(1, 6, 1, 3)).requires_grad_()
    cu = torch.tensor([0, 2, 6])

    def f(q, k, v, g):
        o, ht = linattn.fused_recurrent_gla(q, k, v, g, output_final_state=True, reverse=True, cu_seqlens=cu)
        return o, ht

    assert torch.autograd.gradcheck(f, (q, k, v, g))


@pytest.mark.parametrize("recurrent", [False, True])
def test_lightning_attn_is_simple_gla_with_the_layer_decay(recurrent):
    B, T, H, K, V = 2, 67, 4, 6, 5
    layer_idx, num_layers = 3, 8
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    h0 = _rand(B, H, K, V)
    slopes = torch.tensor([-(8.0 / H) * (1 - layer_idx / num_layers) * h for h in range(H)], dtype=D64)
    fn = linattn.fused_recurrent_lightning_attn if recurrent else linattn.chunk_lightning_attn
    o, ht = fn(q, k, v, layer_idx, num_layers, initial_state=h0, output_final_state=True)
    o_ref, ht_ref = gla_recurrence(q, k, v, g_gamma=slopes, initial_state=h0, output_final_state=True)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


def test_lightning_attn_bad_layers():
    q = _rand(1, 4, 2, 3)
    with pytest.raises(ValueError, match="num_layers"):
        linattn.chunk_lightning_attn(q, q, q, 0, 0)
    with pytest.raises(ValueError, match="layer_idx"):
        linattn.chunk_lightning_attn(q, q, q, 5, 4)


DELTA_OPS = {
    "chunk_delta_rule": (linattn.chunk_delta_rule, False),
    "fused_recurrent_delta_rule": (linattn.fused_recurrent_delta_rule, False),
    "chunk_gated_delta_rule": (linattn.chunk_gated_delta_rule, True),
    "fused_recurrent_gated_delta_rule": (linattn.fused_recurrent_gated_delta_rule, True),
}


def _delta_inputs(B=2, T=70, H=1, HV=2, K=5, V=7):
    q, k = _rand(B, T, H, K), F.normalize(_rand(B, T, H, K), dim=-1)
    v = _rand(B, T, HV, V)
    beta = torch.sigmoid(_rand(B, T, HV))
    g = F.logsigmoid(_rand(B, T, HV) + 3)
    return q, k, v, beta, g


@pytest.mark.parametrize("name", sorted(DELTA_OPS))
def test_delta_state_v_first_is_the_transposed_state(name):
    fn, gated = DELTA_OPS[name]
    q, k, v, beta, g = _delta_inputs()
    h0_vk = _rand(2, 2, 7, 5)
    args = (q, k, v, g, beta) if gated else (q, k, v, beta)
    o, ht = fn(*args, initial_state=h0_vk, output_final_state=True, state_v_first=True)
    o_ref, ht_ref = delta_rule_recurrence(q, k, v, beta, g if gated else None,
                                          initial_state=h0_vk.transpose(-1, -2).contiguous(), output_final_state=True)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref.transpose(-1, -2), name="final_state", **TOL)


@pytest.mark.parametrize("name", ["fused_recurrent_delta_rule", "fused_recurrent_gated_delta_rule"])
def test_delta_inplace_state_v_first_writes_the_callers_buffer(name):
    fn, gated = DELTA_OPS[name]
    q, k, v, beta, g = _delta_inputs(T=3)
    buf = _rand(2, 2, 7, 5)
    start = buf.clone()
    args = (q, k, v, g, beta) if gated else (q, k, v, beta)
    with torch.no_grad():
        o, ht = fn(*args, initial_state=buf, inplace_final_state=True, state_v_first=True)
    _, ht_ref = delta_rule_recurrence(q, k, v, beta, g if gated else None,
                                      initial_state=start.transpose(-1, -2), output_final_state=True)
    assert ht is buf
    assert_close(buf, ht_ref.transpose(-1, -2), name="buffer", **TOL)


@pytest.mark.parametrize("name", ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"])
def test_gated_delta_gate_and_beta_activations(name):
    fn, _ = DELTA_OPS[name]
    q, k, v, _, _ = _delta_inputs()
    g_raw, b_logit = _rand(2, 70, 2), _rand(2, 70, 2)
    A_log, dt_bias = _rand(2).requires_grad_(), _rand(2).requires_grad_()
    o = fn(q, k, v, g_raw, b_logit, use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias,
           use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True)[0]
    g_ref = -A_log.exp() * F.softplus(g_raw + dt_bias)
    o_ref = delta_rule_recurrence(q, k, v, 2 * torch.sigmoid(b_logit), g_ref)[0]
    assert_close(o, o_ref, name="o", **TOL)
    w = _rand(*o.shape)
    grads = torch.autograd.grad((o * w).sum(), (A_log, dt_bias))
    grads_ref = torch.autograd.grad((o_ref * w).sum(), (A_log, dt_bias))
    for got, want, n in zip(grads, grads_ref, ("dA_log", "ddt_bias")):
        assert_close(got, want, name=n, atol=1e-8, rtol=1e-8)


def test_chunk_size_is_accepted_and_does_not_change_the_result():
    q, k, v, beta, g = _delta_inputs()
    o_ref = delta_rule_recurrence(q, k, v, beta, g)[0]
    for size in (16, 32, 64):
        assert_close(linattn.chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=size)[0], o_ref, **TOL)
    with pytest.raises(ValueError, match="chunk_size"):
        linattn.chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=128)


def test_fla_arguments_linattn_cannot_honour_raise():
    q, k, v, beta, g = _delta_inputs(T=4)
    with pytest.raises(NotImplementedError, match="gv"):
        linattn.fused_recurrent_gla(q, k, v[:, :, :1], gv=g[..., None])
    with pytest.raises(NotImplementedError, match="cp_context"):
        linattn.chunk_gated_delta_rule(q, k, v, g, beta, cp_context=object())
    with pytest.raises(NotImplementedError, match="gk"):
        linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, gk=g)
    with pytest.raises(TypeError, match="no_such_arg"):
        linattn.chunk_delta_rule(q, k, v, beta, no_such_arg=1)
    with pytest.raises(ValueError, match="head_first"):
        linattn.chunk_gla(q, k, v[:, :, :1], F.logsigmoid(k), head_first=True)
    with pytest.raises(ValueError, match="allow_neg_eigval"):
        linattn.chunk_gated_delta_rule(q, k, v, g, beta, allow_neg_eigval=True)
    with pytest.raises(ValueError, match="A_log"):
        linattn.chunk_gated_delta_rule(q, k, v, g, beta, use_gate_in_kernel=True)
    with pytest.raises(ValueError, match="use_gate_in_kernel"):
        linattn.chunk_gated_delta_rule(q, k, v, g, beta, A_log=torch.zeros(2, dtype=D64))


def test_compile_fullgraph_reverse_and_state_layout():
    q, k, v = (torch.randn(1, 9, 2, 4) for _ in range(3))
    g = F.logsigmoid(torch.randn(1, 9, 2, 4))
    h0 = torch.randn(2, 2, 4, 4)
    cu = torch.tensor([0, 4, 9])

    def f(q, k, v, g, h0):
        return linattn.fused_recurrent_gla(q, k, v, g, initial_state=h0, output_final_state=True, reverse=True,
                                           state_v_first=True, cu_seqlens=cu)

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(q, k, v, g, h0)
    want = f(q, k, v, g, h0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
