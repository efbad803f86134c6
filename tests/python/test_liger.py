"""Liger ops against their definitions: gate pooling, Liger attention = mix of SWA and GLA on softmax
feature maps, gradients, decode with the carried GLA state, opcheck, compile, bad input."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import gla_recurrence, sliding_window_attention_reference
from helpers import assert_close


@pytest.mark.parametrize("out_dim", [None, 8, 5, 24])
def test_liger_gate_definition(out_dim):
    k = torch.randn(2, 7, 3, 24, dtype=torch.float64, requires_grad=True)
    g = linattn.liger_gate(k, out_dim)
    pooled = k if out_dim is None else F.adaptive_avg_pool1d(k.reshape(-1, 1, 24), out_dim).reshape(2, 7, 3, out_dim)
    assert_close(g, F.logsigmoid(pooled) / 16, atol=1e-14, rtol=1e-14)
    assert torch.autograd.gradcheck(lambda k: linattn.liger_gate(k, out_dim, 8.0), (k,))


def definition(q, k, v, g, q_rot, k_rot, w, h0=None, a=0.5, b=0.5):
    lin, ht = gla_recurrence(q.softmax(-1), k.softmax(-1), v, g, scale=1.0, initial_state=h0, output_final_state=True)
    return a * sliding_window_attention_reference(q_rot, k_rot, v, w) + b * lin, ht


def make(B=2, T=80, H=2, D=8, V=6):
    q, k = torch.randn(B, T, H, D, dtype=torch.float64), torch.randn(B, T, H, D, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    g = linattn.liger_gate(k)
    q_rot, k_rot = torch.randn_like(q), torch.randn_like(k)
    return q, k, v, g, q_rot, k_rot


def test_liger_attention_matches_definition_with_gradients():
    ins = [t.requires_grad_() for t in make()]
    h0 = torch.randn(2, 2, 8, 6, dtype=torch.float64, requires_grad=True)
    o, ht = linattn.liger_attention(*ins, window_size=16, initial_state=h0, output_final_state=True,
                                    softmax_weight=0.3, linear_weight=0.7)
    ref_ins = [t.detach().clone().requires_grad_() for t in ins + [h0]]
    ro, rh = definition(*ref_ins[:6], 16, ref_ins[6], 0.3, 0.7)
    assert_close(o, ro, atol=1e-11, rtol=1e-11)
    assert_close(ht, rh, atol=1e-11, rtol=1e-11)
    w = torch.randn_like(o)
    ((o * w).sum() + ht.sum()).backward()
    ((ro * w).sum() + rh.sum()).backward()
    for a, b in zip(ins + [h0], ref_ins):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)


def test_opcheck_compile_and_bad_input():
    q, k, v, g, q_rot, k_rot = (t.float().requires_grad_() for t in make(T=40))
    f = lambda *a: linattn.liger_attention(*a, window_size=8)[0].square().sum()  # noqa: E731
    args = [q, k, v, g, q_rot, k_rot]
    eager = torch.autograd.grad(f(*args), args)
    args2 = [t.detach().clone().requires_grad_() for t in args]
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(*args2), args2)
    for a, b in zip(compiled, eager):
        assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.library.opcheck(torch.ops.linattn.liger_gate.default, (k.detach().requires_grad_(), 4, 16.0))
    with pytest.raises(RuntimeError, match="q_rot and k_rot must have the shapes of q and k"):
        linattn.liger_attention(q, k, v, g, q_rot[:, :5], k_rot)
    with pytest.raises(RuntimeError, match="out_dim must be >= 1"):
        linattn.liger_gate(k, 0)
