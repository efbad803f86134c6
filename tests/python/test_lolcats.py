"""LoLCATs hybrid attention on the CPU against the explicit float64 definition (gradients through the window
max exactly as autograd through amax), gradcheck, window edge cases, opcheck, compile, bad input."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from helpers import assert_close
from linattn.reference import lolcats_attention_reference


def definition(q, k, v, fq, fk, wf, w, scale=None):
    return lolcats_attention_reference(q, k, v, fq, fk, wf, w, scale, dtype=q.dtype)


def make(B, T, H, D, V, Fd, dtype=torch.float64):
    q, k = torch.randn(B, T, H, D, dtype=dtype), torch.randn(B, T, H, D, dtype=dtype)
    v = torch.randn(B, T, H, V, dtype=dtype)
    fq = F.softmax(torch.randn(B, T, H, Fd, dtype=dtype), -1)
    fk = F.softmax(torch.randn(B, T, H, Fd, dtype=dtype), -1)
    wf = torch.randn(H, dtype=dtype)
    return q, k, v, fq, fk, wf


@pytest.mark.parametrize("w", [1, 4, 64, 300])
@pytest.mark.parametrize("shape", [(2, 70, 2, 8, 6, 10), (1, 130, 1, 16, 5, 4), (1, 1, 2, 3, 3, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_forward_and_gradients_match_definition(w, shape):
    ins = [t.requires_grad_() for t in make(*shape)]
    o = linattn.lolcats_attention(*ins, window_size=w)
    ref_ins = [t.detach().clone().requires_grad_() for t in ins]
    ro = definition(*ref_ins, w)
    assert_close(o, ro, atol=1e-12, rtol=1e-12, name="o")
    do = torch.randn_like(o)
    (o * do).sum().backward()
    (ro * do).sum().backward()
    for a, b, n in zip(ins, ref_ins, ["dq", "dk", "dv", "dfq", "dfk", "dwindow_factor"]):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, name=n)


def test_gradient_through_tied_window_max_matches_amax():
    # Equal keys make equal scores, so the window max is tied; amax splits its gradient evenly.
    q, k, v, fq, fk, wf = make(1, 20, 1, 4, 3, 5)
    k[:, 5:10] = k[:, 5:6]
    ins = [t.requires_grad_() for t in (q, k, v, fq, fk, wf)]
    ref_ins = [t.detach().clone().requires_grad_() for t in ins]
    linattn.lolcats_attention(*ins, window_size=6).sum().backward()
    definition(*ref_ins, 6).sum().backward()
    for a, b in zip(ins, ref_ins):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)


def test_gradcheck_float32_against_float64_and_gradcheck():
    ins = [t.requires_grad_() for t in make(1, 40, 2, 3, 2, 3)]
    assert torch.autograd.gradcheck(lambda *a: linattn.lolcats_attention(*a, window_size=7, scale=0.8), ins)
    o32 = linattn.lolcats_attention(*(t.detach().float() for t in ins), window_size=7)
    assert_close(o32, definition(*(t.detach() for t in ins), 7), atol=1e-5, rtol=1e-5)


def test_opcheck_and_compile():
    ins = [t.float().requires_grad_() for t in make(2, 50, 2, 8, 6, 4)]
    torch.library.opcheck(torch.ops.linattn.lolcats_attention.default, tuple(ins), dict(window_size=9))
    f = lambda *a: linattn.lolcats_attention(*a, window_size=9).square().sum()  # noqa: E731
    eager = torch.autograd.grad(f(*ins), ins)
    args2 = [t.detach().clone().requires_grad_() for t in ins]
    compiled = torch.autograd.grad(torch.compile(f, fullgraph=True, backend="aot_eager")(*args2), args2)
    for a, b in zip(compiled, eager):
        assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", [
    ("window 0", dict(window_size=0), r"window_size must be >= 1"),
    ("fk feature size", dict(fk=torch.rand(1, 8, 2, 5, dtype=torch.float64)), r"fk must have the shape of fq"),
    ("window_factor heads", dict(window_factor=torch.zeros(3, dtype=torch.float64)), r"window_factor must have shape"),
], ids=lambda c: c[0])
def test_bad_input(case):
    _, over, pattern = case
    q, k, v, fq, fk, wf = make(1, 8, 2, 4, 4, 6)
    a = dict(q=q, k=k, v=v, fq=fq, fk=fk, window_factor=wf, window_size=3)
    a.update(over)
    with pytest.raises(RuntimeError, match=pattern):
        linattn.lolcats_attention(**a)


def test_attention_transfer_loss_is_mse_to_detached_softmax_teacher_and_trains():
    q, k, v, _, _, wf = make(1, 96, 2, 8, 8, 4)
    weight = torch.randn(2, 8, 4, dtype=torch.float64, requires_grad=True)
    wf.requires_grad_()
    q.requires_grad_()
    fq, fk = linattn.hedgehog_feature_map(q, weight), linattn.hedgehog_feature_map(k, weight)
    loss = linattn.attention_transfer_loss(q, k, v, fq, fk, wf, window_size=16)
    teacher = torch.nn.functional.scaled_dot_product_attention(
        q.detach().transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
    want = (definition(q.detach(), k, v, fq.detach(), fk.detach(), wf.detach(), 16) - teacher).square().mean()
    assert_close(loss, want, atol=1e-12, rtol=1e-12)
    # q gets gradient only through the student; a few steps on the feature maps lower the loss.
    (gq,) = torch.autograd.grad(loss, (q,), retain_graph=True)
    assert gq.abs().sum() > 0
    opt = torch.optim.Adam([weight, wf], lr=0.05)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        fq, fk = linattn.hedgehog_feature_map(q.detach(), weight), linattn.hedgehog_feature_map(k, weight)
        loss = linattn.attention_transfer_loss(q.detach(), k, v, fq, fk, wf, window_size=16)
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
