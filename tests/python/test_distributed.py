"""Sequence parallelism on gloo with 2 and 4 processes: outputs, final state and gradients (float64) equal
the single-process op on the whole sequence."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import linattn
from linattn.distributed import sequence_parallel

OPS = ["chunk_gla", "chunk_simple_gla", "chunk_delta_rule", "chunk_gated_delta_rule"]


def make_inputs(name, T, seed):
    g = torch.Generator().manual_seed(seed)
    B, H, K, V = 2, 2, 5, 4
    q = torch.randn(B, T, H, K, dtype=torch.float64, generator=g)
    k = F.normalize(torch.randn(B, T, H, K, dtype=torch.float64, generator=g), dim=-1)
    v = torch.randn(B, T, H, V, dtype=torch.float64, generator=g)
    h0 = torch.randn(B, H, K, V, dtype=torch.float64, generator=g)
    if name == "chunk_gla":
        extra = [F.logsigmoid(torch.randn(B, T, H, K, dtype=torch.float64, generator=g) + 2)]
    elif name == "chunk_simple_gla":
        extra = [F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64, generator=g) + 2)]
    elif name == "chunk_delta_rule":
        extra = [torch.rand(B, T, H, dtype=torch.float64, generator=g)]
    else:
        extra = [F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64, generator=g) + 2),
                 torch.rand(B, T, H, dtype=torch.float64, generator=g)]
    do = torch.randn(B, T, H, V, dtype=torch.float64, generator=g)
    dht = torch.randn(B, H, K, V, dtype=torch.float64, generator=g)
    return [q, k, v] + extra, h0, do, dht


def worker(rank, world, port, name, T, seed, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tensors, h0, do, dht = make_inputs(name, T, seed)
        bounds = torch.linspace(0, T, world + 1).round().long().tolist()
        lo, hi = bounds[rank], bounds[rank + 1]
        mine = [t[:, lo:hi].clone().requires_grad_() for t in tensors]
        h0r = h0.clone().requires_grad_()
        o, ht = sequence_parallel(getattr(linattn, name), *mine, initial_state=h0r, output_final_state=True)
        loss = (o * do[:, lo:hi]).sum() + ((ht * dht).sum() if rank == world - 1 else 0.0)
        loss.backward()
        torch.save({"o": o.detach(), "ht": ht.detach(), "grads": [t.grad for t in mine], "dh0": h0r.grad,
                    "lo": lo, "hi": hi}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("name", OPS)
def test_sequence_parallel_equals_single_process(name, world, tmp_path):
    T, seed = 150, 1234 + world
    mp.spawn(worker, args=(world, free_port(), name, T, seed, str(tmp_path)), nprocs=world, join=True)
    tensors, h0, do, dht = make_inputs(name, T, seed)
    ins = [t.clone().requires_grad_() for t in tensors]
    h0r = h0.clone().requires_grad_()
    o, ht = getattr(linattn, name)(*ins, initial_state=h0r, output_final_state=True)
    ((o * do).sum() + (ht * dht).sum()).backward()
    dh0 = torch.zeros_like(h0)
    for rank in range(world):
        r = torch.load(os.path.join(tmp_path, f"rank{rank}.pt"))
        lo, hi = r["lo"], r["hi"]
        torch.testing.assert_close(r["o"], o[:, lo:hi].detach(), atol=1e-10, rtol=1e-10)
        for got, full in zip(r["grads"], ins):
            torch.testing.assert_close(got, full.grad[:, lo:hi], atol=1e-9, rtol=1e-9)
        dh0 += r["dh0"]
        if rank == world - 1:
            torch.testing.assert_close(r["ht"], ht.detach(), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dh0, h0r.grad, atol=1e-9, rtol=1e-9)


def test_rejects_unsupported_op():
    with pytest.raises(ValueError, match="sequence_parallel supports"):
        sequence_parallel(linattn.fused_recurrent_gla, *[torch.zeros(1, 2, 1, 2)] * 3)


@pytest.mark.skipif(not torch.cuda.is_available() or not dist.is_nccl_available(), reason="needs CUDA and NCCL")
@pytest.mark.parametrize("name", OPS)
def test_nccl_world_size_one_equals_the_op(name):
    # The NCCL path (CUDA tensors in the all-gathers) in one process: the all-gathers hand back this rank's own
    # state, so the result must equal the op on the whole sequence, gradients included.
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        tensors, h0, do, dht = make_inputs(name, 150, 99)
        cuda = [t.float().cuda() for t in tensors]
        h0, do, dht = h0.float().cuda(), do.float().cuda(), dht.float().cuda()
        results = []
        for wrapped in (True, False):
            ins = [t.clone().requires_grad_() for t in cuda]
            h0r = h0.clone().requires_grad_()
            fn = getattr(linattn, name)
            o, ht = (sequence_parallel(fn, *ins, initial_state=h0r, output_final_state=True) if wrapped
                     else fn(*ins, initial_state=h0r, output_final_state=True))
            ((o * do).sum() + (ht * dht).sum()).backward()
            results.append([o.detach(), ht.detach(), h0r.grad] + [t.grad for t in ins])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()
