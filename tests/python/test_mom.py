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


# ------------------------------------------------------------------ backward ops, opcheck, compile, CUDA kernels

def _case(B=2, T=9, k=3, E=4, rows=(5,), dtype=torch.float64, dup=True):
    idx = torch.randint(0, E - 1, (B, T, k)) if dup else torch.stack([torch.randperm(E)[:k] for _ in range(B * T)])
    idx = idx.view(B, T, k)
    if dup and k > 1:
        idx[..., 1] = idx[..., 0]  # the same memory twice in one token; memory E-1 stays empty
    x = torch.randn(B, T, *rows, dtype=dtype)
    w = torch.rand(B, T, k, dtype=dtype)
    return x, w, idx


@pytest.mark.parametrize("dup", [True, False])
def test_backward_ops_gradcheck_and_formulas(dup):
    x, w, idx = _case(k=3 if dup else 4, E=4, rows=(2, 3), dup=dup)
    E = 4
    x.requires_grad_()
    w.requires_grad_()
    xs, cu, si = linattn.mom_dispatch(x, idx, E)
    ys = (xs.detach() * 1.5 - 0.25).requires_grad_()
    assert torch.autograd.gradcheck(lambda xx: linattn.mom_dispatch(xx, idx, E)[0], (x,))
    assert torch.autograd.gradcheck(lambda a, b: linattn.mom_combine(a, b, idx, si, E), (ys, w))
    # The registered backward ops against autograd through an ATen formulation of the same maps.
    g_rows = torch.randn_like(xs)
    dx = torch.ops.linattn._mom_dispatch_backward(g_rows, idx, si, E)
    want = torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:], dtype=x.dtype).index_add_(0, si, g_rows)
    assert torch.equal(dx, want.view_as(x))
    gy = torch.randn_like(x)
    dys, dw = torch.ops.linattn._mom_combine_backward(gy, ys.detach(), w.detach(), idx, si, E)
    order = torch.sort((idx * idx.shape[0] + torch.arange(idx.shape[0]).view(-1, 1, 1)).reshape(-1), stable=True)[1]
    ww = w.detach().reshape(-1)[order].view(-1, 1, 1)
    assert_close(dys, ww * gy.reshape(-1, 2, 3)[si], atol=0, rtol=0)
    dots = (gy.reshape(-1, 6)[si] * ys.detach().reshape(-1, 6)).sum(1)
    assert_close(dw.reshape(-1)[order], dots, atol=1e-12, rtol=1e-12)
    assert cu.dtype == torch.long and cu.shape == (E * 2 + 1,)


def test_opcheck_all_ops():
    x, w, idx = _case(dtype=torch.float32)
    E = 4
    xs, _, si = linattn.mom_dispatch(x, idx, E)
    ops = torch.ops.linattn
    torch.library.opcheck(ops.mom_dispatch.default, (x.requires_grad_(), idx, E))
    torch.library.opcheck(ops.mom_combine.default, (xs.detach().requires_grad_(), w.requires_grad_(), idx, si, E))
    torch.library.opcheck(ops._mom_dispatch_backward.default, (xs.detach(), idx, si, E))
    torch.library.opcheck(ops._mom_combine_backward.default, (x.detach(), xs.detach(), w.detach(), idx, si, E))


def test_compile_fullgraph_with_backward():
    x, w, idx = _case(dtype=torch.float32)

    def f(x, w, idx):
        xs, cu, si = linattn.mom_dispatch(x, idx, 4)
        return linattn.mom_combine(torch.tanh(xs), w, idx, si, 4), cu

    def run(fn):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y, cu = fn(xx, ww, idx)
        y.square().sum().backward()
        return y, cu, xx.grad, ww.grad

    eager = run(f)
    compiled = run(torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True))
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


def test_half_precision_combine_accumulates_in_fp32():
    x, w, idx = _case(B=1, T=40, k=4, E=3, rows=(7,), dtype=torch.float32)
    xs, _, si = linattn.mom_dispatch(x, idx, 3)
    for dt in (torch.float16, torch.bfloat16):
        y = linattn.mom_combine(xs.to(dt), w, idx, si, 3)
        want = linattn.mom_combine(xs.to(dt).float(), w, idx, si, 3).to(dt)  # fp32 sums, rounded once
        assert y.dtype == dt and torch.equal(y, want)


def test_empty_and_rowless():
    E = 3
    for B, T, k in ((2, 0, 2), (0, 4, 1), (2, 3, 0)):
        x, idx = torch.randn(B, T, 4), torch.zeros(B, T, k, dtype=torch.long)
        xs, cu, si = linattn.mom_dispatch(x, idx, E)
        assert xs.shape == (B * T * k, 4) and torch.equal(cu, torch.zeros(E * B + 1, dtype=torch.long))
        y = linattn.mom_combine(xs, torch.rand(B, T, k), idx, si, E)
        assert torch.equal(y, torch.zeros(B, T, 4))
    x, w, idx = _case(rows=())
    xs, _, si = linattn.mom_dispatch(x, idx, 4)
    assert xs.shape == (idx.numel(),) and linattn.mom_combine(xs, w, idx, si, 4).shape == x.shape


cuda = pytest.mark.skipif(not (torch.cuda.is_available() and linattn.has_cuda_kernels()),
                          reason="needs a GPU and linattn built with CUDA")


def _to(dev, *ts):
    return [t.to(dev) for t in ts]


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 9, 3, 4, (5,)), (3, 700, 2, 5, (37,)), (2, 40, 8, 64, (2, 3)), (5, 1, 3, 4, (6,)),
                                   (1, 9, 40, 40, (4,)), (4, 3000, 8, 64, (129,))])
def test_cuda_matches_cpu_bit_for_bit(dtype, shape):
    B, T, k, E, rows = shape
    x, w, idx = _case(B, T, k, E, rows, dtype=torch.float32, dup=k < E)
    x, w = x.to(dtype), w.to(dtype)
    gx = torch.randn(B * T * k, *rows).to(dtype)
    gy = torch.randn(B, T, *rows).to(dtype)
    cpu_xs, cpu_cu, cpu_si = linattn.mom_dispatch(x, idx, E)
    xc, wc, ic, gxc, gyc = _to("cuda", x, w, idx, gx, gy)
    xs, cu, si = linattn.mom_dispatch(xc, ic, E)
    assert torch.equal(xs.cpu(), cpu_xs) and torch.equal(cu.cpu(), cpu_cu) and torch.equal(si.cpu(), cpu_si)
    ys = cpu_xs * 0.5
    assert torch.equal(linattn.mom_combine(ys.cuda(), wc, ic, si, E).cpu(), linattn.mom_combine(ys, w, idx, cpu_si, E))
    ops = torch.ops.linattn
    assert torch.equal(ops._mom_dispatch_backward(gxc, ic, si, E).cpu(), ops._mom_dispatch_backward(gx, idx, cpu_si, E))
    dys, dw = ops._mom_combine_backward(gyc, ys.cuda(), wc, ic, si, E)
    cdys, cdw = ops._mom_combine_backward(gy, ys, w, idx, cpu_si, E)
    assert torch.equal(dys.cpu(), cdys)
    assert_close(dw.cpu().float(), cdw.float(), atol=1e-2 if dtype != torch.float32 else 1e-4, rtol=1e-2)


@cuda
def test_cuda_no_host_sync_and_deterministic():
    x, w, idx = _case(B=2, T=500, k=4, E=8, rows=(3, 11), dtype=torch.float32)
    x, w, idx = _to("cuda", x, w, idx)
    x.requires_grad_()
    w.requires_grad_()
    results = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            xs, cu, si = linattn.mom_dispatch(x, idx, 8)
            y = linattn.mom_combine(xs * 2, w, idx, si, 8)
            gx, gw = torch.autograd.grad(y.sum(), (x, w))
            results.append((xs, cu, si, y, gx, gw))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(*results):
        assert torch.equal(a, b)


@cuda
def test_cuda_bad_index_trips_device_assert():
    # Run in a child process: a device-side assertion poisons the CUDA context.
    import subprocess
    import sys
    code = ("import torch, linattn\n"
            "x = torch.randn(1, 4, 3, device='cuda'); i = torch.full((1, 4, 1), 7, device='cuda')\n"
            "linattn.mom_dispatch(x, i, 4); torch.cuda.synchronize()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "assert" in (proc.stdout + proc.stderr).lower()
