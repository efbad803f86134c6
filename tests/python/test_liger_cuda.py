"""liger_attention on CUDA (the fused path of ops/liger/liger_cuda.cpp: feature-map softmax pair kernels, the mix
in the GLA forward's output write, do scaled as the GLA and window backwards load it) against the float64
definition, skipped without a GPU. Tolerance rule of the other CUDA tests: the error may be a few times that of
the same definition run by PyTorch in the kernel's input precision, plus a small floor."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import gla_recurrence, sliding_window_attention_reference

pytestmark = pytest.mark.cuda

DEV = "cuda"
NAMES = ["q", "k", "v", "g", "q_rot", "k_rot", "h0"]


def definition(q, k, v, g, q_rot, k_rot, h0, w, sw, lw, dtype=torch.float64):
    """sw * SWA(q_rot, k_rot, v) + lw * GLA(softmax(q), softmax(k), v, g, scale 1), every step in dtype (None: in
    the inputs' precision)."""
    lin, ht = gla_recurrence(q.softmax(-1), k.softmax(-1), v, g, None, 1.0, h0, True, dtype=dtype)
    win = sliding_window_attention_reference(q_rot, k_rot, v, w, dtype=dtype or q.dtype)
    return sw * win + lw * lin, ht


def make(B, T, H, D, V, gate, dtype):
    q, k, q_rot, k_rot = (torch.randn(B, T, H, D) for _ in range(4))
    g = F.logsigmoid(torch.randn((B, T, H, D) if gate == "key" else (B, T, H))) / 16
    ins = [t.to(dtype) for t in (q, k, torch.randn(B, T, H, V), g, q_rot, k_rot)]
    return ins + [torch.randn(B, H, D, V)]


def run(fn, ins, do, dht):
    """(o, ht, grads of every input) of sum(o * do) + sum(ht * dht)."""
    leaves = [t.detach().clone().requires_grad_() for t in ins]
    o, ht = fn(*leaves)
    ((o.double() * do).sum() + (ht.double() * dht).sum()).backward()
    return o, ht, [t.grad for t in leaves]


def check(got, exact, same_prec, name, factor):
    base = (same_prec.double().cpu() - exact).abs().max().item()
    err = (got.double().cpu() - exact).abs().max().item()
    floor = 1e-5 * max(exact.abs().max().item(), 1.0)
    assert err <= factor * base + floor, f"{name}: error {err:.3e}, same-precision reference {base:.3e}"


# (B, T, H, D, V): odd T around the chunk / window size, odd head dims, D = V = 256, T = 1.
SHAPES = [(2, 65, 2, 33, 60), (1, 130, 3, 64, 64), (1, 200, 2, 100, 7), (1, 70, 1, 256, 256), (3, 1, 2, 5, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gate", ["key", "scalar"])
def test_cuda_fused_forward_backward_vs_float64(dtype, shape, gate):
    B, T, H, D, V = shape
    w, sw, lw = 17, 0.3, 0.8
    ins = make(B, T, H, D, V, gate, dtype)
    do, dht = torch.randn(B, T, H, V, dtype=torch.float64), torch.randn(B, H, D, V, dtype=torch.float64)

    def op(q, k, v, g, q_rot, k_rot, h0):
        return linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size=w, initial_state=h0,
                                       output_final_state=True, softmax_weight=sw, linear_weight=lw)
    o, ht, grads = run(op, [t.to(DEV) for t in ins], do.to(DEV), dht.to(DEV))
    assert o.dtype == dtype and ht.dtype == torch.float32
    eo, eh, eg = run(lambda *a: definition(*a, w, sw, lw), [t.double() for t in ins], do, dht)
    lo, lh, lg = run(lambda *a: definition(*a, w, sw, lw, dtype=None), [t.to(DEV) for t in ins], do.to(DEV),
                     dht.to(DEV))
    check(o, eo, lo, "o", 3.0)
    check(ht, eh, lh, "ht", 3.0)
    for a, b, c, t, name in zip(grads, eg, lg, ins, NAMES):
        assert a.dtype == t.dtype, name
        check(a, b, c, "d" + name, 4.0)


def test_cuda_matches_the_composition_of_the_cuda_ops():
    # The fused path against sliding_window_attention + chunk_gla + softmax run separately on the same device.
    ins = make(2, 150, 2, 64, 48, "key", torch.bfloat16)
    do, dht = torch.randn(2, 150, 2, 48, dtype=torch.float64), torch.randn(2, 2, 64, 48, dtype=torch.float64)

    def composed(q, k, v, g, q_rot, k_rot, h0):
        lin, ht = linattn.chunk_gla(q.softmax(-1), k.softmax(-1), v, g, scale=1.0, initial_state=h0,
                                    output_final_state=True)
        return 0.5 * linattn.sliding_window_attention(q_rot, k_rot, v, 64) + 0.5 * lin, ht
    fused = run(lambda *a: linattn.liger_attention(*a[:6], initial_state=a[6], output_final_state=True),
                [t.to(DEV) for t in ins], do.to(DEV), dht.to(DEV))
    sep = run(composed, [t.to(DEV) for t in ins], do.to(DEV), dht.to(DEV))
    for name, a, b in zip(["o", "ht"] + ["d" + n for n in NAMES], fused[:2] + tuple(fused[2]), sep[:2] + tuple(sep[2])):
        err = (a.double() - b.double()).abs().max().item()
        assert err <= 2e-2 * max(b.abs().max().item(), 1e-3), f"{name}: {err:.3e}"


def test_cuda_simt_paths_in_a_subprocess():
    # LINATTN_GLA_FORCE_SIMT / LINATTN_SWA_FORCE_SIMT are read once per process: the SIMT GLA forward's mix and the
    # SIMT backwards' do_scale with half-precision inputs run in a child process.
    code = ("import sys, pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', __import__('os').environ"
            "['LIGER_TEST_FILE'] + '::test_cuda_fused_forward_backward_vs_float64', '-k', 'bfloat16 or float16']))")
    env = dict(os.environ, LINATTN_GLA_FORCE_SIMT="1", LINATTN_SWA_FORCE_SIMT="1", LIGER_TEST_FILE=__file__)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900,
                       cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_cuda_opcheck_compile_and_errors():
    q, k, v, g, q_rot, k_rot, h0 = (t.to(DEV) for t in make(1, 80, 2, 32, 32, "key", torch.bfloat16))
    leaves = [t.requires_grad_() for t in (q, k, v, g, q_rot, k_rot)]
    torch.library.opcheck(torch.ops.linattn.liger_attention.default, tuple(leaves),
                          dict(window_size=16, initial_state=h0, output_final_state=True))
    args = (q, k, v, g, q_rot, k_rot, 16, h0, True, 0.4, 0.6)
    fwd = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]
    torch.library.opcheck(torch.ops.linattn._liger_attention_forward.default, tuple(fwd))
    _, ht, o_win, lse, qf, kf = torch.ops.linattn._liger_attention_forward(*fwd)
    torch.library.opcheck(torch.ops.linattn._liger_attention_backward.default,
                          (qf, kf, *fwd[2:6], o_win, lse, torch.randn_like(o_win), torch.randn_like(ht), 16, h0,
                           0.4, 0.6))
    f = torch.compile(lambda *a: linattn.liger_attention(*a, window_size=16)[0].float().sum(), fullgraph=True)
    torch.testing.assert_close(f(*leaves), linattn.liger_attention(*leaves, window_size=16)[0].float().sum(),
                               atol=1e-2, rtol=1e-3)
    with pytest.raises(RuntimeError, match="float64 is not supported by the CUDA kernels"):
        linattn.liger_attention(*(t.detach().double() for t in leaves))
    with pytest.raises(RuntimeError, match="<= 256"):
        big = torch.randn(1, 4, 1, 300, device=DEV)
        linattn.liger_attention(big, big, big[..., :8], big, big, big)
