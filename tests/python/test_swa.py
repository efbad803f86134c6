"""Sliding-window attention on the CPU: float64 reference, gradcheck, window edge cases, varlen, opcheck,
torch.compile, bad input."""
import pytest
import torch

import linattn
from linattn.reference import sliding_window_attention_reference as ref
from helpers import assert_close


def make(B, T, H, K, V, dtype=torch.float64):
    return (torch.randn(B, T, H, K, dtype=dtype), torch.randn(B, T, H, K, dtype=dtype),
            torch.randn(B, T, H, V, dtype=dtype))


@pytest.mark.parametrize("window", [1, 3, 64, 500])
@pytest.mark.parametrize("shape", [(2, 70, 2, 12, 7), (1, 130, 3, 60, 100), (2, 1, 1, 4, 4)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(window, shape, dtype):
    q, k, v = make(*shape, dtype=dtype)
    o = linattn.sliding_window_attention(q, k, v, window)
    want = ref(q, k, v, window)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert o.dtype == dtype and o.shape == v.shape
    assert_close(o, want, atol=tol, rtol=tol)


def test_window_one_returns_v_and_large_window_is_full_causal_attention():
    q, k, v = make(1, 40, 2, 8, 8)
    assert_close(linattn.sliding_window_attention(q, k, v, 1), v, atol=1e-14, rtol=0)
    full = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                            is_causal=True).transpose(1, 2)
    assert_close(linattn.sliding_window_attention(q, k, v, 40), full, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("window", [1, 5, 64])
def test_gradcheck(window):
    q, k, v = (t.requires_grad_() for t in make(1, 70, 2, 3, 4))
    assert torch.autograd.gradcheck(lambda q, k, v: linattn.sliding_window_attention(q, k, v, window, scale=0.7),
                                    (q, k, v), atol=1e-8, rtol=1e-6)


def test_varlen_equals_per_sequence():
    lens = [0, 30, 1, 70]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    q, k, v = (t.requires_grad_() for t in make(1, sum(lens), 2, 6, 5))
    o = linattn.sliding_window_attention(q, k, v, 16, cu_seqlens=cu)
    o.square().sum().backward()
    for bos, eos in zip(cu[:-1].tolist(), cu[1:].tolist()):
        part = [t[:, bos:eos].detach().clone().requires_grad_() for t in (q, k, v)]
        on = linattn.sliding_window_attention(*part, 16)
        on.square().sum().backward()
        assert_close(o[:, bos:eos], on, atol=1e-13, rtol=1e-13)
        for full, piece in zip((q, k, v), part):
            assert_close(full.grad[:, bos:eos], piece.grad, atol=1e-12, rtol=1e-12)


def test_opcheck_and_compile():
    q, k, v = (t.requires_grad_() for t in make(2, 50, 2, 8, 6))
    torch.library.opcheck(torch.ops.linattn.sliding_window_attention.default, (q, k, v, 9))
    torch.library.opcheck(torch.ops.linattn.sliding_window_attention.default, (q[:1], k[:1], v[:1], 4),
                          dict(cu_seqlens=torch.tensor([0, 20, 50])))
    f = lambda q, k, v: linattn.sliding_window_attention(q, k, v, 9).square().sum()  # noqa: E731
    args = [t.detach().float().requires_grad_() for t in (q, k, v)]
    eager = f(*args)
    eg = torch.autograd.grad(eager, args)
    args2 = [t.detach().clone().requires_grad_() for t in args]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*args2)
    for a, b in zip(torch.autograd.grad(compiled, args2), eg):
        assert_close(a, b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", [
    ("window 0", dict(window=0), r"window_size must be >= 1"),
    ("v heads", dict(v=torch.randn(1, 8, 3, 4, dtype=torch.float64)), r"v must have shape \[B, T, H, V\]"),
    ("k shape", dict(k=torch.randn(1, 8, 2, 5, dtype=torch.float64)), r"k must have the shape of q"),
], ids=lambda c: c[0])
def test_bad_input(case):
    _, over, pattern = case
    a = dict(q=torch.randn(1, 8, 2, 4, dtype=torch.float64), k=torch.randn(1, 8, 2, 4, dtype=torch.float64),
             v=torch.randn(1, 8, 2, 4, dtype=torch.float64), window=3)
    a.update(over)
    with pytest.raises(RuntimeError, match=pattern):
        linattn.sliding_window_attention(a["q"], a["k"], a["v"], a["window"])
