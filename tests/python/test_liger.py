"""Liger ops against their definitions: gate pooling, Liger attention = mix of SWA and GLA on softmax
feature maps (per-key and per-head gates), gradients (C++ autograd: gradcheck in float64), opcheck of the public,
forward and backward ops, compile, bad input."""
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


def make(B=2, T=80, H=2, D=8, V=6, gate="key"):
    q, k = torch.randn(B, T, H, D, dtype=torch.float64), torch.randn(B, T, H, D, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    g = linattn.liger_gate(k) if gate == "key" else linattn.liger_gate(k, 1)[..., 0]  # [B,T,H,D] or [B,T,H]
    q_rot, k_rot = torch.randn_like(q), torch.randn_like(k)
    return q, k, v, g, q_rot, k_rot


@pytest.mark.parametrize("gate", ["key", "scalar"])
def test_liger_attention_matches_definition_with_gradients(gate):
    ins = [t.requires_grad_() for t in make(gate=gate)]
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


@pytest.mark.parametrize("gate", ["key", "scalar"])
def test_gradcheck_float64(gate):
    # T = 70: two GLA chunks; window 5; an initial state; weights other than 0.5 that do not sum to 1.
    q, k, v, g, q_rot, k_rot = make(B=1, T=70, H=1, D=4, V=3, gate=gate)
    h0 = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    ins = [t.requires_grad_() for t in (q, k, v, g, q_rot, k_rot, h0)]

    def f(q, k, v, g, q_rot, k_rot, h0):
        return linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size=5, initial_state=h0,
                                       output_final_state=True, softmax_weight=0.3, linear_weight=0.8)
    assert torch.autograd.gradcheck(f, ins)


def test_only_the_final_state_or_only_o_backpropagates():
    q, k, v, g, q_rot, k_rot = (t.requires_grad_() for t in make(T=70, gate="scalar"))
    o, ht = linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size=8, output_final_state=True)
    ht.square().sum().backward()
    ref = [t.detach().clone().requires_grad_() for t in (k, v, g)]
    _, rh = definition(q.detach(), *ref, q_rot.detach(), k_rot.detach(), 8)
    rh.square().sum().backward()
    for a, b in zip((k, v, g), ref):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)
    for t in (q, q_rot, k_rot):  # the final state does not depend on them
        assert t.grad is None or t.grad.abs().max() == 0
    q_rot.grad = None
    o, ht = linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size=8)
    assert ht is None
    o.sum().backward()
    assert torch.isfinite(q_rot.grad).all() and q_rot.grad.abs().max() > 0


def test_opcheck_of_the_forward_and_backward_ops():
    q, k, v, g, q_rot, k_rot = (t.float() for t in make(T=70))
    h0 = torch.randn(2, 2, 8, 6)
    ops = torch.ops.linattn
    leaves = [t.clone().requires_grad_() for t in (q, k, v, g, q_rot, k_rot, h0)]
    torch.library.opcheck(ops.liger_attention.default, tuple(leaves[:6]),
                          dict(window_size=9, initial_state=leaves[6], output_final_state=True, softmax_weight=0.2,
                               linear_weight=0.9))
    torch.library.opcheck(ops.liger_attention.default, (q, k, v, g[..., 0], q_rot, k_rot), dict(window_size=3))
    fwd_args = (q, k, v, g, q_rot, k_rot, 9, h0, True, 0.2, 0.9)
    torch.library.opcheck(ops._liger_attention_forward.default, fwd_args)
    _, ht, o_win, lse, qf, kf = ops._liger_attention_forward(*fwd_args)
    do, dht = torch.randn_like(o_win), torch.randn_like(ht)
    torch.library.opcheck(ops._liger_attention_backward.default,
                          (qf, kf, v, g, q_rot, k_rot, o_win, lse, do, dht, 9, h0, 0.2, 0.9))
    torch.library.opcheck(ops._liger_attention_backward.default,
                          (qf, kf, v, g[..., 0], q_rot, k_rot, o_win, lse, do, None, 9, None, 0.2, 0.9))


def test_compile_fullgraph_with_state_and_scalar_gate():
    q, k, v, g, q_rot, k_rot = (t.float() for t in make(T=70, gate="scalar"))
    h0 = torch.randn(2, 2, 8, 6)

    def f(*a):
        o, ht = linattn.liger_attention(*a[:6], window_size=8, initial_state=a[6], output_final_state=True,
                                        softmax_weight=0.4, linear_weight=0.6)
        return o.square().sum() + ht.sum()
    args = [t.clone().requires_grad_() for t in (q, k, v, g, q_rot, k_rot, h0)]
    eager = torch.autograd.grad(f(*args), args)
    args2 = [t.detach().clone().requires_grad_() for t in args]
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(*args2), args2)
    for a, b in zip(compiled, eager):
        assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", [
    ("g rank 2", lambda a: a.update(g=a["g"][..., 0, 0]), r"g must have shape \[B, T, H, D\] .* or \[B, T, H\]"),
    ("window 0", lambda a: a.update(window_size=0), r"window_size must be >= 1"),
    ("q_rot dtype", lambda a: a.update(q_rot=a["q_rot"].float()), r"q_rot must have the dtype of q"),
    ("v length", lambda a: a.update(v=a["v"][:, :3]), r"v must have shape"),
    ("initial_state shape", lambda a: a.update(initial_state=torch.zeros(2, 2, 8, 5, dtype=torch.float64)),
     r"initial_state must have shape"),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_bad_input_names_the_argument(case):
    _, change, message = case
    q, k, v, g, q_rot, k_rot = make(T=10)
    a = dict(q=q, k=k, v=v, g=g, q_rot=q_rot, k_rot=k_rot, window_size=4)
    change(a)
    with pytest.raises(RuntimeError, match=message):
        linattn.liger_attention(**a)
