"""GPU benchmark of the linattn chunked ops against fla (when importable) and FlashAttention through SDPA.

CUDA events, warm-up, median of --reps runs, fresh random inputs. Writes benchmarks/results/<date>-<gpu>.md
with ms and ratios per op and shape; the last line is `geomean speedup vs fla (fwd+bwd): X.XX`.
`--dry-run` runs tiny shapes on whatever device is present (CPU included) to check the harness."""
import argparse
import datetime
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

import linattn

SHAPES = [(8, 2048, 16, 128), (4, 4096, 16, 128), (2, 16384, 16, 128), (8, 1024, 8, 64), (4, 4096, 64, 128),
          (8, 2048, 32, 256)]


def timer(device):
    if device.type == "cuda":
        def run(fn, reps):
            fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            return statistics.median(times)
    else:
        def run(fn, reps):
            fn()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
    return run


def make_inputs(op, B, T, H, D, device, dtype):
    q = torch.randn(B, T, H, D, device=device, dtype=dtype) / D ** 0.25
    k = torch.randn(B, T, H, D, device=device, dtype=dtype) / D ** 0.25
    v = torch.randn(B, T, H, D, device=device, dtype=dtype)
    if op == "chunk_gla":
        extra = [F.logsigmoid(torch.randn(B, T, H, D, device=device, dtype=torch.float32)).to(dtype) / 16]
    elif op == "chunk_simple_gla":
        extra = [F.logsigmoid(torch.randn(B, T, H, device=device, dtype=torch.float32)).to(dtype) / 16]
    elif op == "chunk_delta_rule":
        k = F.normalize(k, dim=-1)
        extra = [torch.rand(B, T, H, device=device, dtype=dtype)]
    else:  # chunk_gated_delta_rule
        k = F.normalize(k, dim=-1)
        extra = [F.logsigmoid(torch.randn(B, T, H, device=device)).to(dtype) / 16,
                 torch.rand(B, T, H, device=device, dtype=dtype)]
    return [t.requires_grad_() for t in [q, k, v] + extra]


def fla_fn(op):
    try:  # fla.ops.gla.chunk_gla, fla.ops.simple_gla.chunk_simple_gla, fla.ops.delta_rule..., ...
        return getattr(__import__(f"fla.ops.{op.replace('chunk_', '')}", fromlist=[op]), op)
    except Exception:  # fla absent or incompatible: its column stays empty
        return None


def fwd_bwd(fn, ins):
    def run():
        for t in ins:
            t.grad = None
        o = fn(*ins)[0]
        o.backward(torch.ones_like(o))
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--ops", default="chunk_gla,chunk_simple_gla")
    p.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(1, 128, 2, 32), (2, 200, 2, 64)] if args.dry_run else SHAPES
    reps = 2 if args.dry_run else args.reps
    measure = timer(device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    try:
        import fla
        fla_version = fla.__version__
    except Exception:
        fla_version = "not installed"
    rows, speedups = [], []
    for op in args.ops.split(","):
        ours = getattr(linattn, op)
        theirs = fla_fn(op) if device.type == "cuda" else None
        for (B, T, H, D) in shapes:
            torch.manual_seed(B * T + H + D)
            ins = make_inputs(op, B, T, H, D, device, dtype)
            try:
                with torch.no_grad():
                    f_ours = measure(lambda: ours(*ins), reps)
                fb_ours = measure(fwd_bwd(ours, ins), reps)
            except RuntimeError as e:  # e.g. a head dim the kernels do not take yet
                rows.append(f"| {op} | {B},{T},{H},{D} | error: {str(e).splitlines()[0][:60]} | | | | | |")
                continue
            f_fla = fb_fla = None
            if theirs is not None:
                with torch.no_grad():
                    f_fla = measure(lambda: theirs(*ins), reps)
                fb_fla = measure(fwd_bwd(theirs, ins), reps)
                speedups.append(fb_fla / fb_ours)
            q, k, v = (t.detach().transpose(1, 2) for t in ins[:3])
            sdpa = measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), reps)

            def cell(x):
                return f"{x:.3f}" if x is not None else "-"

            ratio = f"{fb_fla / fb_ours:.2f}" if fb_fla else "-"
            rows.append(f"| {op} | {B},{T},{H},{D} | {cell(f_ours)} | {cell(f_fla)} | {cell(fb_ours)} | {cell(fb_fla)} "
                        f"| {ratio} | {sdpa / f_ours:.2f} |")
            del ins
    geo = math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else float("nan")
    head = (f"# linattn benchmark{' (dry run)' if args.dry_run else ''}\n\n"
            f"date {datetime.date.today()}, device {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"linattn {linattn.__version__}, fla {fla_version}, dtype {dtype}, median of {reps} (CUDA events)\n\n"
            "| op | B,T,H,D | linattn fwd ms | fla fwd ms | linattn fwd+bwd ms | fla fwd+bwd ms | "
            "speedup vs fla (fwd+bwd) | SDPA fwd / linattn fwd |\n|---|---|---|---|---|---|---|---|\n")
    text = head + "\n".join(rows) + f"\n\ngeomean speedup vs fla (fwd+bwd): {geo:.2f}\n"
    print(text)
    if not args.dry_run:
        os.makedirs(args.out_dir, exist_ok=True)
        name = f"{datetime.date.today()}-{gpu.replace(' ', '_')}.md"
        with open(os.path.join(args.out_dir, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
