"""Per-kernel CUDA times of each op's forward + backward (torch.profiler), so that a GPU session can see which
kernel dominates instead of guessing from end-to-end times. Prints one table per op; with $OUT set, the full
tables also go to $OUT/profile.txt.

    python benchmarks/profile_ops.py [--shape B,T,H,D] [--dtype bfloat16] [--ops chunk_gla,...]
                                     [--warmup 2] [--iters 3]
(run_gpu.sh's ncu step uses --warmup 0 --iters 1 --no-profiler: Nsight Compute sees one forward + backward per
op, and torch.profiler stays off, since both would use CUPTI.)
"""
import argparse
import os

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import linattn


def inputs(name, B, T, H, D, dtype):
    dev = "cuda"
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dtype) for _ in range(3))
    k = F.normalize(k.float(), dim=-1).to(dtype) if "delta" in name else k
    if name == "chunk_gla":
        return (q, k, v, F.logsigmoid(torch.randn(B, T, H, D, device=dev)).to(dtype) / 16), {}
    if name == "chunk_simple_gla":
        return (q, k, v, F.logsigmoid(torch.randn(B, T, H, device=dev) + 3)), {}
    if name in ("chunk_delta_rule", "chunk_gated_delta_rule"):
        beta = torch.rand(B, T, H, device=dev, dtype=dtype)
        if name == "chunk_delta_rule":
            return (q, k, v, beta), {}
        return (q, k, v, F.logsigmoid(torch.randn(B, T, H, device=dev) + 3), beta), {}
    if name == "sliding_window_attention":
        return (q, k, v, 64), {}
    raise ValueError(name)


def run(name, args, kwargs):
    ins = [a.detach().requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    out = getattr(linattn, name)(*ins, **kwargs)
    o = out[0] if isinstance(out, tuple) else out
    o.float().square().mean().backward()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="8,2048,16,128")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--ops", default="chunk_gla,chunk_simple_gla,chunk_delta_rule,chunk_gated_delta_rule,"
                                    "sliding_window_attention")
    p.add_argument("--rows", type=int, default=14)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--no-profiler", action="store_true", help="only run the ops (for an outside profiler)")
    a = p.parse_args()
    B, T, H, D = map(int, a.shape.split(","))
    dtype = getattr(torch, a.dtype)
    sink = open(os.path.join(os.environ["OUT"], "profile.txt"), "w") if os.environ.get("OUT") else None
    for name in a.ops.split(","):
        args, kwargs = inputs(name, B, T, H, D, dtype)
        for _ in range(a.warmup):
            run(name, args, kwargs)
        torch.cuda.synchronize()
        if a.no_profiler:
            for _ in range(a.iters):
                run(name, args, kwargs)
            torch.cuda.synchronize()
            print(f"== {name} {a.shape} {a.dtype}: fwd+bwd x{a.iters} (no profiler)", flush=True)
            continue
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(a.iters):
                run(name, args, kwargs)
            torch.cuda.synchronize()
        avg = prof.key_averages()
        key = "self_device_time_total" if hasattr(avg[0], "self_device_time_total") else "self_cuda_time_total"
        table = avg.table(sort_by=key, row_limit=a.rows, max_name_column_width=70)
        head = f"== {name} {a.shape} {a.dtype}: fwd+bwd x{a.iters}"
        print(head, table, sep="\n", flush=True)
        if sink:
            sink.write(head + "\n" + avg.table(sort_by=key, row_limit=60, max_name_column_width=120) + "\n")
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
