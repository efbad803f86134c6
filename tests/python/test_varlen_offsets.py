"""cu_seqlens handling shared by every varlen op: the host copy cu_seqlens_cpu (checked on the host, moved to
the device when given alone), the values check of cu_seqlens on its own device (linattn::_check_cu_seqlens),
and on a GPU: varlen forward and backward without a device->host synchronisation, and bad device offsets
caught by the device-side check."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import linattn

from helpers import assert_close


def _offsets(T, cuts):
    return torch.tensor([0, *cuts, T], dtype=torch.long)


def _inputs(op, T, device="cpu", dtype=torch.float64):
    H, K, V = 2, 5, 7
    q = torch.randn(1, T, H, K, dtype=dtype, device=device)
    k = torch.randn(1, T, H, K, dtype=dtype, device=device)
    v = torch.randn(1, T, H, V, dtype=dtype, device=device)
    beta = torch.rand(1, T, H, dtype=dtype, device=device)
    g_key = F.logsigmoid(torch.randn(1, T, H, K, dtype=dtype, device=device) + 2)
    g_head = F.logsigmoid(torch.randn(1, T, H, dtype=dtype, device=device) + 2)
    return {
        "chunk_gla": lambda **kw: linattn.chunk_gla(q, k, v, g_key, **kw)[0],
        "fused_recurrent_gla": lambda **kw: linattn.fused_recurrent_gla(q, k, v, g_key, **kw)[0],
        "chunk_simple_gla": lambda **kw: linattn.chunk_simple_gla(q, k, v, g_head, **kw)[0],
        "fused_recurrent_simple_gla": lambda **kw: linattn.fused_recurrent_simple_gla(q, k, v, g_head, **kw)[0],
        "chunk_delta_rule": lambda **kw: linattn.chunk_delta_rule(q, F.normalize(k, dim=-1), v, beta, **kw)[0],
        "fused_recurrent_delta_rule":
            lambda **kw: linattn.fused_recurrent_delta_rule(q, F.normalize(k, dim=-1), v, beta, **kw)[0],
        "chunk_gated_delta_rule":
            lambda **kw: linattn.chunk_gated_delta_rule(q, F.normalize(k, dim=-1), v, g_head, beta, **kw)[0],
        "fused_recurrent_gated_delta_rule":
            lambda **kw: linattn.fused_recurrent_gated_delta_rule(q, F.normalize(k, dim=-1), v, g_head, beta,
                                                                  **kw)[0],
        "sliding_window_attention": lambda **kw: linattn.sliding_window_attention(q, k, v, 3, **kw),
    }[op]


OPS = ["chunk_gla", "fused_recurrent_gla", "chunk_simple_gla", "fused_recurrent_simple_gla", "chunk_delta_rule",
       "fused_recurrent_delta_rule", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule",
       "sliding_window_attention"]


@pytest.mark.parametrize("op", OPS)
def test_host_offsets_alone_equal_device_offsets(op):
    T = 29
    run = _inputs(op, T)
    cu = _offsets(T, [7, 7, 20])  # with an empty sequence
    expected = run(cu_seqlens=cu)
    assert_close(run(cu_seqlens_cpu=cu.clone()), expected, 0, 0, op)
    assert_close(run(cu_seqlens=cu, cu_seqlens_cpu=cu.clone()), expected, 0, 0, op)
    # and the varlen result really is per sequence: not the same as one packed sequence
    assert (run() - expected).abs().max() > 1e-3


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad, match", [
    ([1, 5, 29], "start at 0"),
    ([0, 5, 28], "end at T=29"),
    ([0, 9, 4, 29], "non-decreasing"),
])
def test_bad_host_offsets_name_the_argument(op, bad, match):
    run = _inputs(op, 29)
    with pytest.raises(ValueError, match=f"{op}: cu_seqlens_cpu must .*{match}"):
        run(cu_seqlens_cpu=torch.tensor(bad, dtype=torch.long))


def test_host_offsets_wrong_type_or_shape():
    run = _inputs("chunk_gla", 12)
    with pytest.raises(ValueError, match="cu_seqlens_cpu must be int64 of shape"):
        run(cu_seqlens_cpu=torch.tensor([0, 12], dtype=torch.int32))
    with pytest.raises(ValueError, match="cu_seqlens_cpu must be int64 of shape"):
        run(cu_seqlens_cpu=torch.tensor([12], dtype=torch.long))
    with pytest.raises(ValueError, match="host copy of cu_seqlens"):
        run(cu_seqlens=_offsets(12, [4]), cu_seqlens_cpu=_offsets(12, [4, 6]))


@pytest.mark.parametrize("bad, match", [
    ([1, 5, 29], "must start at 0"),
    ([0, 5, 28], "must end at T=29"),
    ([0, 9, 4, 29], "must be non-decreasing"),
])
def test_device_offsets_check_on_cpu(bad, match):
    # The op-level check (linattn::_check_cu_seqlens) on CPU tensors raises at once, naming the op.
    with pytest.raises(RuntimeError, match=f"chunk_gla: cu_seqlens {match}"):
        _inputs("chunk_gla", 29)(cu_seqlens=torch.tensor(bad, dtype=torch.long))
    with pytest.raises(RuntimeError, match=f"my_op: cu_seqlens {match}"):
        torch.ops.linattn._check_cu_seqlens(torch.tensor(bad, dtype=torch.long), 29, "my_op")
    torch.ops.linattn._check_cu_seqlens(_offsets(29, [3, 3, 17]), 29, "my_op")


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_varlen_never_synchronises(op):
    T = 300
    run = _inputs(op, T, device="cuda", dtype=torch.bfloat16)
    cu = _offsets(T, [0, 64, 129, 250]).cuda()
    run(cu_seqlens=cu)  # first call: lazy initialisation (allocator, handles) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run(cu_seqlens=cu)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_cuda_varlen_backward_never_synchronises():
    T = 200
    q, k, v = (torch.randn(1, T, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(1, T, 2, 64, device="cuda") + 2).requires_grad_()
    cu = _offsets(T, [50, 50, 130]).cuda()
    linattn.chunk_gla(q, k, v, g, cu_seqlens=cu)[0].float().square().sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        o, _ = linattn.chunk_gla(q, k, v, g, cu_seqlens=cu)
        o.float().square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_cuda_bad_device_offsets_raise_a_device_assertion():
    # The device-side check traps, which poisons the CUDA context: run it in a child process.
    code = textwrap.dedent("""
        import torch, linattn
        q = torch.randn(1, 40, 2, 16, device="cuda")
        cu = torch.tensor([0, 30, 10, 40], device="cuda")
        linattn.chunk_simple_gla(q, q, q, cu_seqlens=cu)
        torch.cuda.synchronize()
        print("NO ERROR")
    """)
    env = dict(os.environ, CUDA_LAUNCH_BLOCKING="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "NO ERROR" not in out, out
    assert "invalid cu_seqlens: must be non-decreasing" in out, out
