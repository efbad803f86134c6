"""mom_grouped_linear: per-group projections of packed rows against a float64 loop over groups, empty groups,
rows outside the groups, host offsets, gradcheck, opcheck, torch.compile fullgraph with backward, the C++ weight
gradient op, errors naming the argument, and the CUDA path against the CPU one."""
import pytest
import torch

import linattn
from helpers import assert_close


def loop(x, ws, offsets):
    off = offsets.tolist()
    y = torch.zeros(x.shape[0], ws[0].shape[0], dtype=torch.float64)
    for g, w in enumerate(ws):
        for r in range(off[g], off[g + 1]):
            y[r] = x[r].double() @ w.double().t()
    return y


def case(N=23, D=7, O=5, offsets=(2, 9, 9, 17, 20), dtype=torch.float64, device="cpu"):
    x = torch.randn(N, D, dtype=dtype, device=device)
    ws = [torch.randn(O, D, dtype=dtype, device=device) for _ in range(len(offsets) - 1)]
    return x, ws, torch.tensor(offsets, device=device)


@pytest.mark.parametrize("offsets", [(2, 9, 9, 17, 20), (0, 23), (0, 0, 0), (5, 5), (0, 11, 23)],
                         ids=["gaps_empty_group", "one_group_all_rows", "all_empty", "no_rows", "two_groups_all"])
def test_matches_loop_float64(offsets):
    x, ws, off = case(offsets=offsets)
    y = linattn.mom_grouped_linear(x, ws, off)
    assert y.shape == (23, 5) and y.dtype == torch.float64
    assert_close(y, loop(x, ws, off), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision_close_to_float64(dtype):
    x, ws, off = case(N=70, D=33, O=19, offsets=(0, 30, 31, 64), dtype=dtype)
    y = linattn.mom_grouped_linear(x, ws, off)
    ref = loop(x, ws, off)
    # Bound from what a same-precision PyTorch matmul of the same rows lands from float64.
    same = torch.cat([x[:30] @ ws[0].t(), x[30:31] @ ws[1].t(), x[31:64] @ ws[2].t(), x.new_zeros(6, 19)])
    bound = 4 * (same.double() - ref).abs().max().item() + 1e-6
    assert y.dtype == dtype
    assert (y.double() - ref).abs().max().item() <= bound


def test_gradcheck_all_inputs():
    x, ws, off = case(N=13, D=4, O=3, offsets=(1, 5, 5, 12))
    inputs = [t.requires_grad_() for t in [x, *ws]]
    assert torch.autograd.gradcheck(lambda x, *w: linattn.mom_grouped_linear(x, w, off), inputs)
    assert torch.autograd.gradgradcheck(lambda x, *w: linattn.mom_grouped_linear(x, w, off), inputs)


def test_weight_grad_op_formula_and_empty_group():
    x, ws, off = case()
    gy = torch.randn(23, 5, dtype=torch.float64)
    grads = torch.ops.linattn._mom_grouped_linear_weight_grad(gy, x, off, 4)
    bounds = off.tolist()
    for g in range(4):
        lo, hi = bounds[g], bounds[g + 1]
        assert_close(grads[g], gy[lo:hi].t() @ x[lo:hi], atol=1e-12, rtol=1e-12)
    assert torch.equal(grads[1], torch.zeros(5, 7, dtype=torch.float64))  # group 1 is empty


def test_opcheck():
    x, ws, off = case(N=11, D=4, O=3, offsets=(0, 4, 9))
    torch.library.opcheck(torch.ops.linattn.mom_grouped_linear.default,
                          (x.requires_grad_(), [w.requires_grad_() for w in ws], off))
    torch.library.opcheck(torch.ops.linattn._mom_grouped_linear_weight_grad.default,
                          (torch.randn(11, 3, dtype=torch.float64), x.detach(), off, 2))


def test_compile_fullgraph_forward_and_backward():
    x, ws, off = case(N=29, D=6, O=4, offsets=(3, 10, 25), dtype=torch.float32)

    def f(x, w0, w1, off):
        return (linattn.mom_grouped_linear(x, [w0, w1], off).sin() * 2).sum()

    leaves = [t.clone().requires_grad_() for t in (x, *ws)]
    eager = [t.clone().requires_grad_() for t in (x, *ws)]
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    out, ref = compiled(*leaves, off), f(*eager, off)
    out.backward()
    ref.backward()
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(leaves, eager):
        assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_errors_name_the_argument():
    x, ws, off = case()
    f = linattn.mom_grouped_linear
    with pytest.raises(RuntimeError, match=r"x must have shape \[N, D\]"):
        f(x[None], ws, off)
    with pytest.raises(RuntimeError, match="weights must hold at least one"):
        f(x, [], torch.tensor([0]))
    with pytest.raises(RuntimeError, match=r"weights\[2\] must have shape \[O=5, D=7\]"):
        f(x, [ws[0], ws[1], ws[2][:, :6], ws[3]], off)
    with pytest.raises(RuntimeError, match=r"weights\[1\] must have x's dtype"):
        f(x, [ws[0], ws[1].float(), ws[2], ws[3]], off)
    with pytest.raises(RuntimeError, match=r"offsets must have shape \[G\+1\]"):
        f(x, ws, off[:-1])
    with pytest.raises(RuntimeError, match="offsets must be int64"):
        f(x, ws, off.int())
    with pytest.raises(RuntimeError, match="offsets must be non-decreasing, got 9 then 8 at index 3"):
        f(x, ws, torch.tensor([2, 9, 9, 8, 20]))
    with pytest.raises(RuntimeError, match="offsets must end at <= N=23"):
        f(x, ws, torch.tensor([2, 9, 9, 17, 24]))
    with pytest.raises(RuntimeError, match="offsets must start at >= 0"):
        f(x, ws, torch.tensor([-1, 9, 9, 17, 20]))
    with pytest.raises(RuntimeError, match=r"grad_y must have shape \[N, O\]"):
        torch.ops.linattn._mom_grouped_linear_weight_grad(torch.randn(22, 5, dtype=torch.float64), x, off, 4)


cuda = pytest.mark.skipif(not (torch.cuda.is_available() and linattn.has_cuda_kernels()),
                          reason="needs a CUDA device and linattn's CUDA kernels")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("host_offsets", [False, True], ids=["device_offsets", "host_offsets"])
def test_cuda_matches_float64_and_grads(dtype, host_offsets):
    x, ws, off = case(N=301, D=40, O=24, offsets=(7, 100, 100, 250, 290), dtype=dtype)
    xc = x.cuda().requires_grad_()
    wc = [w.cuda().requires_grad_() for w in ws]
    y = linattn.mom_grouped_linear(xc, wc, off if host_offsets else off.cuda())
    ref = loop(x, ws, off)
    same = linattn.mom_grouped_linear(x.float(), [w.float() for w in ws], off).to(dtype)
    bound = 4 * (same.double() - ref).abs().max().item() + 1e-5
    assert (y.double().cpu() - ref).abs().max().item() <= bound
    gy = torch.randn_like(y)
    y.backward(gy)
    xd, wd = x.double().requires_grad_(), [w.double().requires_grad_() for w in ws]
    linattn.mom_grouped_linear(xd, wd, off).backward(gy.double().cpu())
    for got, want in zip([xc.grad, *[w.grad for w in wc]], [xd.grad, *[w.grad for w in wd]]):
        tol = 3e-2 * want.abs().max().item() + 1e-5 if dtype != torch.float32 else 1e-3 * want.abs().max().item()
        assert (got.double().cpu() - want).abs().max().item() <= tol
