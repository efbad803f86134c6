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


# ---------------------------------------------------------------------------------------------------------
# Tensor-core forward (chunk_simple_gla, fp16 / bf16, scalar gate / g_gamma / no gate). The glue picks it for
# these inputs; LINATTN_GLA_FORCE_SIMT=1 (read once per process) forces the fp32 SIMT kernels instead.

TC_DTYPES = [torch.float16, torch.bfloat16]
TC_SHAPES = [(2, 100, 2, 7, 7), (1, 130, 3, 60, 100), (1, 70, 2, 100, 60), (1, 65, 1, 256, 256),
             (2, 64, 2, 64, 64), (3, 1, 2, 16, 5)]
TC_GATES = ["g", "g_gamma", "g+g_gamma", "none"]


def tc_inputs(B, T, H, K, V, dtype, gate, strong=False):
    q, k, v, g, h0 = gla_inputs(B, T, H, K, V, dtype=torch.float32, gate="scalar", strong=strong, h0=True)
    q, k = q / K ** 0.25, k / K ** 0.25
    kw = {}
    if "g" in gate.split("+"):
        kw["g"] = g.to(dtype)
    if "g_gamma" in gate.split("+"):
        kw["g_gamma"] = (-0.5 * torch.rand(H)).to(dtype)
    return [t.to(dtype) for t in (q, k, v)], kw, h0


def tc_reference(qkv, kw, h0, cu=None, dtype=torch.float64):
    q, k, v = qkv if dtype is None else [t.to(dtype) for t in qkv]
    g, gg = kw.get("g"), kw.get("g_gamma")
    if dtype is not None:
        g, gg = (None if t is None else t.to(dtype) for t in (g, gg))
        h0 = h0.to(dtype)
    return gla_recurrence(q, k, v, g, gg, initial_state=h0, output_final_state=True, cu_seqlens=cu, dtype=dtype)


def tc_run(qkv, kw, h0, cu=None):
    dev = {n: t.cuda() for n, t in kw.items()}
    return linattn.chunk_simple_gla(*(t.cuda() for t in qkv), **dev, initial_state=h0.cuda(),
                                    output_final_state=True, cu_seqlens=None if cu is None else cu.cuda())


def tc_check(qkv, kw, h0, cu=None, run=tc_run):
    o, ht = run(qkv, kw, h0, cu)
    eo, eh = tc_reference(qkv, kw, h0, cu)
    lo, lh = tc_reference([t.cuda() for t in qkv], {n: t.cuda() for n, t in kw.items()}, h0.cuda(),
                          None if cu is None else cu.cuda(), dtype=None)
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    check(o.cpu(), eo, lo.cpu(), "o")
    check(ht.cpu(), eh, lh.cpu(), "final_state")
    return o, ht


@pytest.mark.parametrize("gate", TC_GATES)
@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("shape", TC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_tc_simple_gla_forward_vs_reference(shape, dtype, gate):
    qkv, kw, h0 = tc_inputs(*shape, dtype, gate)
    tc_check(qkv, kw, h0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_simple_gla_varlen_empty_sequences(dtype):
    lens = [0, 65, 1, 130, 0, 17, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    qkv, kw, _ = tc_inputs(1, sum(lens), 2, 100, 60, dtype, "g+g_gamma")
    h0 = torch.randn(len(lens), 2, 100, 60)
    _, ht = tc_check(qkv, kw, h0, cu)
    for n in (0, 4):  # empty sequences pass their initial state through
        torch.testing.assert_close(ht[n].cpu(), h0[n], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_simple_gla_strong_decay(dtype):
    # log gates down to -20 per token: in-chunk decays down to e^{-1280}; the masked upper triangle must not
    # overflow, and the state must be forgotten almost at once.
    qkv, kw, h0 = tc_inputs(2, 300, 2, 64, 60, dtype, "g", strong=True)
    assert kw["g"].min() <= -15
    tc_check(qkv, kw, h0)


def test_cuda_tc_fp16_states_beyond_fp16_range():
    # No decay and large values: states above 65504 would overflow fp16 if S_c were converted unscaled.
    B, T, H, K, V = 1, 300, 1, 16, 16
    q = (0.01 * torch.randn(B, T, H, K)).half()
    k, v = (60 * torch.randn(B, T, H, K)).half(), (60 * torch.randn(B, T, H, V)).half()
    h0 = torch.zeros(B, H, K, V)
    o, ht = tc_run([q, k, v], {}, h0)
    eo, eh = tc_reference([q, k, v], {}, h0)
    assert eh.abs().max() > 65504
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.cpu().double(), eo, atol=1e-2 * eo.abs().max().item(), rtol=0)
    torch.testing.assert_close(ht.cpu().double(), eh, atol=1e-4 * eh.abs().max().item(), rtol=0)


_SIMT_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for qkv, kw, h0, cu in x:
    o, ht = linattn.chunk_simple_gla(*(t.cuda() for t in qkv), **{n: t.cuda() for n, t in kw.items()},
                                     initial_state=h0.cuda(), output_final_state=True,
                                     cu_seqlens=None if cu is None else cu.cuda())
    out.append((o.cpu(), ht.cpu()))
torch.save(out, sys.argv[2])
"""


def test_cuda_tc_forward_matches_simt_path(tmp_path):
    import os
    import subprocess
    import sys
    lens = [0, 70, 1, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in TC_DTYPES:
        for shape, gate in (((2, 130, 2, 60, 100), "g"), ((1, 65, 1, 256, 7), "g_gamma"), ((1, 77, 2, 7, 256), "none")):
            qkv, kw, h0 = tc_inputs(*shape, dtype, gate)
            cases.append((qkv, kw, h0, None))
        qkv, kw, _ = tc_inputs(1, sum(lens), 2, 33, 40, dtype, "g+g_gamma")
        cases.append((qkv, kw, torch.randn(len(lens), 2, 33, 40), cu))
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_GLA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    for (qkv, kw, h0, cu), (o_simt, ht_simt) in zip(cases, simt):
        o, ht = (t.cpu() for t in tc_run(qkv, kw, h0, cu))
        assert not torch.equal(o, o_simt), "LINATTN_GLA_FORCE_SIMT=1 did not switch the path"
        eo, eh = tc_reference(qkv, kw, h0, cu)
        lo, lh = (t.cpu() for t in tc_reference([t.cuda() for t in qkv], {n: t.cuda() for n, t in kw.items()},
                                                 h0.cuda(), None if cu is None else cu.cuda(), dtype=None))
        for got, other, exact, same_prec, name in ((o, o_simt, eo, lo, "o"), (ht, ht_simt, eh, lh, "final_state")):
            check(other, exact, same_prec, name + " (SIMT)")
            check(got, other.double(), same_prec, name + " (tensor cores vs SIMT)")


# ---------------------------------------------------------------------------------------------------------
# Tensor-core backward (same inputs as the tensor-core forward): dq, dk, dv, dg, dg_gamma, dh0 against the
# float64 reference (a few times the same recurrence's error in the input precision), and against the SIMT
# backward (LINATTN_GLA_FORCE_SIMT=1 in a subprocess).

TC_GRAD_NAMES = ["q", "k", "v", "g", "g_gamma", "h0"]


def tc_grads(qkv, kw, h0, cu, do, dht, device, dtype=None, reference=False):
    """(o, ht, {name: grad}) of sum(o * do) + sum(ht * dht): linattn on CUDA, or (reference, or a dtype) the
    reference recurrence in dtype (None: the inputs' precision) on device."""
    leaves = dict(zip(("q", "k", "v"), qkv), **kw, h0=h0)
    leaves = {n: (t.to(dtype) if dtype is not None else t).to(device).detach().requires_grad_()
              for n, t in leaves.items()}
    cu_d = None if cu is None else cu.to(device)
    if dtype is None and not reference and "g" in leaves and leaves["g"].dim() == 4:  # per-key gates: chunk_gla
        o, ht = linattn.chunk_gla(leaves["q"], leaves["k"], leaves["v"], leaves["g"], initial_state=leaves["h0"],
                                  output_final_state=True, cu_seqlens=cu_d)
    elif dtype is None and not reference:
        o, ht = linattn.chunk_simple_gla(leaves["q"], leaves["k"], leaves["v"], leaves.get("g"),
                                         leaves.get("g_gamma"), initial_state=leaves["h0"],
                                         output_final_state=True, cu_seqlens=cu_d)
    else:
        o, ht = gla_recurrence(leaves["q"], leaves["k"], leaves["v"], leaves.get("g"), leaves.get("g_gamma"),
                               initial_state=leaves["h0"], output_final_state=True, cu_seqlens=cu_d, dtype=dtype)
    ((o.double() * do.to(device)).sum() + (ht.double() * dht.to(device)).sum()).backward()
    return o, ht, {n: t.grad.cpu() for n, t in leaves.items()}


def same_precision_grads(qkv, kw, h0, cu, do, dht):
    return tc_grads(qkv, kw, h0, cu, do, dht, "cuda", reference=True)


def tc_backward_check(qkv, kw, h0, cu=None):
    B, T, H, _ = qkv[0].shape
    N = B if cu is None else cu.numel() - 1
    do = torch.randn(B, T, H, qkv[2].shape[-1], dtype=torch.float64)
    dht = torch.randn(N, H, qkv[0].shape[-1], qkv[2].shape[-1], dtype=torch.float64)
    _, _, got = tc_grads(qkv, kw, h0, cu, do, dht, "cuda")
    _, _, exact = tc_grads(qkv, kw, h0, cu, do, dht, "cpu", torch.float64)
    _, _, same = same_precision_grads(qkv, kw, h0, cu, do, dht)
    for n in got:
        assert torch.isfinite(got[n]).all(), f"d{n}: non-finite values"
        check(got[n], exact[n], same[n], "d" + n, factor=4.0)
    return got, do, dht


@pytest.mark.parametrize("gate", TC_GATES)
@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("shape", TC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_tc_simple_gla_backward_vs_reference(shape, dtype, gate):
    qkv, kw, h0 = tc_inputs(*shape, dtype, gate)
    tc_backward_check(qkv, kw, h0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_simple_gla_backward_varlen_empty_sequences(dtype):
    lens = [0, 65, 1, 130, 0, 17, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    qkv, kw, _ = tc_inputs(1, sum(lens), 2, 100, 60, dtype, "g+g_gamma")
    h0 = torch.randn(len(lens), 2, 100, 60)
    got, _, dht = tc_backward_check(qkv, kw, h0, cu)
    for n in (0, 4):  # an empty sequence passes dht straight through to dh0
        torch.testing.assert_close(got["h0"][n], dht[n].float(), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("K,V", [(64, 60), (256, 100)])
def test_cuda_tc_simple_gla_backward_strong_decay(dtype, K, V):
    qkv, kw, h0 = tc_inputs(2, 300, 2, K, V, dtype, "g", strong=True)
    assert kw["g"].min() <= -15
    tc_backward_check(qkv, kw, h0)


_SIMT_BWD_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for qkv, kw, h0, cu, do, dht in x:
    leaves = dict(zip(("q", "k", "v"), qkv), **kw, h0=h0)
    leaves = {n: t.cuda().requires_grad_() for n, t in leaves.items()}
    cu = None if cu is None else cu.cuda()
    if "g" in leaves and leaves["g"].dim() == 4:
        o, ht = linattn.chunk_gla(leaves["q"], leaves["k"], leaves["v"], leaves["g"], initial_state=leaves["h0"],
                                  output_final_state=True, cu_seqlens=cu)
    else:
        o, ht = linattn.chunk_simple_gla(leaves["q"], leaves["k"], leaves["v"], leaves.get("g"),
                                         leaves.get("g_gamma"), initial_state=leaves["h0"], output_final_state=True,
                                         cu_seqlens=cu)
    ((o.double() * do.cuda()).sum() + (ht.double() * dht.cuda()).sum()).backward()
    out.append({n: t.grad.cpu() for n, t in leaves.items()})
torch.save(out, sys.argv[2])
"""


def _backward_matches_simt_path(tmp_path, cases):
    """Every case's gradients from the glue's path (tensor cores) and from LINATTN_GLA_FORCE_SIMT=1 (a subprocess)
    against float64 and against each other."""
    import os
    import subprocess
    import sys
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_GLA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_BWD_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    for (qkv, kw, h0, cu, do, dht), grads_simt in zip(cases, simt):
        _, _, got = tc_grads(qkv, kw, h0, cu, do, dht, "cuda")
        _, _, exact = tc_grads(qkv, kw, h0, cu, do, dht, "cpu", torch.float64)
        _, _, same = same_precision_grads(qkv, kw, h0, cu, do, dht)
        assert not torch.equal(got["q"], grads_simt["q"]), "LINATTN_GLA_FORCE_SIMT=1 did not switch the path"
        for n in got:
            check(grads_simt[n], exact[n], same[n], f"d{n} (SIMT)", factor=4.0)
            check(got[n], grads_simt[n].double(), same[n], f"d{n} (tensor cores vs SIMT)", factor=4.0)


def test_cuda_tc_backward_matches_simt_path(tmp_path):
    lens = [0, 70, 1, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in TC_DTYPES:
        for shape, gate in (((2, 130, 2, 60, 100), "g"), ((1, 65, 1, 256, 7), "g_gamma"),
                            ((1, 77, 2, 7, 256), "none"), ((1, 200, 1, 128, 64), "g+g_gamma")):
            qkv, kw, h0 = tc_inputs(*shape, dtype, gate)
            B, T, H, K = qkv[0].shape
            V = qkv[2].shape[-1]
            cases.append((qkv, kw, h0, None, torch.randn(B, T, H, V, dtype=torch.float64),
                          torch.randn(B, H, K, V, dtype=torch.float64)))
        qkv, kw, _ = tc_inputs(1, sum(lens), 2, 33, 40, dtype, "g+g_gamma")
        cases.append((qkv, kw, torch.randn(len(lens), 2, 33, 40), cu, torch.randn(1, sum(lens), 2, 40,
                                                                                  dtype=torch.float64),
                      torch.randn(len(lens), 2, 33, 40, dtype=torch.float64)))
    _backward_matches_simt_path(tmp_path, cases)


# ---------------------------------------------------------------------------------------------------------
# Tensor-core forward and backward for per-key (vector) gates (chunk_gla, fp16 / bf16). LINATTN_GLA_FORCE_SIMT=1 (a
# subprocess) forces the SIMT kernels for the comparisons.

VEC_SHAPES = [(2, 1, 2, 3, 3), (1, 5, 2, 60, 100), (2, 65, 1, 100, 60), (1, 130, 2, 3, 64), (1, 200, 1, 128, 128),
              (1, 65, 1, 256, 256), (2, 64, 2, 64, 64)]


def vec_inputs(B, T, H, K, V, dtype, strong=False):
    q, k, v, g, h0 = gla_inputs(B, T, H, K, V, dtype=torch.float32, gate="key", strong=strong, h0=True)
    q, k = q / K ** 0.25, k / K ** 0.25
    return [t.to(dtype) for t in (q, k, v)], {"g": g.to(dtype)}, h0


def vec_run(qkv, kw, h0, cu=None):
    return linattn.chunk_gla(*(t.cuda() for t in qkv), kw["g"].cuda(), initial_state=h0.cuda(),
                             output_final_state=True, cu_seqlens=None if cu is None else cu.cuda())


def vec_check(qkv, kw, h0, cu=None):
    return tc_check(qkv, kw, h0, cu, run=vec_run)


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("shape", VEC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_tc_gla_vector_gate_forward_vs_reference(shape, dtype):
    qkv, kw, h0 = vec_inputs(*shape, dtype)
    vec_check(qkv, kw, h0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_gla_vector_gate_varlen_empty_sequences(dtype):
    lens = [0, 65, 1, 130, 0, 17, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    qkv, kw, _ = vec_inputs(1, sum(lens), 2, 100, 60, dtype)
    h0 = torch.randn(len(lens), 2, 100, 60)
    _, ht = vec_check(qkv, kw, h0, cu)
    for n in (0, 4):  # empty sequences pass their initial state through
        torch.testing.assert_close(ht[n].cpu(), h0[n], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_gla_vector_gate_strong_decay(dtype):
    # per-key log gates down to -20 per token over 1000 tokens: every exponent must stay <= 0 (underflow only)
    qkv, kw, h0 = vec_inputs(2, 1000, 2, 64, 60, dtype, strong=True)
    assert kw["g"].min() <= -15
    vec_check(qkv, kw, h0)


def test_cuda_tc_gla_vector_gate_fp16_states_beyond_fp16_range():
    # Weak decay and large values: states above 65504 would overflow fp16 if S_c were converted unscaled.
    B, T, H, K, V = 1, 300, 1, 16, 16
    q = (0.01 * torch.randn(B, T, H, K)).half()
    k, v = (60 * torch.randn(B, T, H, K)).half(), (60 * torch.randn(B, T, H, V)).half()
    g = F.logsigmoid(torch.randn(B, T, H, K) + 12).half()
    h0 = torch.zeros(B, H, K, V)
    o, ht = vec_run([q, k, v], {"g": g}, h0)
    eo, eh = tc_reference([q, k, v], {"g": g}, h0)
    assert eh.abs().max() > 65504
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.cpu().double(), eo, atol=1e-2 * eo.abs().max().item(), rtol=0)
    # the decayed keys are rounded to fp16 once per chunk (exact in the ungated scalar test): 1e-3, not 1e-4
    torch.testing.assert_close(ht.cpu().double(), eh, atol=1e-3 * eh.abs().max().item(), rtol=0)


_VEC_SIMT_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for qkv, kw, h0, cu in x:
    o, ht = linattn.chunk_gla(*(t.cuda() for t in qkv), kw["g"].cuda(), initial_state=h0.cuda(),
                              output_final_state=True, cu_seqlens=None if cu is None else cu.cuda())
    out.append((o.cpu(), ht.cpu()))
torch.save(out, sys.argv[2])
"""


def test_cuda_tc_gla_vector_gate_matches_simt_path(tmp_path):
    import os
    import subprocess
    import sys
    lens = [0, 70, 1, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in TC_DTYPES:
        for shape, strong in (((2, 130, 2, 60, 100), False), ((1, 65, 1, 256, 7), False), ((1, 300, 2, 7, 256), True)):
            qkv, kw, h0 = vec_inputs(*shape, dtype, strong=strong)
            cases.append((qkv, kw, h0, None))
        qkv, kw, _ = vec_inputs(1, sum(lens), 2, 33, 40, dtype)
        cases.append((qkv, kw, torch.randn(len(lens), 2, 33, 40), cu))
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_GLA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _VEC_SIMT_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    for (qkv, kw, h0, cu), (o_simt, ht_simt) in zip(cases, simt):
        o, ht = (t.cpu() for t in vec_run(qkv, kw, h0, cu))
        assert not torch.equal(o, o_simt), "LINATTN_GLA_FORCE_SIMT=1 did not switch the path"
        eo, eh = tc_reference(qkv, kw, h0, cu)
        lo, lh = (t.cpu() for t in tc_reference([t.cuda() for t in qkv], {n: t.cuda() for n, t in kw.items()},
                                                 h0.cuda(), None if cu is None else cu.cuda(), dtype=None))
        for got, other, exact, same_prec, name in ((o, o_simt, eo, lo, "o"), (ht, ht_simt, eh, lh, "final_state")):
            check(other, exact, same_prec, name + " (SIMT)")
            check(got, other.double(), same_prec, name + " (tensor cores vs SIMT)")


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("shape", VEC_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_tc_gla_vector_gate_backward_vs_reference(shape, dtype):
    qkv, kw, h0 = vec_inputs(*shape, dtype)
    tc_backward_check(qkv, kw, h0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_gla_vector_gate_backward_varlen_empty_sequences(dtype):
    lens = [0, 65, 1, 130, 0, 17, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    qkv, kw, _ = vec_inputs(1, sum(lens), 2, 100, 60, dtype)
    h0 = torch.randn(len(lens), 2, 100, 60)
    got, _, dht = tc_backward_check(qkv, kw, h0, cu)
    for n in (0, 4):  # an empty sequence passes dht straight through to dh0
        torch.testing.assert_close(got["h0"][n], dht[n].float(), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("K,V", [(64, 60), (256, 100)])
def test_cuda_tc_gla_vector_gate_backward_strong_decay(dtype, K, V):
    # per-key log gates down to -20 per token: dg is the small remainder of sums that cancel (see dk's hi + lo dS)
    qkv, kw, h0 = vec_inputs(2, 300, 2, K, V, dtype, strong=True)
    assert kw["g"].min() <= -15
    tc_backward_check(qkv, kw, h0)


def test_cuda_tc_gla_vector_gate_backward_matches_simt_path(tmp_path):
    lens = [0, 70, 1, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in TC_DTYPES:
        for shape, strong in (((2, 130, 2, 60, 100), False), ((1, 65, 1, 256, 7), False), ((1, 300, 2, 7, 256), True)):
            qkv, kw, h0 = vec_inputs(*shape, dtype, strong=strong)
            B, T, H, K = qkv[0].shape
            V = qkv[2].shape[-1]
            cases.append((qkv, kw, h0, None, torch.randn(B, T, H, V, dtype=torch.float64),
                          torch.randn(B, H, K, V, dtype=torch.float64)))
        qkv, kw, _ = vec_inputs(1, sum(lens), 2, 33, 40, dtype)
        cases.append((qkv, kw, torch.randn(len(lens), 2, 33, 40), cu, torch.randn(1, sum(lens), 2, 40,
                                                                                  dtype=torch.float64),
                      torch.randn(len(lens), 2, 33, 40, dtype=torch.float64)))
    _backward_matches_simt_path(tmp_path, cases)


def test_cuda_tc_gla_vector_gate_backward_without_final_state_gradient():
    # No dht (the final state is not in the loss): the dS recurrence starts from zeros; the gradients must agree
    # with float64 whatever path the forward took.
    qkv, kw, h0 = vec_inputs(1, 130, 2, 60, 40, torch.bfloat16)
    leaves = [t.cuda().requires_grad_() for t in (*qkv, kw["g"])]
    o, ht = linattn.chunk_gla(*leaves, initial_state=h0.cuda(), output_final_state=True)
    do = torch.randn_like(o)
    (o.float() * do.float()).sum().backward()
    ref = [t.detach().cpu().double().requires_grad_() for t in (*qkv, kw["g"])]
    eo, _ = gla_recurrence(*ref, None, initial_state=h0.double(), output_final_state=True, dtype=torch.float64)
    (eo * do.cpu().double()).sum().backward()
    for name, got, r in zip("qkvg", leaves, ref):
        err = (got.grad.cpu().double() - r.grad).abs().max().item()
        assert torch.isfinite(got.grad).all() and err <= 5e-2 * max(r.grad.abs().max().item(), 1.0), name
