"""Decoding states of the hybrid ops: a prefix prefilled, the rest decoded (one token or several at a time),
equals the op on the whole sequence, for window sizes below, around and above the prefix length."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.ops.liger import liger_decode, liger_prefill
from linattn.ops.lolcats import lolcats_decode, lolcats_empty_state, lolcats_prefill_state
from helpers import assert_close


def lolcats_inputs(B=2, T=29, H=2, D=6, V=5, Fd=4):
    q, k = torch.randn(B, T, H, D, dtype=torch.float64), torch.randn(B, T, H, D, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    fq = F.softmax(torch.randn(B, T, H, Fd, dtype=torch.float64), -1)
    fk = F.softmax(torch.randn(B, T, H, Fd, dtype=torch.float64), -1)
    return q, k, v, fq, fk, torch.randn(H, dtype=torch.float64)


@pytest.mark.parametrize("w", [1, 3, 8, 64])
@pytest.mark.parametrize("prefix", [0, 1, 11])
@pytest.mark.parametrize("step", [1, 4])
def test_lolcats_prefill_then_decode_equals_full(w, prefix, step):
    q, k, v, fq, fk, wf = lolcats_inputs()
    full = linattn.lolcats_attention(q, k, v, fq, fk, wf, window_size=w)
    B, T, H, D = q.shape
    if prefix:
        outs = [linattn.lolcats_attention(q[:, :prefix], k[:, :prefix], v[:, :prefix], fq[:, :prefix],
                                          fk[:, :prefix], wf, window_size=w)]
        state = lolcats_prefill_state(k[:, :prefix], v[:, :prefix], fk[:, :prefix], w)
    else:
        outs, state = [], lolcats_empty_state(B, H, D, v.shape[-1], fq.shape[-1], q.dtype, q.device)
    for t in range(prefix, T, step):
        sl = slice(t, t + step)
        o, state = lolcats_decode(q[:, sl], k[:, sl], v[:, sl], fq[:, sl], fk[:, sl], wf, state, window_size=w)
        outs.append(o)
    assert_close(torch.cat(outs, 1), full, atol=1e-12, rtol=1e-12)
    assert state.k.shape[1] == min(w - 1, T)
    # The sums hold exactly the tokens that left the window.
    n = T - state.k.shape[1]
    assert_close(state.ksum, fk[:, :n].sum(1), atol=1e-12, rtol=1e-12)


def test_lolcats_decode_half_precision_state_is_fp32():
    q, k, v, fq, fk, wf = (t.float() for t in lolcats_inputs(T=12))
    state = lolcats_prefill_state(k[:, :5].half(), v[:, :5].half(), fk[:, :5].half(), 4)
    assert state.kv.dtype == torch.float32 and state.k.dtype == torch.float16
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        lolcats_decode(q, k, v, fq, fk, wf, state, window_size=0)


def liger_inputs(B=2, T=37, H=2, D=6, V=5, gate="key"):
    q, k = torch.randn(B, T, H, D, dtype=torch.float64), torch.randn(B, T, H, D, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    g = linattn.liger_gate(k) if gate == "key" else linattn.liger_gate(k, 1)[..., 0]
    return q, k, v, g, torch.randn_like(q), torch.randn_like(k)


@pytest.mark.parametrize("w", [1, 4, 16, 64])
@pytest.mark.parametrize("prefix,step", [(1, 1), (9, 1), (9, 5), (20, 70)])
@pytest.mark.parametrize("gate", ["key", "scalar"])
def test_liger_prefill_then_decode_equals_full(w, prefix, step, gate):
    q, k, v, g, qr, kr = liger_inputs(gate=gate)
    full, h_full = linattn.liger_attention(q, k, v, g, qr, kr, window_size=w, output_final_state=True,
                                           softmax_weight=0.3, linear_weight=0.7)
    o, state = liger_prefill(*(t[:, :prefix] for t in (q, k, v, g, qr, kr)), window_size=w,
                             softmax_weight=0.3, linear_weight=0.7)
    outs = [o]
    for t in range(prefix, q.shape[1], step):
        o, state = liger_decode(*(x[:, t:t + step] for x in (q, k, v, g, qr, kr)), state, window_size=w,
                                softmax_weight=0.3, linear_weight=0.7)
        outs.append(o)
    assert_close(torch.cat(outs, 1), full, atol=1e-12, rtol=1e-12)
    assert_close(state.h, h_full, atol=1e-12, rtol=1e-12)
    assert state.k_rot.shape[1] == min(w - 1, q.shape[1])
