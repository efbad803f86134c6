"""The GLA ops as dispatcher citizens: opcheck, torch.compile(fullgraph=True), and clear errors on bad input."""
import re

import pytest
import torch
import torch.nn.functional as F

import linattn
from helpers import assert_close, gla_inputs

ops = torch.ops.linattn


def _req(*ts):
    return [t.requires_grad_() if t is not None else None for t in ts]


def opcheck_cases():
    q, k, v, g, h0 = _req(*gla_inputs(1, 70, 2, 6, 5, h0=True))
    qs, ks, vs, gs, _ = _req(*gla_inputs(2, 40, 2, 6, 5, gate="scalar"))
    gamma = F.logsigmoid(torch.randn(2, dtype=torch.float64)).requires_grad_()
    cu = torch.tensor([0, 30, 30, 70])
    h0v = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    return [
        ("chunk_gla", ops.chunk_gla.default, (q, k, v, g), dict(initial_state=h0, output_final_state=True)),
        ("chunk_gla_varlen", ops.chunk_gla.default, (q, k, v, g),
         dict(initial_state=h0v, output_final_state=True, cu_seqlens=cu)),
        ("chunk_gla_no_state", ops.chunk_gla.default, (q, k, v, g), dict(scale=0.3)),
        ("fused_recurrent_gla", ops.fused_recurrent_gla.default, (q, k, v, g),
         dict(initial_state=h0, output_final_state=True)),
        ("chunk_simple_gla", ops.chunk_simple_gla.default, (qs, ks, vs, gs, gamma), dict(output_final_state=True)),
        ("fused_recurrent_simple_gla", ops.fused_recurrent_simple_gla.default, (qs, ks, vs, None, gamma),
         dict(output_final_state=True)),
    ]


@pytest.mark.parametrize("case", opcheck_cases(), ids=lambda c: c[0])
def test_opcheck(case):
    _, op, args, kwargs = case
    torch.library.opcheck(op, args, kwargs)


def test_opcheck_backward_op():
    q, k, v, g, h0 = gla_inputs(1, 70, 2, 6, 5, h0=True)
    do = torch.randn_like(v)
    dht = torch.randn_like(h0)
    torch.library.opcheck(ops._gla_backward.default, (q, k, v, g, None, do, dht, None, h0, None))


def test_compile_fullgraph_matches_eager():
    q, k, v, g, h0 = gla_inputs(2, 75, 2, 8, 6, dtype=torch.float32, h0=True)
    gs = F.logsigmoid(torch.randn(2, 75, 2))

    def f(q, k, v, g, gs, h0):
        o1, h1 = linattn.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
        o2, _ = linattn.chunk_simple_gla(o1.tanh() @ torch.ones(6, 8) / 6, k, v, gs)
        o3, _ = linattn.fused_recurrent_gla(q, k, v, g)
        return (o1 + o2 + o3).square().sum() + h1.sum()

    args = [t.clone().requires_grad_() for t in (q, k, v, g, gs, h0)]
    eager = f(*args)
    eager_grads = torch.autograd.grad(eager, args)
    args2 = [t.detach().clone().requires_grad_() for t in args]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*args2)
    compiled_grads = torch.autograd.grad(compiled, args2)
    assert_close(compiled, eager, atol=1e-4, rtol=1e-5)
    for a, b in zip(compiled_grads, eager_grads):
        assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_compile_inductor_dynamic_shapes():
    def f(q, k, v, g):
        return linattn.chunk_gla(q, k, v, g)[0].sum()

    cf = torch.compile(f, fullgraph=True, dynamic=True)
    for T in (33, 70):
        q, k, v, g, _ = gla_inputs(1, T, 2, 8, 4, dtype=torch.float32)
        assert_close(cf(q, k, v, g), f(q, k, v, g), atol=1e-4, rtol=1e-5)


def test_cpp_autograd_node_is_used():
    q, k, v, g, _ = gla_inputs(1, 10, 1, 4, 4)
    q.requires_grad_()
    o, _ = linattn.chunk_gla(q, k, v, g)
    assert "GlaFunction" in o.grad_fn.name()


# ---- bad input: a Python exception naming the argument, never a crash ----

def good(**over):
    q, k, v, g, _ = gla_inputs(2, 12, 3, 4, 5)
    args = dict(q=q, k=k, v=v, g=g, initial_state=None, cu_seqlens=None)
    args.update(over)
    return args


def call_chunk(a):
    return linattn.chunk_gla(a["q"], a["k"], a["v"], a["g"], initial_state=a["initial_state"],
                             cu_seqlens=a["cu_seqlens"])


def packed(**over):
    a = good()
    a = {n: (t[:1] if t is not None and t.dim() == 4 else t) for n, t in a.items()}
    a["cu_seqlens"] = torch.tensor([0, 5, 12])
    a.update(over)
    return a


D = torch.float64
BAD = [
    ("q rank", lambda: good(q=torch.randn(2, 12, 12, dtype=D)), r"q must have shape \[B, T, H, K\]"),
    ("k shape", lambda: good(k=torch.randn(2, 12, 3, 5, dtype=D)), r"k must have the shape of q"),
    ("v batch", lambda: good(v=torch.randn(1, 12, 3, 5, dtype=D)), r"v must have shape \[B, T, H, V\]"),
    ("g shape", lambda: good(g=torch.randn(2, 12, 3, dtype=D)), r"g must have shape \[B, T, H, K\]"),
    ("dtype mix", lambda: good(k=torch.randn(2, 12, 3, 4, dtype=torch.float32)), r"must share one dtype"),
    ("integer q", lambda: good(q=torch.ones(2, 12, 3, 4, dtype=torch.long)), r"q must be a floating-point tensor"),
    ("integer g", lambda: good(g=torch.ones(2, 12, 3, 4, dtype=torch.int32)), r"g must be a floating-point tensor"),
    ("h0 shape", lambda: good(initial_state=torch.randn(2, 3, 4, 4, dtype=D)), r"initial_state must have shape \[N, H, K, V\]"),
    ("h0 count", lambda: good(initial_state=torch.randn(3, 3, 4, 5, dtype=D)), r"initial_state must have shape \[N, H, K, V\]"),
    ("cu with B>1", lambda: good(cu_seqlens=torch.tensor([0, 12])), r"batch size must be 1"),
    ("cu int32", lambda: packed(cu_seqlens=torch.tensor([0, 5, 12], dtype=torch.int32)), r"cu_seqlens must be int64"),
    ("cu decreasing", lambda: packed(cu_seqlens=torch.tensor([0, 7, 5, 12])), r"cu_seqlens must be non-decreasing"),
    ("cu end", lambda: packed(cu_seqlens=torch.tensor([0, 5, 11])), r"cu_seqlens must end at T=12"),
    ("cu start", lambda: packed(cu_seqlens=torch.tensor([1, 5, 12])), r"cu_seqlens must start at 0"),
    ("cu h0 count", lambda: packed(initial_state=torch.randn(3, 3, 4, 5, dtype=D)), r"initial_state must have shape"),
    ("float16 on cpu", lambda: good(q=torch.randn(2, 12, 3, 4).half(), k=torch.randn(2, 12, 3, 4).half(),
                                    v=torch.randn(2, 12, 3, 5).half()), r"CPU kernels take float32 or float64"),
    ("meta mixed with cpu", lambda: good(v=torch.randn(2, 12, 3, 5, dtype=D, device="meta")), r"v is on meta but q is on cpu"),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c[0])
def test_bad_input_raises_clear_error(case):
    _, make, pattern = case
    with pytest.raises(RuntimeError, match=pattern):
        call_chunk(make())


def test_simple_gla_bad_gamma():
    q, k, v, _, _ = gla_inputs(1, 8, 3, 4, 4)
    with pytest.raises(RuntimeError, match=re.escape("g_gamma must have shape [H]")):
        linattn.chunk_simple_gla(q, k, v, g_gamma=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=re.escape("g must have shape [B, T, H]")):
        linattn.fused_recurrent_simple_gla(q, k, v, g=torch.zeros(1, 8, 3, 4, dtype=torch.float64))


def test_meta_tensors_give_shapes():
    q, k, v, g, h0 = (t.to("meta") for t in gla_inputs(3, 20, 2, 6, 7, h0=True))
    o, ht = ops.chunk_gla(q, k, v, g, None, h0, True, None)
    assert o.shape == (3, 20, 2, 7) and ht.shape == (3, 2, 6, 7) and ht.dtype == torch.float64
