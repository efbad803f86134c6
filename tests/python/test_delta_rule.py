"""DeltaNet / gated DeltaNet on the CPU: float64 reference, chunked == recurrent, gradcheck, varlen, split
state, grouped value heads, L2 norm, a numerically hard case, opcheck, torch.compile and bad input."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import delta_rule_recurrence
from helpers import assert_close

OPS = ["chunk_delta_rule", "fused_recurrent_delta_rule", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"]


def gated(name):
    return "gated" in name


def make(B, T, H, HV, K, V, dtype=torch.float64, normalize_k=True, beta_range=(0.0, 1.0), h0=True):
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype)
    if normalize_k:
        k = F.normalize(k, dim=-1)
    v = torch.randn(B, T, HV, V, dtype=dtype)
    lo, hi = beta_range
    beta = lo + (hi - lo) * torch.rand(B, T, HV, dtype=dtype)
    g = F.logsigmoid(torch.randn(B, T, HV, dtype=dtype) + 2)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    init = torch.randn(B, HV, K, V, dtype=state_dtype) if h0 else None
    return q, k, v, g, beta, init


def run(name, q, k, v, g, beta, **kw):
    fn = getattr(linattn, name)
    return fn(q, k, v, g, beta, **kw) if gated(name) else fn(q, k, v, beta, **kw)


def ref(name, q, k, v, g, beta, **kw):
    return delta_rule_recurrence(q, k, v, beta, g if gated(name) else None, **kw)


SHAPES = [(2, 1, 1, 1, 1, 1), (1, 64, 2, 2, 16, 8), (2, 70, 2, 4, 60, 100), (1, 129, 1, 3, 7, 5), (2, 33, 3, 3, 32, 40)]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("l2", [False, True])
def test_forward_matches_reference(name, shape, dtype, l2):
    B, T, H, HV, K, V = shape
    q, k, v, g, beta, h0 = make(B, T, H, HV, K, V, dtype=dtype)
    o, ht = run(name, q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=l2)
    assert o.shape == (B, T, HV, V) and o.dtype == dtype and ht.shape == (B, HV, K, V)
    ro, rh = ref(name, q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=l2)
    if dtype == torch.float64:
        assert_close(o, ro, atol=1e-10, rtol=1e-10, name="o")
        assert_close(ht, rh, atol=1e-10, rtol=1e-10, name="final_state")
        return
    lo, lh = ref(name, q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=l2,
                 dtype=torch.float32)
    for label, got, exact, same in (("o", o, ro, lo), ("final_state", ht, rh, lh)):
        base = (same.double() - exact.double()).abs().max().item()
        err = (got.double() - exact.double()).abs().max().item()
        assert err <= 4 * base + 1e-5 * exact.abs().max().item() + 1e-6, f"{label}: {err} vs float32 ref {base}"


@pytest.mark.parametrize("pair", [("chunk_delta_rule", "fused_recurrent_delta_rule"),
                                  ("chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule")])
def test_chunked_equals_recurrent(pair):
    q, k, v, g, beta, h0 = make(2, 300, 2, 4, 24, 20, dtype=torch.float32)
    a = run(pair[0], q, k, v, g, beta, initial_state=h0, output_final_state=True)
    b = run(pair[1], q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert_close(a[0], b[0], atol=2e-4, rtol=2e-4, name="o")
    assert_close(a[1], b[1], atol=2e-4, rtol=2e-4, name="final_state")


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("l2", [False, True])
def test_gradcheck(name, l2):
    q, k, v, g, beta, h0 = make(1, 67, 1, 2, 3, 2)
    tensors = [q, k, v, beta, h0] + ([g] if gated(name) else [])
    for t in tensors:
        t.requires_grad_()

    def f(q, k, v, beta, h0, *gate):
        return run(name, q, k, v, gate[0] if gate else None, beta, initial_state=h0, output_final_state=True,
                   use_qk_l2norm_in_kernel=l2)

    assert torch.autograd.gradcheck(f, tensors, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", OPS)
def test_gradients_match_reference_grouped_heads(name):
    q, k, v, g, beta, h0 = make(2, 130, 2, 4, 9, 7)
    do = torch.randn_like(v)
    dht = torch.randn_like(h0)

    def grads(fn):
        ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
        o, ht = fn(*ins)
        ((o * do).sum() + (ht * dht).sum()).backward()
        return ins

    got = grads(lambda q, k, v, g, beta, h0: run(name, q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                                 use_qk_l2norm_in_kernel=True))
    want = grads(lambda q, k, v, g, beta, h0: ref(name, q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                                  use_qk_l2norm_in_kernel=True))
    for a, b, label in zip(got, want, ["dq", "dk", "dv", "dg", "dbeta", "dh0"]):
        if label == "dg" and not gated(name):
            assert a.grad is None
            continue
        assert_close(a.grad, b.grad, atol=1e-9, rtol=1e-9, name=label)


@pytest.mark.parametrize("name", OPS)
def test_varlen_equals_per_sequence(name):
    lens = [0, 37, 0, 93, 1, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist())
    q, k, v, g, beta, _ = make(1, sum(lens), 1, 2, 10, 6, h0=False)
    h0 = torch.randn(len(lens), 2, 10, 6, dtype=torch.float64)
    do = torch.randn_like(v)
    dht = torch.randn_like(h0)
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
    o, ht = run(name, *ins[:5], initial_state=ins[5], output_final_state=True, cu_seqlens=cu)
    ((o * do).sum() + (ht * dht).sum()).backward()
    for n, (bos, eos) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = [t[:, bos:eos].detach().clone().requires_grad_() for t in (q, k, v, g, beta)]
        h0n = h0[n:n + 1].clone().requires_grad_()
        on, hn = run(name, *part, initial_state=h0n, output_final_state=True)
        ((on * do[:, bos:eos]).sum() + (hn * dht[n:n + 1]).sum()).backward()
        assert_close(o[:, bos:eos], on, atol=1e-11, rtol=1e-11, name=f"o[{n}]")
        assert_close(ht[n], hn[0], atol=1e-11, rtol=1e-11, name=f"final_state[{n}]")
        for full, piece, label in zip(ins[:5], part, ["dq", "dk", "dv", "dg", "dbeta"]):
            if label == "dg" and not gated(name):
                continue
            assert_close(full.grad[:, bos:eos], piece.grad, atol=1e-10, rtol=1e-10, name=f"{label}[{n}]")
        assert_close(ins[5].grad[n], h0n.grad[0], atol=1e-10, rtol=1e-10, name=f"dh0[{n}]")


@pytest.mark.parametrize("name", ["chunk_delta_rule", "chunk_gated_delta_rule"])
@pytest.mark.parametrize("split", [1, 64, 100])
def test_split_sequence_with_state_equals_whole(name, split):
    q, k, v, g, beta, h0 = make(2, 170, 1, 1, 8, 5)
    whole = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
    o, ht = run(name, *whole[:5], initial_state=whole[5], output_final_state=True)
    w = torch.randn_like(o)
    ((o * w).sum() + ht.sum()).backward()
    parts = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta, h0)]
    o1, h1 = run(name, *(t[:, :split] for t in parts[:5]), initial_state=parts[5], output_final_state=True)
    o2, h2 = run(name, *(t[:, split:] for t in parts[:5]), initial_state=h1, output_final_state=True)
    ((torch.cat([o1, o2], 1) * w).sum() + h2.sum()).backward()
    assert_close(torch.cat([o1, o2], 1), o, atol=1e-11, rtol=1e-11, name="o")
    assert_close(h2, ht, atol=1e-11, rtol=1e-11, name="final_state")
    for a, b, label in zip(parts, whole, ["dq", "dk", "dv", "dg", "dbeta", "dh0"]):
        if label == "dg" and not gated(name):
            continue
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, name=label)


@pytest.mark.parametrize("name", ["chunk_delta_rule", "chunk_gated_delta_rule"])
def test_hard_case_beta_near_one_unnormalized_keys(name):
    # Keys of norm ~20 and beta in [0.95, 1): without the in-kernel L2 norm the UT system is ill-conditioned;
    # with it, nothing may become NaN/inf and the result must match the float64 recurrence.
    q, k, v, g, beta, h0 = make(1, 1000, 2, 2, 32, 16, dtype=torch.float32, normalize_k=False,
                                beta_range=(0.95, 1.0))
    k = k * 3.5
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, beta)]
    o, ht = run(name, *ins, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True)
    (o.sum() + ht.sum()).backward()
    for t in [o, ht] + [t.grad for t in ins if t.grad is not None]:
        assert torch.isfinite(t).all()
    ro, rh = ref(name, q, k, v, g, beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True)
    assert_close(o, ro, atol=2e-3, rtol=2e-3, name="o")
    assert_close(ht, rh, atol=2e-3, rtol=2e-3, name="final_state")


def test_opcheck_and_compile():
    q, k, v, g, beta, h0 = make(1, 70, 2, 4, 6, 5)
    for t in (q, k, v, g, beta, h0):
        t.requires_grad_()
    ops = torch.ops.linattn
    torch.library.opcheck(ops.chunk_gated_delta_rule.default, (q, k, v, g, beta),
                          dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True))
    torch.library.opcheck(ops.chunk_delta_rule.default, (q, k, v, beta), dict(cu_seqlens=torch.tensor([0, 20, 70])))
    torch.library.opcheck(ops.fused_recurrent_gated_delta_rule.default, (q, k, v, g, beta),
                          dict(initial_state=h0, output_final_state=True))
    torch.library.opcheck(ops.fused_recurrent_delta_rule.default, (q, k, v, beta), dict())
    torch.library.opcheck(ops._delta_rule_backward.default,
                          (q.detach(), k.detach(), v.detach(), g.detach(), beta.detach(), torch.randn_like(v),
                           None, None, h0.detach(), None))

    def f(q, k, v, g, beta):
        o, ht = linattn.chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True,
                                               use_qk_l2norm_in_kernel=True)
        return o.square().sum() + ht.sum()

    args = [t.detach().float().requires_grad_() for t in (q, k, v, g, beta)]
    eager = f(*args)
    eg = torch.autograd.grad(eager, args)
    args2 = [t.detach().clone().requires_grad_() for t in args]
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*args2)
    cg = torch.autograd.grad(compiled, args2)
    assert_close(compiled, eager, atol=1e-4, rtol=1e-5)
    for a, b in zip(cg, eg):
        assert_close(a, b, atol=1e-4, rtol=1e-5)


D = torch.float64
BAD = [
    ("hv not multiple", lambda a: a.update(v=torch.randn(2, 12, 3, 5, dtype=D), beta=torch.rand(2, 12, 3, dtype=D),
                                            g=torch.zeros(2, 12, 3, dtype=D)), r"must be a multiple of the q/k heads"),
    ("beta shape", lambda a: a.update(beta=torch.rand(2, 12, 2, dtype=D)), r"beta must have shape \[B, T, HV\]"),
    ("g shape", lambda a: a.update(g=torch.zeros(2, 12, 4, 1, dtype=D)), r"g must have shape \[B, T, HV\]"),
    ("integer beta", lambda a: a.update(beta=torch.ones(2, 12, 4, dtype=torch.long)), r"beta must be a floating-point"),
    ("h0 heads", lambda a: a.update(initial_state=torch.randn(2, 2, 6, 5, dtype=D)), r"initial_state must have shape"),
    ("k shape", lambda a: a.update(k=torch.randn(2, 12, 2, 5, dtype=D)), r"k must have the shape of q"),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c[0])
def test_bad_input(case):
    _, mutate, pattern = case
    a = dict(q=torch.randn(2, 12, 2, 6, dtype=D), k=torch.randn(2, 12, 2, 6, dtype=D),
             v=torch.randn(2, 12, 4, 5, dtype=D), g=torch.zeros(2, 12, 4, dtype=D), beta=torch.rand(2, 12, 4, dtype=D),
             initial_state=None)
    mutate(a)
    with pytest.raises(RuntimeError, match=pattern):
        linattn.chunk_gated_delta_rule(a["q"], a["k"], a["v"], a["g"], a["beta"], initial_state=a["initial_state"])


def test_inplace_final_state_decoding_loop():
    q, k, v, g, beta, h0 = make(2, 12, 2, 2, 8, 4)
    state = h0.clone()
    outs = []
    for t in range(12):
        o, s = linattn.fused_recurrent_gated_delta_rule(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], g[:, t:t + 1],
                                                        beta[:, t:t + 1], initial_state=state,
                                                        inplace_final_state=True)
        assert s.data_ptr() == state.data_ptr()
        outs.append(o)
    ro, rh = ref("fused_recurrent_gated_delta_rule", q, k, v, g, beta, initial_state=h0, output_final_state=True)
    assert_close(torch.cat(outs, 1), ro, atol=1e-12, rtol=1e-12)
    assert_close(state, rh, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="needs an initial_state"):
        linattn.fused_recurrent_delta_rule(q, k, v, beta, inplace_final_state=True)
