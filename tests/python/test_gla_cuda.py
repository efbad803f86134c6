"""GLA CUDA kernels against the float64 reference (skipped without a GPU). Tolerances follow the
FlashAttention rule: the kernel's error may be at most a few times the error of the same recurrence run by
PyTorch in the kernel's input precision, plus a small floor."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import gla_recurrence
from helpers import gla_inputs

pytestmark = pytest.mark.cuda

OPS = {"chunk_gla": "key", "fused_recurrent_gla": "key", "chunk_simple_gla": "scalar",
       "fused_recurrent_simple_gla": "scalar"}


def call(name, q, k, v, g, **kw):
    return getattr(linattn, name)(q, k, v, g, **kw)


def check(got, exact, same_prec, name, factor=3.0):
    base = (same_prec.double() - exact).abs().max().item()
    err = (got.double() - exact).abs().max().item()
    floor = 1e-5 * exact.abs().max().item() + 1e-6
    assert err <= factor * base + floor, f"{name}: error {err:.3e}, same-precision reference {base:.3e}"


def grads_of(fn, tensors, do, dht):
    ins = [t.detach().clone().requires_grad_() for t in tensors]
    o, ht = fn(*ins)
    ((o.double() * do).sum() + (ht.double() * dht).sum()).backward()
    return o, ht, [t.grad for t in ins]


SHAPES = [(2, 64, 2, 64, 64), (1, 100, 3, 60, 100), (2, 129, 2, 128, 32), (1, 70, 1, 256, 256), (3, 1, 2, 7, 5)]


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_forward_backward_vs_reference(name, dtype, shape):
    B, T, H, K, V = shape
    q, k, v, g, h0 = gla_inputs(B, T, H, K, V, dtype=torch.float32, gate=OPS[name], h0=True)
    q, k = q / K ** 0.25, k / K ** 0.25
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    dht = torch.randn(B, H, K, V, dtype=torch.float64)
    cast = [t.to(dtype) for t in (q, k, v)] + [g.to(dtype)]

    def ours(q, k, v, g, h0):
        return call(name, q, k, v, g, initial_state=h0, output_final_state=True)

    def ref(dt):
        return lambda q, k, v, g, h0: gla_recurrence(q, k, v, g, initial_state=h0, output_final_state=True, dtype=dt)

    cuda_in = [t.cuda() for t in cast] + [h0.cuda()]
    o, ht, gr = grads_of(ours, cuda_in, do.cuda(), dht.cuda())
    eo, eh, eg = grads_of(ref(torch.float64), [t.double() for t in cast] + [h0.double()], do, dht)
    lo, lh, lg = grads_of(ref(None), cuda_in, do.cuda(), dht.cuda())
    check(o.cpu(), eo, lo.cpu(), "o")
    check(ht.cpu(), eh, lh.cpu(), "final_state")
    for a, b, c, n in zip(gr, eg, lg, ["dq", "dk", "dv", "dg", "dh0"]):
        check(a.cpu(), b, c.cpu(), n, factor=4.0)


@pytest.mark.parametrize("name", list(OPS))
def test_cuda_varlen_matches_cpu_float64(name):
    lens = [0, 65, 1, 130, 0, 17]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    T, H, K, V = sum(lens), 2, 100, 60
    q, k, v, g, _ = gla_inputs(1, T, H, K, V, dtype=torch.float32, gate=OPS[name])
    q, k = q / K ** 0.25, k / K ** 0.25
    h0 = torch.randn(len(lens), H, K, V)
    o, ht = call(name, *(t.cuda() for t in (q, k, v, g)), initial_state=h0.cuda(), output_final_state=True,
                 cu_seqlens=cu.cuda())
    eo, eh = call(name, *(t.double() for t in (q, k, v, g)), initial_state=h0.double(), output_final_state=True,
                  cu_seqlens=cu)
    torch.testing.assert_close(o.cpu().double(), eo, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(ht.cpu().double(), eh, atol=2e-4, rtol=1e-3)


def test_cuda_strong_decay_long_sequence_is_finite_and_correct():
    q, k, v, g, h0 = gla_inputs(2, 2000, 2, 64, 64, dtype=torch.float32, strong=True, h0=True)
    o, ht = linattn.chunk_gla(*(t.cuda() for t in (q, k, v, g)), initial_state=h0.cuda(), output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    eo, eh = linattn.chunk_gla(*(t.double() for t in (q, k, v, g)), initial_state=h0.double(), output_final_state=True)
    torch.testing.assert_close(o.cpu().double(), eo, atol=1e-3, rtol=1e-3)


def test_cuda_opcheck_and_compile():
    q, k, v, g, h0 = (t.cuda() for t in gla_inputs(1, 80, 2, 32, 32, dtype=torch.bfloat16, h0=True))
    h0 = h0.float()
    for t in (q, k, v, g):
        t.requires_grad_()
    torch.library.opcheck(torch.ops.linattn.chunk_gla.default, (q, k, v, g), dict(initial_state=h0,
                                                                                    output_final_state=True))
    f = torch.compile(lambda q, k, v, g: linattn.chunk_gla(q, k, v, g)[0].float().sum(), fullgraph=True)
    torch.testing.assert_close(f(q, k, v, g), linattn.chunk_gla(q, k, v, g)[0].float().sum(), atol=1e-2, rtol=1e-3)


def test_cuda_rejects_float64_and_mixed_devices():
    q, k, v, g, _ = gla_inputs(1, 8, 1, 4, 4)
    with pytest.raises(RuntimeError, match="float64 is not supported by the CUDA kernels"):
        linattn.chunk_gla(q.cuda(), k.cuda(), v.cuda(), g.cuda())
    with pytest.raises(RuntimeError, match="k is on cpu but q is on cuda"):
        linattn.chunk_gla(q.float().cuda(), k.float(), v.float().cuda(), g.float().cuda())
