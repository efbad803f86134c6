"""Sliding-window attention CUDA kernels against the float64 definition (skipped without a GPU). Tolerances
follow the FlashAttention rule: the kernel's error may be a few times the error of the same definition run
by PyTorch in the kernel's input precision, plus a small floor."""
import pytest
import torch

import linattn
from linattn.reference import sliding_window_attention_reference as reference

pytestmark = pytest.mark.cuda

DEV = "cuda"
GRAD_NAMES = ["dq", "dk", "dv"]


def make(B, T, H, K, V):
    return torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)


def grads_of(fn, tensors, do):
    ins = [t.detach().clone().requires_grad_() for t in tensors]
    o = fn(*ins)
    (o.double() * do).sum().backward()
    return o, [t.grad for t in ins]


def check(got, exact, same_prec, name, factor=3.0):
    base = (same_prec.double().cpu() - exact).abs().max().item()
    err = (got.double().cpu() - exact).abs().max().item()
    # w = 1 makes dq, dk exactly zero: the floor then scales with the inputs (order 1), not the value.
    floor = 1e-5 * max(exact.abs().max().item(), 1.0)
    assert err <= factor * base + floor, f"{name}: error {err:.3e}, same-precision reference {base:.3e}"


def close(got, want, name, rel=2e-4):
    err = (got.double().cpu() - want.double().cpu()).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rel * scale + 1e-6, f"{name}: max error {err:.3e} (max |value| {scale:.3e})"


# (B, T, H, K, V): one tile, odd sizes, K != V, the largest head dims, T = 1, many key tiles.
SHAPES = [(2, 64, 2, 64, 64), (1, 100, 3, 60, 100), (2, 129, 2, 128, 32), (1, 70, 1, 256, 256), (3, 1, 2, 7, 5),
          (1, 600, 2, 32, 48)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("w", [1, 17, 64, 1000])
def test_cuda_forward_backward_vs_reference(dtype, shape, w):
    B, T, H, K, V = shape
    cast = [t.to(dtype) for t in make(B, T, H, K, V)]
    do = torch.randn(B, T, H, V, dtype=torch.float64)
    cuda_in = [t.to(DEV) for t in cast]
    o, gr = grads_of(lambda q, k, v: linattn.sliding_window_attention(q, k, v, w), cuda_in, do.to(DEV))
    assert o.dtype == dtype and o.shape == (B, T, H, V)
    eo, eg = grads_of(lambda q, k, v: reference(q, k, v, w), [t.double() for t in cast], do)
    lo, lg = grads_of(lambda q, k, v: reference(q, k, v, w, dtype=dtype), cuda_in, do.to(DEV))
    check(o, eo, lo, "o")
    for a, b, c, t, label in zip(gr, eg, lg, cast, GRAD_NAMES):
        assert a.dtype == t.dtype, label
        check(a, b, c, label, factor=4.0)


@pytest.mark.parametrize("w", [1, 5, 64, 200])
def test_cuda_varlen_matches_cpu_float64(w):
    # Empty sequences first and in the middle, a 1-token one, lengths on both sides of the tile size.
    lens = [0, 65, 1, 130, 0, 17]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    q, k, v = make(1, sum(lens), 2, 40, 24)
    do = torch.randn(1, sum(lens), 2, 24, dtype=torch.float64)
    op = linattn.sliding_window_attention
    o, gr = grads_of(lambda q, k, v: op(q, k, v, w, cu_seqlens=cu.to(DEV)), [t.to(DEV) for t in (q, k, v)],
                     do.to(DEV))
    eo, eg = grads_of(lambda q, k, v: op(q, k, v, w, cu_seqlens=cu), [t.double() for t in (q, k, v)], do)
    close(o, eo, "o")
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        close(a, b, label, rel=5e-4)


def test_cuda_custom_scale_and_large_logits_stay_finite():
    q, k, v = make(1, 300, 2, 64, 64)
    q = q * 30  # scores of several hundred: the running max must keep exp() in range
    do = torch.randn(1, 300, 2, 64, dtype=torch.float64)
    o, gr = grads_of(lambda q, k, v: linattn.sliding_window_attention(q, k, v, 48, scale=0.5),
                     [t.to(DEV) for t in (q, k, v)], do.to(DEV))
    eo, eg = grads_of(lambda q, k, v: reference(q, k, v, 48, scale=0.5), [t.double() for t in (q, k, v)], do)
    for t in [o] + gr:
        assert torch.isfinite(t).all()
    close(o, eo, "o", rel=1e-3)
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        close(a, b, label, rel=2e-3)


def test_cuda_empty_and_noncontiguous_inputs():
    q, k, v = (t.to(DEV) for t in make(2, 0, 2, 8, 4))
    assert linattn.sliding_window_attention(q, k, v, 4).shape == (2, 0, 2, 4)
    # Head-major storage viewed token-major: the glue must not assume contiguity.
    qh, kh, vh = (torch.randn(1, 3, 90, 32, device=DEV) for _ in range(3))
    q, k, v = (t.transpose(1, 2) for t in (qh, kh, vh))
    close(linattn.sliding_window_attention(q, k, v, 20), reference(q.cpu(), k.cpu(), v.cpu(), 20), "o")


def test_cuda_opcheck_and_compile():
    q, k, v = (t.to(DEV, torch.bfloat16).requires_grad_() for t in make(1, 80, 2, 32, 48))
    torch.library.opcheck(torch.ops.linattn.sliding_window_attention.default, (q, k, v, 16))
    o, lse = torch.ops.linattn._sliding_window_attention_forward(q.detach(), k.detach(), v.detach(), 16)
    torch.library.opcheck(torch.ops.linattn._sliding_window_attention_backward.default,
                          (q.detach(), k.detach(), v.detach(), o, lse, torch.randn_like(o), 16, None, None))

    def f(q, k, v):
        return linattn.sliding_window_attention(q, k, v, 16).float().sum()

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v), atol=1e-2, rtol=1e-3)


def test_cuda_rejects_float64_large_heads_and_mixed_devices():
    q, k, v = make(1, 8, 1, 4, 4)
    with pytest.raises(RuntimeError, match="float64 is not supported by the CUDA kernels"):
        linattn.sliding_window_attention(q.double().to(DEV), k.double().to(DEV), v.double().to(DEV), 4)
    with pytest.raises(RuntimeError, match="k"):
        linattn.sliding_window_attention(q.to(DEV), k, v.to(DEV), 4)
    big = torch.randn(1, 8, 1, 300, device=DEV)
    with pytest.raises(RuntimeError, match="K <= 256"):
        linattn.sliding_window_attention(big, big, v.to(DEV), 4)


# ---------------------------------------------------------------------------------------------------------
# Tensor-core forward (fp16 / bf16; the glue picks it for these inputs, LINATTN_SWA_FORCE_SIMT=1 read once per
# process forces the SIMT one), and the tensor-core backward (same selection).

_SIMT_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for ins, w, cu in x:
    q, k, v = (t.cuda() for t in ins)
    o, lse = torch.ops.linattn._sliding_window_attention_forward(q, k, v, w, None,
                                                                 None if cu is None else cu.cuda())
    out.append((o.cpu(), lse.cpu()))
torch.save(out, sys.argv[2])
"""

# (B, T, H, K, V): odd / differing head dims, 64-row key tiles and 32-row ones (K + V large), T around 64; the
# backward takes 64 x 64 tiles only for padded K + V <= 80 (the last shape, several tiles).
TC_SHAPES = [(2, 65, 2, 64, 64), (1, 200, 2, 60, 100), (1, 130, 1, 256, 256), (3, 1, 2, 3, 5), (1, 129, 2, 128, 128),
             (1, 77, 1, 256, 40), (2, 150, 2, 16, 33)]


def test_cuda_tc_forward_matches_simt_path(tmp_path):
    import os
    import subprocess
    import sys
    lens = [0, 70, 1, 0, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in (torch.float16, torch.bfloat16):
        for (B, T, H, K, V) in TC_SHAPES:
            for w in (1, 17, 64, 65, 1000):
                cases.append(([t.to(dtype) for t in make(B, T, H, K, V)], w, None))
        for w in (1, 64, 200):
            cases.append(([t.to(dtype) for t in make(1, sum(lens), 2, 100, 60)], w, cu))
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_SWA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    fwd = torch.ops.linattn._sliding_window_attention_forward
    for (ins, w, cu_), (o_simt, lse_simt) in zip(cases, simt):
        q, k, v = (t.to(DEV) for t in ins)
        o, lse = (t.cpu() for t in fwd(q, k, v, w, None, None if cu_ is None else cu_.to(DEV)))
        exact = reference(*(t.double() for t in ins), w, cu_seqlens=cu_)
        same_prec = reference(q, k, v, w, cu_seqlens=None if cu_ is None else cu_.to(DEV), dtype=q.dtype)
        check(o, exact, same_prec, f"o (tensor cores) w={w} {tuple(q.shape)}")
        check(o_simt, exact, same_prec, f"o (SIMT) w={w} {tuple(q.shape)}")
        # Same statistic: the tensor-core forward sums the probabilities rounded to the input dtype.
        tol = 2.0 ** -9 if q.dtype == torch.float16 else 2.0 ** -6
        close(lse, lse_simt, f"lse w={w} {tuple(q.shape)}", rel=tol)


_SIMT_BWD_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for ins, do, w, cu in x:
    q, k, v = (t.cuda().requires_grad_() for t in ins)
    o = linattn.sliding_window_attention(q, k, v, w, cu_seqlens=None if cu is None else cu.cuda())
    o.backward(do.cuda())
    out.append(tuple(t.grad.cpu() for t in (q, k, v)))
torch.save(out, sys.argv[2])
"""


def test_cuda_tc_backward_matches_float64_and_simt_path(tmp_path):
    """dq, dk, dv of the tensor-core backward and of the SIMT one (forced in a subprocess), each within 3x the
    error of a same-precision reference against float64, on the same inputs."""
    import os
    import subprocess
    import sys
    lens = [0, 70, 1, 0, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in (torch.float16, torch.bfloat16):
        for (B, T, H, K, V) in TC_SHAPES:
            for w in (1, 17, 64, 65, 1000):
                cases.append(([t.to(dtype) for t in make(B, T, H, K, V)], torch.randn(B, T, H, V).to(dtype), w,
                              None))
        for w in (1, 64, 200):
            cases.append(([t.to(dtype) for t in make(1, sum(lens), 2, 100, 60)],
                          torch.randn(1, sum(lens), 2, 60).to(dtype), w, cu))
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_SWA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_BWD_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    for (ins, do, w, cu_), g_simt in zip(cases, simt):
        cu_dev = None if cu_ is None else cu_.to(DEV)
        _, g_tc = grads_of(lambda q, k, v: linattn.sliding_window_attention(q, k, v, w, cu_seqlens=cu_dev),
                           [t.to(DEV) for t in ins], do.to(DEV).double())
        _, g_exact = grads_of(lambda q, k, v: reference(q, k, v, w, cu_seqlens=cu_), [t.double() for t in ins],
                              do.double())
        _, g_same = grads_of(lambda q, k, v: reference(q, k, v, w, cu_seqlens=cu_dev, dtype=q.dtype),
                             [t.to(DEV) for t in ins], do.to(DEV).double())
        for name, tc, sm, ex, sp in zip(("dq", "dk", "dv"), g_tc, g_simt, g_exact, g_same):
            check(tc, ex, sp, f"{name} (tensor cores) w={w} {tuple(ins[0].shape)} {ins[0].dtype}")
            check(sm, ex, sp, f"{name} (SIMT) w={w} {tuple(ins[0].shape)} {ins[0].dtype}")
