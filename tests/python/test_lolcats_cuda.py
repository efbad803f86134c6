"""LoLCATs hybrid attention CUDA kernels against the float64 definition (skipped without a GPU). Tolerances
follow the FlashAttention rule: the kernel's error may be a few times the error of the same definition run
by PyTorch in the kernel's input precision, plus a small floor."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import lolcats_attention_reference as reference

pytestmark = pytest.mark.cuda

DEV = "cuda"
GRAD_NAMES = ["dq", "dk", "dv", "dfq", "dfk", "dwindow_factor"]


def make(B, T, H, D, V, Fd):
    q, k = torch.randn(B, T, H, D), torch.randn(B, T, H, D)
    v = torch.randn(B, T, H, V)
    fq = F.softmax(torch.randn(B, T, H, Fd), -1)
    fk = F.softmax(torch.randn(B, T, H, Fd), -1)
    return q, k, v, fq, fk, torch.randn(H)


def grads_of(fn, tensors, do):
    ins = [t.detach().clone().requires_grad_() for t in tensors]
    o = fn(*ins)
    (o.double() * do).sum().backward()
    return o, [t.grad for t in ins]


def check(got, exact, same_prec, name, factor=3.0):
    base = (same_prec.double().cpu() - exact).abs().max().item()
    err = (got.double().cpu() - exact).abs().max().item()
    floor = 1e-5 * max(exact.abs().max().item(), 1.0)
    assert err <= factor * base + floor, f"{name}: error {err:.3e}, same-precision reference {base:.3e}"


def close(got, want, name, rel=2e-4):
    err = (got.double().cpu() - want.double().cpu()).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rel * scale + 1e-6, f"{name}: max error {err:.3e} (max |value| {scale:.3e})"


def ours(w, scale=None):
    return lambda q, k, v, fq, fk, wf: linattn.lolcats_attention(q, k, v, fq, fk, wf, w, scale)


def ref(w, dtype=torch.float64, scale=None):
    return lambda q, k, v, fq, fk, wf: reference(q, k, v, fq, fk, wf, w, scale, dtype=dtype)


# (B, T, H, D, V, F): one chunk, odd sizes, D != V != F, the largest dims, T = 1, several state chunks.
SHAPES = [(2, 64, 2, 64, 64, 32), (1, 100, 3, 60, 100, 7), (2, 129, 2, 128, 32, 64), (1, 70, 1, 256, 256, 256),
          (3, 1, 2, 7, 5, 3), (1, 300, 2, 32, 48, 16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("w", [1, 17, 64, 1000])
def test_cuda_forward_backward_vs_reference(dtype, shape, w):
    B, T, H, D, V, Fd = shape
    cast = [t.to(dtype) for t in make(B, T, H, D, V, Fd)]
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    cuda_in = [t.to(DEV) for t in cast]
    o, gr = grads_of(ours(w), cuda_in, do.to(DEV))
    assert o.dtype == dtype and o.shape == (B, T, H, V)
    eo, eg = grads_of(ref(w), [t.double() for t in cast], do)
    lo, lg = grads_of(ref(w, dtype), cuda_in, do.to(DEV))
    check(o, eo, lo, "o")
    for a, b, c, t, label in zip(gr, eg, lg, cast, GRAD_NAMES):
        assert a.dtype == t.dtype and a.shape == t.shape, label
        check(a, b, c, label, factor=4.0)


def test_cuda_matches_cpu_float64_and_tied_window_max():
    # Repeated keys give tied window maxima: the gradient splits over the ties as autograd through amax does.
    q, k, v, fq, fk, wf = make(2, 150, 2, 16, 12, 8)
    k[:, 1::2] = k[:, 0::2][:, :75]
    do = torch.randn(2, 150, 2, 12, dtype=torch.float64)
    inputs = (q, k, v, fq, fk, wf)
    o, gr = grads_of(ours(24, 0.7), [t.to(DEV) for t in inputs], do.to(DEV))
    eo, eg = grads_of(ours(24, 0.7), [t.double() for t in inputs], do)
    close(o, eo, "o")
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        close(a, b, label, rel=5e-4)


def test_cuda_large_logits_stay_finite():
    q, k, v, fq, fk, wf = make(1, 200, 2, 64, 32, 16)
    q = q * 30
    do = torch.randn(1, 200, 2, 32, dtype=torch.float64)
    inputs = (q, k, v, fq, fk, wf)
    o, gr = grads_of(ours(32), [t.to(DEV) for t in inputs], do.to(DEV))
    for t in [o] + gr:
        assert torch.isfinite(t).all()
    eo, eg = grads_of(ref(32), [t.double() for t in inputs], do)
    close(o, eo, "o", rel=1e-3)
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        close(a, b, label, rel=2e-3)


def test_cuda_attention_transfer_loss_and_layer_feature_maps():
    q, k, v, _, _, wf = (t.to(DEV) for t in make(1, 96, 2, 16, 16, 4))
    weight = torch.randn(2, 16, 4, device=DEV, requires_grad=True)
    fq, fk = linattn.hedgehog_feature_map(q, weight), linattn.hedgehog_feature_map(k, weight)
    loss = linattn.attention_transfer_loss(q, k, v, fq, fk, wf, 16)
    loss.backward()
    w64 = weight.detach().double().cpu().requires_grad_()
    qc, kc, vc, wfc = (t.double().cpu() for t in (q, k, v, wf))
    want = linattn.attention_transfer_loss(qc, kc, vc, linattn.hedgehog_feature_map(qc, w64),
                                           linattn.hedgehog_feature_map(kc, w64), wfc, 16)
    want.backward()
    close(loss, want, "loss", rel=1e-4)
    close(weight.grad, w64.grad, "dweight", rel=1e-3)


def test_cuda_empty_inputs():
    q, k, v, fq, fk, wf = (t.to(DEV) for t in make(2, 0, 2, 8, 4, 3))
    assert linattn.lolcats_attention(q, k, v, fq, fk, wf, 4).shape == (2, 0, 2, 4)


def test_cuda_opcheck_and_compile():
    ins = [t.to(DEV, torch.bfloat16).requires_grad_() for t in make(1, 80, 2, 32, 48, 16)]
    torch.library.opcheck(torch.ops.linattn.lolcats_attention.default, tuple(ins), dict(window_size=16))
    det = [t.detach() for t in ins]
    o, m, z = torch.ops.linattn._lolcats_attention_forward(*det, 16, None)
    torch.library.opcheck(torch.ops.linattn._lolcats_attention_backward.default,
                          (*det, o, m, z, torch.randn_like(o), 16, None))

    def f(*ins):
        return linattn.lolcats_attention(*ins, window_size=16).float().sum()

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(*ins), f(*ins), atol=1e-2, rtol=1e-3)


def test_cuda_rejects_float64_large_dims_and_mixed_devices():
    q, k, v, fq, fk, wf = make(1, 8, 1, 4, 4, 3)
    with pytest.raises(RuntimeError, match="float64 is not supported by the CUDA kernels"):
        linattn.lolcats_attention(*(t.double().to(DEV) for t in (q, k, v, fq, fk, wf)), 4)
    with pytest.raises(RuntimeError, match="k"):
        linattn.lolcats_attention(q.to(DEV), k, v.to(DEV), fq.to(DEV), fk.to(DEV), wf.to(DEV), 4)
    big = torch.randn(1, 8, 1, 300, device=DEV)
    with pytest.raises(RuntimeError, match="D <= 256"):
        linattn.lolcats_attention(big, big, v.to(DEV), fq.to(DEV), fk.to(DEV), wf.to(DEV), 4)
