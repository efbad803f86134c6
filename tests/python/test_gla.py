"""GLA family on the CPU: float64 reference, chunked == recurrent, gradcheck, varlen, split state,
strong decay, opcheck, torch.compile and bad input."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import gla_recurrence
from helpers import assert_close, gla_inputs

OPS = ["chunk_gla", "fused_recurrent_gla", "chunk_simple_gla", "fused_recurrent_simple_gla"]
GATE = {"chunk_gla": "key", "fused_recurrent_gla": "key", "chunk_simple_gla": "scalar",
        "fused_recurrent_simple_gla": "scalar"}


def run(name, q, k, v, g, g_gamma=None, **kw):
    fn = getattr(linattn, name)
    if GATE[name] == "key":
        assert g_gamma is None
        return fn(q, k, v, g, **kw)
    return fn(q, k, v, g, g_gamma, **kw)


def ref(q, k, v, g, g_gamma=None, dtype=torch.float64, **kw):
    return gla_recurrence(q, k, v, g, g_gamma, dtype=dtype, **kw)


def check_against_reference(out, inputs, g_gamma=None, **kw):
    """float64 inputs: tight tolerance. float32: the kernel's error may be at most a few times the error of the
    same recurrence evaluated in float32 by PyTorch (plus a small floor)."""
    q, k, v, g = inputs
    o, ht = out
    ro, rh = ref(q, k, v, g, g_gamma, **kw)
    if q.dtype == torch.float64:
        assert_close(o, ro, atol=1e-10, rtol=1e-10, name="o")
        if rh is not None:
            assert_close(ht, rh, atol=1e-10, rtol=1e-10, name="final_state")
        return
    lo, lh = ref(q, k, v, g, g_gamma, dtype=q.dtype, **kw)
    pairs = [("o", o, ro, lo)] + ([("final_state", ht, rh, lh)] if rh is not None else [])
    for name, got, exact, same_prec in pairs:
        base = (same_prec.double() - exact.double()).abs().max().item()
        err = (got.double() - exact.double()).abs().max().item()
        assert err <= 4 * base + 1e-5 * exact.abs().max().item() + 1e-6, f"{name}: error {err} vs float32 ref {base}"


SHAPES = [(2, 1, 1, 1, 1), (1, 64, 2, 16, 8), (2, 70, 3, 60, 100), (1, 129, 2, 7, 5), (2, 33, 1, 32, 40)]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(name, shape, dtype):
    B, T, H, K, V = shape
    q, k, v, g, h0 = gla_inputs(B, T, H, K, V, dtype=dtype, gate=GATE[name], h0=True)
    out = run(name, q, k, v, g, initial_state=h0, output_final_state=True)
    assert out[0].dtype == dtype and out[0].shape == (B, T, H, V)
    assert out[1].shape == (B, H, K, V)
    check_against_reference(out, (q, k, v, g), initial_state=h0, output_final_state=True)


@pytest.mark.parametrize("name", ["chunk_simple_gla", "fused_recurrent_simple_gla"])
@pytest.mark.parametrize("gates", ["g", "g_gamma", "both", "none"])
def test_simple_gla_gate_forms(name, gates):
    q, k, v, g, _ = gla_inputs(2, 90, 3, 12, 10, gate="scalar")
    g_gamma = F.logsigmoid(torch.randn(3, dtype=torch.float64) + 3)
    g_arg = g if gates in ("g", "both") else None
    gg_arg = g_gamma if gates in ("g_gamma", "both") else None
    out = run(name, q, k, v, g_arg, gg_arg, output_final_state=True)
    check_against_reference(out, (q, k, v, g_arg), g_gamma=gg_arg, output_final_state=True)


@pytest.mark.parametrize("pair", [("chunk_gla", "fused_recurrent_gla"), ("chunk_simple_gla", "fused_recurrent_simple_gla")])
def test_chunked_equals_recurrent(pair):
    chunk, recurrent = pair
    q, k, v, g, h0 = gla_inputs(2, 300, 2, 24, 20, dtype=torch.float32, gate=GATE[chunk], h0=True)
    oc, hc = run(chunk, q, k, v, g, initial_state=h0, output_final_state=True)
    orr, hr = run(recurrent, q, k, v, g, initial_state=h0, output_final_state=True)
    assert_close(oc, orr, atol=2e-4, rtol=2e-4, name="o")
    assert_close(hc, hr, atol=2e-4, rtol=2e-4, name="final_state")


def test_no_final_state_unless_asked():
    q, k, v, g, _ = gla_inputs(1, 10, 1, 4, 4)
    assert linattn.chunk_gla(q, k, v, g)[1] is None
    assert linattn.fused_recurrent_simple_gla(q, k, v)[1] is None


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("with_gamma", [False, True])
def test_gradcheck(name, with_gamma):
    if with_gamma and GATE[name] == "key":
        pytest.skip("g_gamma belongs to the simple-GLA ops")
    # T > 64 crosses a chunk boundary; K, V odd sizes.
    q, k, v, g, h0 = gla_inputs(1, 67, 2, 3, 2, gate=GATE[name], h0=True)
    g_gamma = F.logsigmoid(torch.randn(2, dtype=torch.float64)) if with_gamma else None
    tensors = [q, k, v, g, h0] + ([g_gamma] if with_gamma else [])
    for t in tensors:
        t.requires_grad_()

    def f(q, k, v, g, h0, *gamma):
        o, ht = run(name, q, k, v, g, *(gamma or ([None] if GATE[name] == "scalar" else [])),
                    initial_state=h0, output_final_state=True)
        return o, ht

    assert torch.autograd.gradcheck(f, tensors, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", OPS)
def test_gradients_match_reference(name):
    q, k, v, g, h0 = gla_inputs(2, 130, 2, 9, 7, gate=GATE[name], h0=True)
    do = torch.randn(2, 130, 2, 7, dtype=torch.float64)
    dht = torch.randn_like(h0)

    def grads(fn):
        ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, h0)]
        o, ht = fn(*ins)
        ((o * do).sum() + (ht * dht).sum()).backward()
        return [t.grad for t in ins]

    got = grads(lambda q, k, v, g, h0: run(name, q, k, v, g, initial_state=h0, output_final_state=True))
    want = grads(lambda q, k, v, g, h0: ref(q, k, v, g, initial_state=h0, output_final_state=True))
    for a, b, n in zip(got, want, ["dq", "dk", "dv", "dg", "dh0"]):
        assert_close(a, b, atol=1e-9, rtol=1e-9, name=n)


@pytest.mark.parametrize("name", OPS)
def test_varlen_equals_per_sequence(name):
    lens = [0, 37, 0, 93, 1, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.long)
    T, H, K, V = sum(lens), 2, 10, 6
    q, k, v, g, _ = gla_inputs(1, T, H, K, V, gate=GATE[name])
    h0 = torch.randn(len(lens), H, K, V, dtype=torch.float64)
    do = torch.randn(1, T, H, V, dtype=torch.float64)
    dht = torch.randn_like(h0)

    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, h0)]
    o, ht = run(name, *ins[:4], initial_state=ins[4], output_final_state=True, cu_seqlens=cu)
    ((o * do).sum() + (ht * dht).sum()).backward()

    for n, (bos, eos) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        part = [t[:, bos:eos].detach().clone().requires_grad_() for t in (q, k, v, g)]
        h0n = h0[n:n + 1].clone().requires_grad_()
        on, hn = run(name, *part, initial_state=h0n, output_final_state=True)
        ((on * do[:, bos:eos]).sum() + (hn * dht[n:n + 1]).sum()).backward()
        assert_close(o[:, bos:eos], on, atol=1e-11, rtol=1e-11, name=f"o[{n}]")
        assert_close(ht[n], hn[0], atol=1e-11, rtol=1e-11, name=f"final_state[{n}]")
        for full, piece, label in zip(ins[:4], part, ["dq", "dk", "dv", "dg"]):
            assert_close(full.grad[:, bos:eos], piece.grad, atol=1e-10, rtol=1e-10, name=f"{label}[{n}]")
        assert_close(ins[4].grad[n], h0n.grad[0], atol=1e-10, rtol=1e-10, name=f"dh0[{n}]")


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("split", [1, 64, 100])
def test_split_sequence_with_state_equals_whole(name, split):
    T = 170
    q, k, v, g, h0 = gla_inputs(2, T, 2, 8, 5, gate=GATE[name], h0=True)
    whole_in = [t.detach().clone().requires_grad_() for t in (q, k, v, g, h0)]
    o, ht = run(name, *whole_in[:4], initial_state=whole_in[4], output_final_state=True)
    w = torch.randn_like(o)
    ((o * w).sum() + ht.sum()).backward()

    parts_in = [t.detach().clone().requires_grad_() for t in (q, k, v, g, h0)]
    first = [t[:, :split] for t in parts_in[:4]]
    second = [t[:, split:] for t in parts_in[:4]]
    o1, h1 = run(name, *first, initial_state=parts_in[4], output_final_state=True)
    o2, h2 = run(name, *second, initial_state=h1, output_final_state=True)
    ((torch.cat([o1, o2], 1) * w).sum() + h2.sum()).backward()

    assert_close(torch.cat([o1, o2], 1), o, atol=1e-11, rtol=1e-11, name="o")
    assert_close(h2, ht, atol=1e-11, rtol=1e-11, name="final_state")
    for a, b, label in zip(parts_in, whole_in, ["dq", "dk", "dv", "dg", "dh0"]):
        assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, name=label)


@pytest.mark.parametrize("name", ["chunk_gla", "chunk_simple_gla"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strong_decay_long_sequence(name, dtype):
    q, k, v, g, h0 = gla_inputs(1, 700, 2, 16, 8, dtype=dtype, gate=GATE[name], strong=True, h0=True)
    assert g.min() < -15
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g)]
    o, ht = run(name, *ins, initial_state=h0, output_final_state=True)
    (o.sum() + ht.sum()).backward()
    for t in [o, ht] + [t.grad for t in ins]:
        assert torch.isfinite(t).all()
    check_against_reference((o, ht), (q, k, v, g), initial_state=h0, output_final_state=True)


def test_empty_sequence():
    q, k, v, g, h0 = gla_inputs(2, 0, 2, 4, 3, h0=True)
    o, ht = linattn.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 3)
    assert_close(ht, h0, atol=0, rtol=0, name="final_state")


def test_gradient_through_final_state_only():
    q, k, v, g, h0 = gla_inputs(1, 80, 2, 5, 4, h0=True)
    for t in (q, k, v, g, h0):
        t.requires_grad_()
    _, ht = linattn.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    grads = torch.autograd.grad(ht.sum(), (q, k, v, g, h0), allow_unused=True)
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, g, h0)]
    _, rh = gla_recurrence(*ins[:4], initial_state=ins[4], output_final_state=True)
    want = torch.autograd.grad(rh.sum(), ins, allow_unused=True)
    for a, b in zip(grads, want):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_default_scale_is_inverse_sqrt_k():
    q, k, v, g, _ = gla_inputs(1, 20, 1, 16, 4)
    a, _ = linattn.chunk_gla(q, k, v, g)
    b, _ = linattn.chunk_gla(q, k, v, g, scale=0.25)
    c, _ = linattn.chunk_gla(q, k, v, g, scale=0.5)
    assert_close(a, b, atol=1e-14, rtol=0)
    assert (a - c).abs().max() > 1e-3
