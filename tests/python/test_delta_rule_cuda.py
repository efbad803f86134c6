"""DeltaNet / gated DeltaNet CUDA kernels against the float64 recurrence and the CPU kernel (skipped without a
GPU). Tolerances follow the FlashAttention rule: the kernel's error may be at most a few times the error of
the same recurrence run by PyTorch in the kernel's input precision, plus a small floor."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import delta_rule_recurrence

pytestmark = pytest.mark.cuda

DEV = "cuda"
OPS = ["chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"]
GRAD_NAMES = ["dq", "dk", "dv", "dg", "dbeta", "dh0"]


def gated(name):
    return "gated" in name


def make(B, T, H, HV, K, V, l2, N=None):
    """float32 inputs; without the in-kernel L2 norm the keys are normalised here (the delta rule's regime)."""
    q = torch.randn(B, T, H, K)
    k = torch.randn(B, T, H, K)
    if not l2:
        k = F.normalize(k, dim=-1)
    v = torch.randn(B, T, HV, V)
    beta = torch.rand(B, T, HV)
    g = F.logsigmoid(torch.randn(B, T, HV) + 2)
    h0 = torch.randn(B if N is None else N, HV, K, V)
    return q, k, v, g, beta, h0


def run(name, q, k, v, g, beta, **kw):
    fn = getattr(linattn, name)
    return fn(q, k, v, g, beta, **kw) if gated(name) else fn(q, k, v, beta, **kw)


def ref(name, dtype):
    def f(q, k, v, g, beta, h0, **kw):
        return delta_rule_recurrence(q, k, v, beta, g if gated(name) else None, initial_state=h0,
                                     output_final_state=True, dtype=dtype, **kw)
    return f


def ours(name):
    def f(q, k, v, g, beta, h0, **kw):
        return run(name, q, k, v, g, beta, initial_state=h0, output_final_state=True, **kw)
    return f


def grads_of(fn, tensors, do, dht, **kw):
    ins = [t.detach().clone().requires_grad_() for t in tensors]
    o, ht = fn(*ins, **kw)
    ((o.double() * do).sum() + (ht.double() * dht).sum()).backward()
    return o, ht, [t.grad for t in ins]


def check(got, exact, same_prec, name, factor=3.0):
    base = (same_prec.double().cpu() - exact).abs().max().item()
    err = (got.double().cpu() - exact).abs().max().item()
    floor = 1e-5 * exact.abs().max().item() + 1e-6
    assert err <= factor * base + floor, f"{name}: error {err:.3e}, same-precision reference {base:.3e}"


def close(got, want, name, rel=2e-4):
    err = (got.double().cpu() - want.double()).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rel * scale + 1e-6, f"{name}: max error {err:.3e} (max |value| {scale:.3e})"


# (B, T, H, HV, K, V): one full chunk, chunk +- 1 with grouped value heads and K != V, K = V = 128 over a chunk
# boundary, several chunks with odd dims, T = 1, and the largest head dims.
SHAPES = [(2, 64, 2, 2, 64, 64), (1, 63, 2, 4, 60, 100), (2, 65, 1, 1, 128, 128), (1, 200, 2, 2, 100, 60),
          (3, 1, 2, 2, 7, 5), (1, 70, 1, 2, 256, 256)]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("l2", [False, True])
def test_cuda_forward_backward_vs_reference(name, dtype, shape, l2):
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, h0 = make(B, T, H, HV, K, V, l2)
    do = torch.randn(B, T, HV, V, dtype=torch.float64)
    dht = torch.randn(B, HV, K, V, dtype=torch.float64)
    cast = [t.to(dtype) for t in (q, k, v, g, beta)] + [h0]
    kw = dict(use_qk_l2norm_in_kernel=l2)

    cuda_in = [t.to(DEV) for t in cast]
    o, ht, gr = grads_of(ours(name), cuda_in, do.to(DEV), dht.to(DEV), **kw)
    assert o.dtype == dtype and o.shape == (B, T, HV, V) and ht.dtype == torch.float32
    eo, eh, eg = grads_of(ref(name, torch.float64), [t.double() for t in cast], do, dht, **kw)
    lo, lh, lg = grads_of(ref(name, None), cuda_in, do.to(DEV), dht.to(DEV), **kw)
    check(o, eo, lo, "o")
    check(ht, eh, lh, "final_state")
    for a, b, c, t, label in zip(gr, eg, lg, cast, GRAD_NAMES):
        if label == "dg" and not gated(name):
            assert a is None
            continue
        assert a.dtype == t.dtype, label
        check(a, b, c, label, factor=4.0)


@pytest.mark.parametrize("name", OPS)
def test_cuda_varlen_grouped_matches_cpu_float64(name):
    # Empty sequences first, in the middle and a 1-token one; two value heads per q/k head.
    lens = [0, 65, 1, 130, 0, 17]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    T, H, HV, K, V = sum(lens), 1, 2, 100, 60
    q, k, v, g, beta, h0 = make(1, T, H, HV, K, V, l2=True, N=len(lens))
    do = torch.randn(1, T, HV, V, dtype=torch.float64)
    dht = torch.randn(len(lens), HV, K, V, dtype=torch.float64)
    kw = dict(use_qk_l2norm_in_kernel=True)
    inputs = (q, k, v, g, beta, h0)
    o, ht, gr = grads_of(ours(name), [t.to(DEV) for t in inputs], do.to(DEV), dht.to(DEV), cu_seqlens=cu.to(DEV),
                         **kw)
    eo, eh, eg = grads_of(ours(name), [t.double() for t in inputs], do, dht, cu_seqlens=cu, **kw)
    close(o, eo, "o")
    close(ht, eh, "final_state")
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        if label == "dg" and not gated(name):
            continue
        close(a, b, label, rel=5e-4)


@pytest.mark.parametrize("pair", [("chunk_delta_rule", "fused_recurrent_delta_rule"),
                                  ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule")])
def test_cuda_chunked_equals_recurrent_and_cpu(pair):
    q, k, v, g, beta, h0 = make(2, 300, 2, 4, 24, 20, l2=False)
    cuda_in = [t.to(DEV) for t in (q, k, v, g, beta)]
    a = run(pair[0], *cuda_in, initial_state=h0.to(DEV), output_final_state=True)
    b = run(pair[1], *cuda_in, initial_state=h0.to(DEV), output_final_state=True)
    c = run(pair[0], q, k, v, g, beta, initial_state=h0, output_final_state=True)  # CPU kernel, float32
    for x, y, label in ((a[0], b[0], "o"), (a[1], b[1], "final_state"), (a[0], c[0], "o vs CPU"),
                        (a[1], c[1], "final_state vs CPU")):
        close(x, y.cpu(), label)


@pytest.mark.parametrize("name", ["chunk_delta_rule", "chunk_gated_delta_rule"])
def test_cuda_hard_case_beta_near_one_unnormalized_keys(name):
    # Keys of norm ~20 and beta in [0.95, 1), normalised by the in-kernel L2 norm; a long sequence.
    q, k, v, g, beta, h0 = make(1, 1000, 2, 2, 32, 16, l2=True)
    k = k * 3.5
    beta = 0.95 + 0.05 * torch.rand_like(beta)
    kw = dict(use_qk_l2norm_in_kernel=True)
    do = torch.randn(1, 1000, 2, 16, dtype=torch.float64)
    dht = torch.randn(1, 2, 32, 16, dtype=torch.float64)
    inputs = (q, k, v, g, beta, h0)
    o, ht, gr = grads_of(ours(name), [t.to(DEV) for t in inputs], do.to(DEV), dht.to(DEV), **kw)
    for t in [o, ht] + [t for t in gr if t is not None]:
        assert torch.isfinite(t).all()
    eo, eh, eg = grads_of(ours(name), [t.double() for t in inputs], do, dht, **kw)
    close(o, eo, "o", rel=2e-3)
    close(ht, eh, "final_state", rel=2e-3)
    for a, b, label in zip(gr, eg, GRAD_NAMES):
        if a is not None:
            close(a, b, label, rel=5e-3)


@pytest.mark.parametrize("name", OPS)
def test_cuda_empty_sequence_passes_state_through(name):
    q, k, v, g, beta, h0 = make(2, 0, 1, 2, 8, 4, l2=False)
    dht = torch.randn(2, 2, 8, 4, dtype=torch.float64)
    o, ht, gr = grads_of(ours(name), [t.to(DEV) for t in (q, k, v, g, beta, h0)], torch.zeros(2, 0, 2, 4,
                         dtype=torch.float64, device=DEV), dht.to(DEV))
    assert o.shape == (2, 0, 2, 4)
    close(ht, h0, "final_state", rel=0)
    close(gr[5], dht, "dh0", rel=0)


def test_cuda_opcheck_and_compile():
    q, k, v, g, beta, h0 = (t.to(DEV) for t in make(1, 80, 2, 4, 32, 48, l2=True))
    q, k, v, g, beta = (t.to(torch.bfloat16).requires_grad_() for t in (q, k, v, g, beta))
    ops = torch.ops.linattn
    torch.library.opcheck(ops.chunk_gated_delta_rule.default, (q, k, v, g, beta),
                          dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True))
    torch.library.opcheck(ops.fused_recurrent_delta_rule.default, (q, k, v, beta), dict(initial_state=h0))
    torch.library.opcheck(ops._delta_rule_backward.default,
                          (q.detach(), k.detach(), v.detach(), g.detach(), beta.detach(), torch.randn_like(v),
                           None, None, h0, None))

    def f(q, k, v, g, beta):
        return linattn.chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)[0].float().sum()

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, g, beta), f(q, k, v, g, beta), atol=1e-2, rtol=1e-3)


def test_cuda_rejects_float64_large_heads_and_mixed_devices():
    q, k, v, g, beta, _ = make(1, 8, 1, 1, 4, 4, l2=False)
    with pytest.raises(RuntimeError, match="float64 is not supported by the CUDA kernels"):
        linattn.chunk_gated_delta_rule(*(t.double().to(DEV) for t in (q, k, v, g, beta)))
    with pytest.raises(RuntimeError, match="k is on cpu but q is on cuda"):
        linattn.chunk_delta_rule(q.to(DEV), k, v.to(DEV), beta.to(DEV))
    big = torch.randn(1, 8, 1, 300, device=DEV)
    with pytest.raises(RuntimeError, match="K <= 256"):
        linattn.chunk_delta_rule(big, big, v.to(DEV), beta.to(DEV))
    with pytest.raises(RuntimeError, match="V <= 256"):
        linattn.fused_recurrent_delta_rule(q.to(DEV), k.to(DEV), torch.randn(1, 8, 1, 300, device=DEV),
                                           beta.to(DEV))


# ---------------------------------------------------------------------------------------------------------
# Tensor-core chunked forward (chunk_delta_rule / chunk_gated_delta_rule in fp16 / bf16). The glue picks it
# for these inputs; LINATTN_DELTA_FORCE_SIMT=1 (read once per process) forces the fp32 SIMT kernel instead.
# The backward's states pass (pass 1) reruns the same tensor-core kernels in a states mode for these inputs
# (passes 2 and 3 are SIMT); LINATTN_DELTA_FORCE_SIMT=1 puts it back on the SIMT kernel.

TC_DTYPES = [torch.float16, torch.bfloat16]
CHUNK_OPS = ["chunk_delta_rule", "chunk_gated_delta_rule"]
TC_SHAPES = [(2, 64, 2, 2, 64, 64), (1, 130, 1, 2, 60, 100), (1, 200, 2, 4, 100, 60), (3, 1, 2, 2, 7, 5),
             (1, 65, 1, 1, 3, 3), (1, 70, 1, 2, 256, 256), (2, 129, 2, 2, 128, 128), (1, 77, 1, 1, 33, 256)]


def tc_case(name, dtype, shape, l2=True, N=None, hard=False, strong=False):
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, h0 = make(B, T, H, HV, K, V, l2, N=N)
    if hard:  # beta near 1 and pairs of nearly parallel keys
        beta = 1 - 1e-3 * torch.rand_like(beta)
        k[:, 1::2] = k[:, 0:T - T % 2:2] + 0.05 * torch.randn_like(k[:, 1::2])
    if strong:  # log gates down to -20 per step
        g = -20 * torch.rand_like(g) ** 4
    return [t.to(dtype) for t in (q, k, v, g, beta)], h0


def tc_forward(name, ins, h0, cu=None, l2=True):
    return run(name, *(t.to(DEV) for t in ins), initial_state=h0.to(DEV), output_final_state=True,
               use_qk_l2norm_in_kernel=l2, cu_seqlens=None if cu is None else cu.to(DEV))


def tc_reference(name, ins, h0, cu=None, l2=True, dtype=torch.float64):
    q, k, v, g, beta = ins
    return delta_rule_recurrence(q, k, v, beta, g if gated(name) else None, initial_state=h0,
                                 output_final_state=True, use_qk_l2norm_in_kernel=l2, cu_seqlens=cu, dtype=dtype)


def tc_check(name, ins, h0, cu=None, l2=True):
    o, ht = tc_forward(name, ins, h0, cu, l2)
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    eo, eh = tc_reference(name, [t.double() for t in ins], h0.double(), cu, l2)
    lo, lh = tc_reference(name, [t.to(DEV) for t in ins], h0.to(DEV), None if cu is None else cu.to(DEV), l2,
                          dtype=None)
    check(o, eo, lo, "o")
    check(ht, eh, lh, "final_state")
    return o, ht


@pytest.mark.parametrize("name", CHUNK_OPS)
@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("shape", TC_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("l2", [False, True])
def test_cuda_tc_delta_forward_vs_reference(name, dtype, shape, l2):
    ins, h0 = tc_case(name, dtype, shape, l2=l2)
    tc_check(name, ins, h0, l2=l2)


@pytest.mark.parametrize("name", CHUNK_OPS)
@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_delta_varlen_empty_sequences(name, dtype):
    lens = [0, 65, 1, 130, 0, 17, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    ins, h0 = tc_case(name, dtype, (1, sum(lens), 1, 2, 100, 60), N=len(lens))
    _, ht = tc_check(name, ins, h0, cu)
    for n in (0, 4):  # empty sequences pass their initial state through
        torch.testing.assert_close(ht[n].cpu(), h0[n], atol=0, rtol=0)


@pytest.mark.parametrize("name", CHUNK_OPS)
@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_delta_hard_cases(name, dtype):
    # beta near 1 with nearly parallel L2-normalised keys (I + A close to singular directions), and for the
    # gated op log gates down to -20 per step over a long sequence (decays down to e^{-1280} in a chunk).
    ins, h0 = tc_case(name, dtype, (1, 1000, 2, 2, 64, 64), hard=True, strong=True)
    tc_check(name, ins, h0)


_SIMT_SCRIPT = """
import sys, torch, linattn
x = torch.load(sys.argv[1])
out = []
for name, ins, h0, cu in x:
    q, k, v, g, beta = (t.cuda() for t in ins)
    fn = getattr(linattn, name)
    kw = dict(initial_state=h0.cuda(), output_final_state=True, use_qk_l2norm_in_kernel=True,
              cu_seqlens=None if cu is None else cu.cuda())
    o, ht = fn(q, k, v, g, beta, **kw) if "gated" in name else fn(q, k, v, beta, **kw)
    out.append((o.cpu(), ht.cpu()))
torch.save(out, sys.argv[2])
"""


def test_cuda_tc_delta_forward_matches_simt_path(tmp_path):
    import os
    import subprocess
    import sys
    lens = [0, 70, 1, 129]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    cases = []
    for dtype in TC_DTYPES:
        for name in CHUNK_OPS:
            for shape in ((2, 130, 2, 4, 60, 100), (1, 65, 1, 1, 256, 7), (1, 77, 2, 2, 7, 256)):
                ins, h0 = tc_case(name, dtype, shape)
                cases.append((name, ins, h0, None))
            ins, h0 = tc_case(name, dtype, (1, sum(lens), 2, 2, 33, 40), N=len(lens))
            cases.append((name, ins, h0, cu))
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_DELTA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    simt = torch.load(tmp_path / "out.pt")
    for (name, ins, h0, cu), (o_simt, ht_simt) in zip(cases, simt):
        o, ht = (t.cpu() for t in tc_forward(name, ins, h0, cu))
        assert not torch.equal(o, o_simt), "LINATTN_DELTA_FORCE_SIMT=1 did not switch the path"
        eo, eh = tc_reference(name, [t.double() for t in ins], h0.double(), cu)
        lo, lh = (t.cpu() for t in tc_reference(name, [t.to(DEV) for t in ins], h0.to(DEV),
                                                 None if cu is None else cu.to(DEV), dtype=None))
        for got, other, exact, same_prec, label in ((o, o_simt, eo, lo, "o"), (ht, ht_simt, eh, lh, "final_state")):
            check(other, exact, same_prec, f"{name} {label} (SIMT)")
            check(got, other.double(), same_prec, f"{name} {label} (tensor cores vs SIMT)")


TC_BWD_CASES = [  # (shape B, T, H, HV, K, V; hard: beta near 1, nearly parallel keys, log gates down to -20)
    ((1, 130, 1, 2, 60, 100), False), ((2, 65, 2, 2, 64, 64), False), ((3, 1, 1, 2, 7, 5), False),
    ((1, 200, 1, 1, 128, 128), True), ((1, 70, 1, 1, 256, 256), False), ((1, 5, 2, 4, 100, 60), True)]


def tc_backward_case(name, dtype, shape, hard, cu=None, N=None):
    ins, h0 = tc_case(name, dtype, shape, N=N, hard=hard, strong=hard)
    B, T, _, HV, K, V = shape
    do = torch.randn(B, T, HV, V, dtype=torch.float64)
    dht = torch.randn(N or B, HV, K, V, dtype=torch.float64)
    return ins, h0, do, dht, cu


def tc_backward_check(name, case, gr=None, o=None):
    """Gradients of the glue's path (gr, o given: those) against float64, within 4x the same-precision error."""
    ins, h0, do, dht, cu = case
    kw = dict(use_qk_l2norm_in_kernel=True, cu_seqlens=None if cu is None else cu.to(DEV))
    cuda_in = [t.to(DEV) for t in ins] + [h0.to(DEV)]
    if gr is None:
        o, _, gr = grads_of(ours(name), cuda_in, do.to(DEV), dht.to(DEV), **kw)
    eo, _, eg = grads_of(ref(name, torch.float64), [t.double() for t in list(ins) + [h0]], do, dht,
                         **dict(kw, cu_seqlens=cu))
    lo, _, lg = grads_of(ref(name, None), cuda_in, do.to(DEV), dht.to(DEV), **kw)
    check(o, eo, lo, "o")
    for a, b, c, label in zip(gr, eg, lg, GRAD_NAMES):
        if a is None and b is None:  # dg of the ungated op
            continue
        assert torch.isfinite(a).all(), f"{name} {label}: non-finite"
        check(a, b, c, f"{name} {label}", factor=4.0)
    return eg, lg


@pytest.mark.parametrize("name", CHUNK_OPS)
@pytest.mark.parametrize("dtype", TC_DTYPES)
@pytest.mark.parametrize("case", TC_BWD_CASES, ids=lambda c: "x".join(map(str, c[0])) + ("-hard" if c[1] else ""))
def test_cuda_tc_delta_backward_vs_reference(name, dtype, case):
    tc_backward_check(name, tc_backward_case(name, dtype, *case))


@pytest.mark.parametrize("name", CHUNK_OPS)
@pytest.mark.parametrize("dtype", TC_DTYPES)
def test_cuda_tc_delta_backward_varlen_empty_sequences(name, dtype):
    lens = [0, 65, 1, 0, 130]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    tc_backward_check(name, tc_backward_case(name, dtype, (1, sum(lens), 2, 4, 33, 64), False, cu, len(lens)))


_SIMT_BWD_SCRIPT = """
import sys, torch, linattn
cases = torch.load(sys.argv[1])
out = []
for name, (ins, h0, do, dht, cu) in cases:
    fn = getattr(linattn, name)
    t = [x.cuda().requires_grad_() for x in list(ins) + [h0]]
    q, k, v, g, beta, s0 = t
    kw = dict(initial_state=s0, output_final_state=True, use_qk_l2norm_in_kernel=True,
              cu_seqlens=None if cu is None else cu.cuda())
    o, ht = fn(q, k, v, g, beta, **kw) if "gated" in name else fn(q, k, v, beta, **kw)
    ((o.double() * do.cuda()).sum() + (ht.double() * dht.cuda()).sum()).backward()
    out.append((o.detach().cpu(), [None if x.grad is None else x.grad.cpu() for x in t]))
torch.save(out, sys.argv[2])
"""


def test_cuda_tc_delta_backward_matches_simt_path(tmp_path):
    # Same inputs through the SIMT backward (LINATTN_DELTA_FORCE_SIMT=1, a subprocess: read once per process):
    # both within tolerance of float64, and of each other.
    import os
    import subprocess
    import sys
    cases = [(name, tc_backward_case(name, dtype, *c)) for dtype in TC_DTYPES for name in CHUNK_OPS
             for c in (TC_BWD_CASES[0], TC_BWD_CASES[3])]
    torch.save(cases, tmp_path / "in.pt")
    env = dict(os.environ, LINATTN_DELTA_FORCE_SIMT="1", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run([sys.executable, "-c", _SIMT_BWD_SCRIPT, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                   env=env, check=True, timeout=600)
    for (name, case), (o_simt, g_simt) in zip(cases, torch.load(tmp_path / "out.pt")):
        eg, lg = tc_backward_check(name, case)
        tc_backward_check(name, case, gr=g_simt, o=o_simt)
        ins, h0, do, dht, cu = case
        kw = dict(use_qk_l2norm_in_kernel=True)
        _, _, gr = grads_of(ours(name), [t.to(DEV) for t in list(ins) + [h0]], do.to(DEV), dht.to(DEV), **kw)
        for a, b, c, label in zip(gr, g_simt, lg, GRAD_NAMES):
            if a is not None:
                check(a, b.double(), c, f"{name} {label} (tensor cores vs SIMT)", factor=4.0)
