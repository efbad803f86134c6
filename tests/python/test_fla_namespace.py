"""linattn.fla: fla 0.5.2's module paths and positional argument orders over linattn's ops, and retention.

The parameter lists below were read from the fla-core 0.5.2 wheel (fla/ops/*/chunk.py, fused_recurrent.py,
fused_chunk.py); they are facts about fla, not output of the code under test. Positional calls are checked
against the float64 recurrences of python/linattn/reference with every argument placed where fla places it, so
an argument landing in the wrong parameter changes the numbers or the shapes."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import linattn
import linattn.fla.ops as fla_ops
from linattn.reference.delta_rule import delta_rule_recurrence
from linattn.reference.gla import gla_recurrence

from helpers import assert_close

TOL = dict(atol=1e-9, rtol=1e-9)
D64 = torch.float64

_GLA_TAIL = ["scale", "initial_state", "output_final_state"]
FLA_052 = {  # (module, positional parameter names, takes **kwargs)
    "chunk_gla": ("gla", ["q", "k", "v", "g"] + _GLA_TAIL + ["state_v_first", "cu_seqlens", "cu_seqlens_cpu"],
                  False),
    "fused_recurrent_gla": ("gla", ["q", "k", "v", "gk", "gv"] + _GLA_TAIL + ["reverse", "state_v_first",
                                                                              "cu_seqlens"], True),
    "chunk_simple_gla": ("simple_gla", ["q", "k", "v", "g", "g_gamma"] + _GLA_TAIL
                         + ["state_v_first", "cu_seqlens", "cu_seqlens_cpu"], True),
    "fused_chunk_simple_gla": ("simple_gla", ["q", "k", "v", "g", "g_gamma"] + _GLA_TAIL + ["cu_seqlens"], False),
    "fused_recurrent_simple_gla": ("simple_gla", ["q", "k", "v", "g", "g_gamma"] + _GLA_TAIL
                                   + ["reverse", "state_v_first", "cu_seqlens"], True),
    "chunk_lightning_attn": ("lightning_attn", ["q", "k", "v", "layer_idx", "num_layers"] + _GLA_TAIL
                             + ["cu_seqlens"], True),
    "fused_recurrent_lightning_attn": ("lightning_attn", ["q", "k", "v", "layer_idx", "num_layers"] + _GLA_TAIL
                                       + ["reverse", "cu_seqlens"], True),
    "chunk_retention": ("retention", ["q", "k", "v"] + _GLA_TAIL + ["cu_seqlens"], True),
    "fused_chunk_retention": ("retention", ["q", "k", "v"] + _GLA_TAIL + ["cu_seqlens"], True),
    "fused_recurrent_retention": ("retention", ["q", "k", "v"] + _GLA_TAIL + ["reverse", "state_v_first",
                                                                              "cu_seqlens"], True),
    "chunk_delta_rule": ("delta_rule", ["q", "k", "v", "beta"] + _GLA_TAIL
                         + ["use_qk_l2norm_in_kernel", "cu_seqlens", "cu_seqlens_cpu"], True),
    "fused_recurrent_delta_rule": ("delta_rule", ["q", "k", "v", "beta"] + _GLA_TAIL
                                   + ["use_qk_l2norm_in_kernel", "cu_seqlens"], False),
    "chunk_gated_delta_rule": ("gated_delta_rule", ["q", "k", "v", "g", "beta"] + _GLA_TAIL
                               + ["use_qk_l2norm_in_kernel", "use_beta_sigmoid_in_kernel", "allow_neg_eigval",
                                  "state_v_first", "cu_seqlens", "cu_seqlens_cpu", "cp_context"], True),
    "fused_recurrent_gated_delta_rule": ("gated_delta_rule", ["q", "k", "v", "g", "gk", "gv", "beta"] + _GLA_TAIL
                                         + ["use_qk_l2norm_in_kernel", "use_gate_in_kernel", "A_log", "dt_bias",
                                            "use_beta_sigmoid_in_kernel", "allow_neg_eigval", "state_v_first",
                                            "cu_seqlens"], True),
}


def _rand(*shape):
    return torch.randn(*shape, dtype=D64)


@pytest.mark.parametrize("name", sorted(FLA_052))
def test_parameter_lists_match_fla(name):
    module, params, var_kw = FLA_052[name]
    fn = getattr(getattr(fla_ops, module), name)
    assert getattr(fla_ops, name) is fn
    sig = inspect.signature(fn).parameters
    assert [p for p, s in sig.items() if s.kind != s.VAR_KEYWORD] == params
    assert any(s.kind == s.VAR_KEYWORD for s in sig.values()) == var_kw


def test_gdn_aliases():
    assert fla_ops.chunk_gdn is fla_ops.chunk_gated_delta_rule
    assert fla_ops.fused_recurrent_gdn is fla_ops.fused_recurrent_gated_delta_rule


def _varlen():
    cu = torch.tensor([0, 23, 23, 90], dtype=torch.long)
    return cu, int(cu[-1]), cu.numel() - 1


@pytest.mark.parametrize("name", ["chunk_gla", "fused_recurrent_gla"])
def test_gla_positional_state_v_first_and_cu_seqlens(name):
    cu, T, N = _varlen()
    H, K, V = 2, 5, 7
    q, k, v = _rand(1, T, H, K), _rand(1, T, H, K), _rand(1, T, H, V)
    g = F.logsigmoid(_rand(1, T, H, K) + 2)
    h0_vk = _rand(N, H, V, K)
    fn = getattr(fla_ops, name)
    if name == "chunk_gla":
        o, ht = fn(q, k, v, g, 0.3, h0_vk, True, True, cu)
    else:  # gk, gv, scale, initial_state, output_final_state, reverse, state_v_first, cu_seqlens
        o, ht = fn(q, k, v, g, None, 0.3, h0_vk, True, False, True, cu)
    o_ref, ht_ref = gla_recurrence(q, k, v, g, scale=0.3, initial_state=h0_vk.transpose(-1, -2),
                                   output_final_state=True, cu_seqlens=cu)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref.transpose(-1, -2), name="final_state", **TOL)


@pytest.mark.parametrize("name", ["chunk_simple_gla", "fused_chunk_simple_gla", "fused_recurrent_simple_gla"])
def test_simple_gla_positional(name):
    cu, T, N = _varlen()
    H, K, V = 3, 4, 6
    q, k, v = _rand(1, T, H, K), _rand(1, T, H, K), _rand(1, T, H, V)
    g = F.logsigmoid(_rand(1, T, H) + 2)
    g_gamma = -torch.rand(H, dtype=D64)
    h0 = _rand(N, H, K, V)
    fn = getattr(fla_ops, name)
    if name == "fused_chunk_simple_gla":
        o, ht = fn(q, k, v, g, g_gamma, 0.7, h0, True, cu)
        h0_ref = h0
    elif name == "chunk_simple_gla":  # ..., state_v_first, cu_seqlens
        o, ht = fn(q, k, v, g, g_gamma, 0.7, h0.transpose(-1, -2), True, True, cu)
        ht, h0_ref = ht.transpose(-1, -2), h0
    else:  # ..., reverse, state_v_first, cu_seqlens
        o, ht = fn(q, k, v, g, g_gamma, 0.7, h0.transpose(-1, -2), True, False, True, cu)
        ht, h0_ref = ht.transpose(-1, -2), h0
    o_ref, ht_ref = gla_recurrence(q, k, v, g, g_gamma, scale=0.7, initial_state=h0_ref, output_final_state=True,
                                   cu_seqlens=cu)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


def _retention_gamma(H):
    return torch.tensor([math.log(1.0 - 2.0 ** (-5 - h)) for h in range(H)], dtype=D64)


@pytest.mark.parametrize("name", ["chunk_retention", "fused_chunk_retention", "fused_recurrent_retention"])
def test_retention_is_simple_gla_with_retnet_decay(name):
    B, T, H, K, V = 2, 75, 4, 5, 3
    q, k, v, h0 = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V), _rand(B, H, K, V)
    o, ht = getattr(fla_ops, name)(q, k, v, 0.5, h0, True)
    o_ref, ht_ref = gla_recurrence(q, k, v, g_gamma=_retention_gamma(H), scale=0.5, initial_state=h0,
                                   output_final_state=True)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


@pytest.mark.parametrize("recurrent", [False, True])
def test_retention_gradients(recurrent):
    B, T, H, K, V = 1, 9, 2, 3, 2
    inputs = [_rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V), _rand(B, H, K, V)]
    for x in inputs:
        x.requires_grad_(True)
    fn = linattn.fused_recurrent_retention if recurrent else linattn.chunk_retention

    def f(q, k, v, h0):
        o, ht = fn(q, k, v, initial_state=h0, output_final_state=True)
        return o, ht
    assert torch.autograd.gradcheck(f, inputs)


def test_retention_varlen_and_reverse():
    cu, T, N = _varlen()
    H, K, V = 2, 4, 3
    q, k, v = _rand(1, T, H, K), _rand(1, T, H, K), _rand(1, T, H, V)
    o, _ = linattn.fused_recurrent_retention(q, k, v, reverse=True, cu_seqlens=cu)
    # Reversal written out here: each sequence's tokens in the opposite order, in and out.
    idx = torch.cat([torch.arange(e - 1, s - 1, -1) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())])
    o_ref, _ = gla_recurrence(q[:, idx], k[:, idx], v[:, idx], g_gamma=_retention_gamma(H), cu_seqlens=cu)
    assert_close(o, o_ref[:, idx], name="o", **TOL)


@pytest.mark.parametrize("name", ["chunk_delta_rule", "fused_recurrent_delta_rule"])
def test_delta_rule_positional(name):
    cu, T, N = _varlen()
    H, K, V = 2, 6, 5
    q, k, v = _rand(1, T, H, K), _rand(1, T, H, K), _rand(1, T, H, V)
    beta, h0 = torch.rand(1, T, H, dtype=D64), _rand(N, H, K, V)
    o, ht = getattr(fla_ops, name)(q, k, v, beta, 0.4, h0, True, True, cu)
    o_ref, ht_ref = delta_rule_recurrence(q, k, v, beta, scale=0.4, initial_state=h0, output_final_state=True,
                                          use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


def test_fused_recurrent_delta_rule_default_beta_is_one():
    B, T, H, K, V = 2, 11, 2, 4, 3
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    o, _ = fla_ops.fused_recurrent_delta_rule(q, k, v, use_qk_l2norm_in_kernel=True)
    o_ref, _ = delta_rule_recurrence(q, k, v, torch.ones(B, T, H, dtype=D64), use_qk_l2norm_in_kernel=True)
    assert_close(o, o_ref, name="o", **TOL)


def test_chunk_gated_delta_rule_positional():
    cu, T, N = _varlen()
    H, HV, K, V = 2, 4, 5, 3
    q, k, v = _rand(1, T, H, K), _rand(1, T, H, K), _rand(1, T, HV, V)
    g, beta_logit = F.logsigmoid(_rand(1, T, HV)), _rand(1, T, HV)
    h0_vk = _rand(N, HV, V, K)
    # scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel,
    # allow_neg_eigval, state_v_first, cu_seqlens
    o, ht = fla_ops.chunk_gdn(q, k, v, g, beta_logit, 0.6, h0_vk, True, True, True, True, True, cu)
    beta = 2.0 * torch.sigmoid(beta_logit)  # allow_neg_eigval: eigenvalues of I - beta k k^T in [-1, 1]
    o_ref, ht_ref = delta_rule_recurrence(q, k, v, beta, g, scale=0.6, initial_state=h0_vk.transpose(-1, -2),
                                          output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref.transpose(-1, -2), name="final_state", **TOL)


def test_fused_recurrent_gated_delta_rule_positional():
    B, T, H, K, V = 2, 13, 2, 4, 6
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    g_raw, beta = _rand(B, T, H), torch.rand(B, T, H, dtype=D64)
    A_log, dt_bias = _rand(H) * 0.3, _rand(H) * 0.3
    h0 = _rand(B, H, K, V)
    # g, gk, gv, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, use_gate_in_kernel,
    # A_log, dt_bias
    o, ht = fla_ops.fused_recurrent_gdn(q, k, v, g_raw, None, None, beta, 0.5, h0, True, True, True, A_log, dt_bias)
    g = -A_log.exp() * F.softplus(g_raw + dt_bias)
    o_ref, ht_ref = delta_rule_recurrence(q, k, v, beta, g, scale=0.5, initial_state=h0, output_final_state=True,
                                          use_qk_l2norm_in_kernel=True)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref, name="final_state", **TOL)


def test_fused_recurrent_gated_delta_rule_defaults_and_refusals():
    B, T, H, K, V = 1, 7, 2, 3, 3
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    o, _ = fla_ops.fused_recurrent_gated_delta_rule(q, k, v)  # no gate, beta 1, as in fla
    o_ref, _ = delta_rule_recurrence(q, k, v, torch.ones(B, T, H, dtype=D64))
    assert_close(o, o_ref, name="o", **TOL)
    with pytest.raises(ValueError, match="needs g"):
        fla_ops.fused_recurrent_gated_delta_rule(q, k, v, use_gate_in_kernel=True, A_log=_rand(H))
    with pytest.raises(NotImplementedError, match="gv"):
        fla_ops.fused_recurrent_gated_delta_rule(q, k, v, F.logsigmoid(_rand(B, T, H)), None, _rand(B, T, H, V))


def test_positional_call_compiles_without_graph_breaks():
    B, T, H, K, V = 1, 20, 2, 4, 4
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    g = F.logsigmoid(_rand(B, T, H, K))
    h0 = _rand(B, H, V, K)
    fn = torch.compile(lambda *a: fla_ops.chunk_gla(*a), fullgraph=True)
    o, ht = fn(q, k, v, g, None, h0, True, True)
    o_ref, ht_ref = gla_recurrence(q, k, v, g, initial_state=h0.transpose(-1, -2), output_final_state=True)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(ht, ht_ref.transpose(-1, -2), name="final_state", **TOL)
