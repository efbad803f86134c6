"""MoM routing ops against explicit loops: ties, empty memories, topk = E, gradients, opcheck, compile, errors."""
import pytest
import torch

import linattn
from helpers import assert_close


def route_loop(logits, k):
    probs = logits.double().softmax(-1)
    B, T, E = probs.shape
    w = torch.zeros(B, T, k, dtype=torch.float64)
    idx = torch.zeros(B, T, k, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            order = sorted(range(E), key=lambda e: (-probs[b, t, e].item(), e))[:k]
            idx[b, t] = torch.tensor(order)
            w[b, t] = probs[b, t, order] / probs[b, t, order].sum()
    return w, idx


@pytest.mark.parametrize("k", [1, 2, 4])
def test_route_matches_loop_including_ties(k):
    logits = torch.randn(2, 9, 4)
    logits[0, 3] = 0.5  # all four memories tied
    logits[1, 2, 1:3] = 2.0  # a tie between memories 1 and 2
    w, idx = linattn.mom_route(logits, k)
    rw, ridx = route_loop(logits, k)
    assert torch.equal(idx, ridx)
    assert w.dtype == logits.dtype
    assert_close(w, rw, atol=1e-6, rtol=1e-6)


def test_route_gradcheck():
    logits = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: linattn.mom_route(x, 2)[0], (logits,), atol=1e-4, rtol=1e-3)


def dispatch_loop(x, idx, E):
    B, T, k = idx.shape
    rows, seqs, lens = [], [], []
    for e in range(E):
        for b in range(B):
            members = [(t, j) for t in range(T) for j in range(k) if idx[b, t, j] == e]
            lens.append(len(members))
            for t, j in members:
                rows.append(x[b, t])
                seqs.append(b * T + t)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    return torch.stack(rows), cu, torch.tensor(seqs)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dispatch_and_combine_match_loops(k):
    B, T, E = 2, 7, 3
    x = torch.randn(B, T, 5, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.randperm(E)[:k] for _ in range(B * T)]).view(B, T, k)
    idx[1, :, 0] = 0  # memory 0 takes all of batch 1 in slot 0; with k=1, memories 1, 2 are empty there
    xs, cu, si = linattn.mom_dispatch(x, idx, E)
    rxs, rcu, rsi = dispatch_loop(x.detach(), idx, E)
    assert torch.equal(cu, rcu) and torch.equal(si, rsi)
    assert_close(xs, rxs, atol=0, rtol=0)

    w = torch.rand(B, T, k, dtype=torch.float64, requires_grad=True)
    y_sorted = (xs * 2 + 1).detach().requires_grad_()
    y = linattn.mom_combine(y_sorted, w, idx, si, E)
    want = torch.zeros(B, T, 5, dtype=torch.float64)
    r = 0
    copies = {}
    for e in range(E):
        for b in range(B):
            for t in range(T):
                for j in range(k):
                    if idx[b, t, j] == e:
                        copies[(b, t, j)] = r
                        r += 1
    for (b, t, j), row in copies.items():
        want[b, t] += w[b, t, j].item() * y_sorted[row].detach()
    assert_close(y, want, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda ys, ww: linattn.mom_combine(ys, ww, idx, si, E), (y_sorted, w))
    assert torch.autograd.gradcheck(lambda xx: linattn.mom_dispatch(xx, idx, E)[0], (x,))


def test_compile_and_errors():
    logits = torch.randn(2, 6, 4)
    x = torch.randn(2, 6, 3)

    def f(logits, x):
        w, idx = linattn.mom_route(logits, 2)
        xs, cu, si = linattn.mom_dispatch(x, idx, 4)
        return linattn.mom_combine(xs * 3, w, idx, si, 4), cu

    eager = f(logits, x)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(logits, x)
    assert_close(compiled[0], eager[0], atol=1e-6, rtol=1e-6)
    assert torch.equal(compiled[1], eager[1])
    with pytest.raises(RuntimeError, match=r"topk must be in \[1, E=4\]"):
        linattn.mom_route(logits, 5)
    with pytest.raises(RuntimeError, match=r"indices must lie in \[0, 4\)"):
        linattn.mom_dispatch(x, torch.full((2, 6, 1), 4, dtype=torch.long), 4)
