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
    "parallel_simple_gla": ("simple_gla", ["q", "k", "v", "g", "scale", "output_attentions", "cu_seqlens",
                                           "cu_seqlens_cpu"], True),
    "parallel_retention": ("retention", ["q", "k", "v", "scale", "output_attentions", "cu_seqlens"], True),
    "chunk_linear_attn": ("linear_attn", ["q", "k", "v"] + _GLA_TAIL + ["normalize", "cu_seqlens"], False),
    "fused_chunk_linear_attn": ("linear_attn", ["q", "k", "v"] + _GLA_TAIL + ["normalize", "cu_seqlens"], False),
    "fused_recurrent_linear_attn": ("linear_attn", ["q", "k", "v"] + _GLA_TAIL + ["reverse", "normalize",
                                                                                  "cu_seqlens"], False),
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


def test_layers_namespace():
    import linattn.fla.layers as fla_layers
    for name in ("DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "MomAttention", "SimpleGatedLinearAttention"):
        assert getattr(fla_layers, name) is getattr(linattn.layers, name)


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


def _attention_loop(q, k, log_decay, scale):
    """A[b, h, i, j] = scale q_i . k_j prod_{t = j+1..i} e^{log_decay[b, t, h]} for j <= i, token by token."""
    B, T, H, _ = q.shape
    A = torch.zeros(B, H, T, T, dtype=D64)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for j in range(i + 1):
                    A[b, h, i, j] = scale * (q[b, i, h] @ k[b, j, h]) * math.exp(log_decay[b, j + 1:i + 1, h].sum())
    return A


def test_parallel_simple_gla_outputs_and_attention_weights():
    B, T, H, K, V = 2, 19, 2, 5, 3
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    g = -torch.rand(B, T, H, dtype=D64) * 3
    o, attn = fla_ops.parallel_simple_gla(q, k, v, g, 0.6, True)  # fla's positional order
    assert_close(o, gla_recurrence(q, k, v, g, scale=0.6)[0], name="o", **TOL)
    assert_close(attn, _attention_loop(q, k, g, 0.6), name="attn", **TOL)
    assert_close(torch.einsum("bhij,bjhv->bihv", attn, v), o, name="attn @ v", **TOL)
    assert fla_ops.parallel_simple_gla(q, k, v, g)[1] is None
    cu, Tn, _ = _varlen()
    qv, kv, vv, gv = _rand(1, Tn, H, K), _rand(1, Tn, H, K), _rand(1, Tn, H, V), -torch.rand(1, Tn, H, dtype=D64)
    o, attn = fla_ops.parallel_simple_gla(qv, kv, vv, gv, cu_seqlens=cu)
    assert attn is None
    assert_close(o, gla_recurrence(qv, kv, vv, gv, cu_seqlens=cu)[0], name="varlen o", **TOL)
    with pytest.raises(ValueError, match="output_attentions=True is not supported with cu_seqlens"):
        fla_ops.parallel_simple_gla(qv, kv, vv, gv, output_attentions=True, cu_seqlens=cu)


def test_parallel_retention():
    B, T, H, K, V = 1, 13, 3, 4, 2
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    o, attn = fla_ops.parallel_retention(q, k, v, None, True)
    gamma = _retention_gamma(H)
    assert_close(o, gla_recurrence(q, k, v, g_gamma=gamma)[0], name="o", **TOL)
    assert_close(attn, _attention_loop(q, k, gamma.expand(B, T, H), K ** -0.5), name="attn", **TOL)


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


def _linear_attn_reference(q, k, v, scale, kv0, z0, reverse, spans):
    """Unnormalised and normalised outputs, token by token per sequence: S += k v^T, z += k, o = S^T (scale q),
    o_norm = o / (scale q . z + 1e-10). spans: (batch row, bos, eos); kv0 [N, H, K, V], z0 [N, 1, H, K]."""
    o = torch.zeros(*q.shape[:3], v.shape[-1], dtype=D64)
    o_norm, kv_fin, z_fin = o.clone(), [], []
    for n, (b, bos, eos) in enumerate(spans):
        S, z = kv0[n].clone(), z0[n, 0].clone()
        order = range(eos - 1, bos - 1, -1) if reverse else range(bos, eos)
        for t in order:
            S = S + k[b, t][:, :, None] * v[b, t][:, None, :]
            z = z + k[b, t]
            o[b, t] = torch.einsum("hkv,hk->hv", S, scale * q[b, t])
            o_norm[b, t] = o[b, t] / ((scale * q[b, t] * z).sum(-1, keepdim=True) + 1e-10)
        kv_fin.append(S)
        z_fin.append(z[None])
    return o, o_norm, torch.stack(kv_fin), torch.stack(z_fin)


@pytest.mark.parametrize("name", ["chunk_linear_attn", "fused_chunk_linear_attn", "fused_recurrent_linear_attn"])
@pytest.mark.parametrize("varlen", [False, True])
def test_linear_attn_positional_normalized(name, varlen):
    H, K, V = 2, 4, 3
    if varlen:
        cu, T, N = _varlen()
        B, spans = 1, [(0, s, e) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())]
    else:
        cu, B, T, N = None, 2, 37, 2
        spans = [(b, 0, T) for b in range(B)]
    q, k, v = _rand(B, T, H, K), torch.rand(B, T, H, K, dtype=D64) + 0.1, _rand(B, T, H, V)
    q = q.abs() + 0.1  # keeps every denominator away from 0
    kv0, z0 = _rand(N, H, K, V), torch.rand(N, 1, H, K, dtype=D64)
    reverse = name == "fused_recurrent_linear_attn"
    fn = getattr(fla_ops, name)
    if reverse:  # scale, initial_state, output_final_state, reverse, normalize, cu_seqlens
        o, (kv, z) = fn(q, k, v, 0.5, (kv0, z0), True, True, True, cu)
    else:  # scale, initial_state, output_final_state, normalize, cu_seqlens
        o, (kv, z) = fn(q, k, v, 0.5, (kv0, z0), True, True, cu)
    _, o_ref, kv_ref, z_ref = _linear_attn_reference(q, k, v, 0.5, kv0, z0, reverse, spans)
    assert_close(o, o_ref, name="o", **TOL)
    assert_close(kv, kv_ref, name="kv_state", **TOL)
    assert_close(z, z_ref, name="z_state", **TOL)


def test_linear_attn_unnormalized_and_defaults():
    B, T, H, K, V = 2, 21, 2, 3, 4
    q, k, v = _rand(B, T, H, K), _rand(B, T, H, K), _rand(B, T, H, V)
    spans = [(b, 0, T) for b in range(B)]
    o_ref, _, _, _ = _linear_attn_reference(q, k, v, K ** -0.5, torch.zeros(B, H, K, V, dtype=D64),
                                            torch.zeros(B, 1, H, K, dtype=D64), False, spans)
    o, ht = linattn.fused_recurrent_linear_attn(q, k, v)  # normalize defaults to False there, as in fla
    assert ht is None
    assert_close(o, o_ref, name="o", **TOL)
    o, state = linattn.chunk_linear_attn(q, k, v, normalize=False)
    assert state is None
    assert_close(o, o_ref, name="o", **TOL)
    o, (kv, z) = linattn.chunk_linear_attn(q, k, v)  # normalize=True: the z pair comes back even without ht
    assert kv is None and z.shape == (B, 1, H, K)


def test_linear_attn_varlen_empty_sequence_keeps_its_z():
    cu = torch.tensor([0, 9, 9, 20], dtype=torch.long)
    H, K, V = 1, 3, 2
    q, k, v = _rand(1, 20, H, K).abs() + 0.1, torch.rand(1, 20, H, K, dtype=D64) + 0.1, _rand(1, 20, H, V)
    z0 = torch.rand(3, 1, H, K, dtype=D64)
    for reverse in (False, True):
        _, (_, z) = linattn.fused_recurrent_linear_attn(q, k, v, initial_state=(_rand(3, H, K, V), z0),
                                                        reverse=reverse, normalize=True, cu_seqlens=cu)
        assert_close(z[1], z0[1], name="z_state of the empty sequence", **TOL)


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_attn_gradients(reverse):
    cu = torch.tensor([0, 4, 4, 9], dtype=torch.long)
    H, K, V = 2, 3, 2
    q = (_rand(1, 9, H, K).abs() + 0.5).requires_grad_(True)
    k = (torch.rand(1, 9, H, K, dtype=D64) + 0.5).requires_grad_(True)
    v = _rand(1, 9, H, V).requires_grad_(True)
    z0 = (torch.rand(3, 1, H, K, dtype=D64) + 0.5).requires_grad_(True)
    kv0 = _rand(3, H, K, V).requires_grad_(True)

    def f(q, k, v, kv0, z0):
        o, (kv, z) = linattn.fused_recurrent_linear_attn(q, k, v, None, (kv0, z0), True, reverse, True, cu)
        return o, kv, z
    assert torch.autograd.gradcheck(f, (q, k, v, kv0, z0))


def test_linear_attn_compiles_without_graph_breaks():
    cu = torch.tensor([0, 5, 12], dtype=torch.long)
    q, k, v = _rand(1, 12, 2, 3).abs() + 0.1, torch.rand(1, 12, 2, 3, dtype=D64) + 0.1, _rand(1, 12, 2, 4)
    fn = torch.compile(lambda *a: fla_ops.chunk_linear_attn(*a), fullgraph=True)
    o, (_, z) = fn(q, k, v, None, None, False, True, cu)
    _, o_loop, _, z_loop = _linear_attn_reference(q, k, v, 3 ** -0.5, torch.zeros(2, 2, 3, 4, dtype=D64),
                                                  torch.zeros(2, 1, 2, 3, dtype=D64), False,
                                                  [(0, 0, 5), (0, 5, 12)])
    assert_close(o, o_loop, name="o", **TOL)
    assert_close(z, z_loop, name="z_state", **TOL)
