"""CPU benchmark: linattn chunk_gla / chunk_simple_gla forward+backward vs a plain chunked PyTorch
implementation differentiated by autograd (linattn.reference.naive_chunk_gla). Median of repeated runs on
fresh random inputs. Writes a markdown table with --out."""
import argparse
import datetime
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import linattn
from linattn.reference import naive_chunk_gla


def timed(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def inputs(B, T, H, K, V, scalar):
    q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    v = torch.randn(B, T, H, V)
    g = F.logsigmoid(torch.randn(B, T, H) if scalar else torch.randn(B, T, H, K)) / 8
    return [t.requires_grad_() for t in (q, k, v, g)]


def fwd_bwd(fn, ins, do):
    def run():
        for t in ins:
            t.grad = None
        o = fn(*ins)
        o.backward(do)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shape", default="1,2048,4,64,64", help="B,T,H,K,V")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    B, T, H, K, V = map(int, args.shape.split(","))
    torch.manual_seed(0)
    rows = []
    for name, scalar in (("chunk_gla", False), ("chunk_simple_gla", True)):
        ins = inputs(B, T, H, K, V, scalar)
        do = torch.randn(B, T, H, V)
        ours_fn = (lambda q, k, v, g: linattn.chunk_gla(q, k, v, g)[0]) if not scalar else \
            (lambda q, k, v, g: linattn.chunk_simple_gla(q, k, v, g)[0])
        naive_fn = (lambda q, k, v, g: naive_chunk_gla(q, k, v, g)) if not scalar else \
            (lambda q, k, v, g: naive_chunk_gla(q, k, v, g.unsqueeze(-1).expand(B, T, H, K)))
        with torch.no_grad():
            ours_f = timed(lambda: ours_fn(*ins), args.reps)
            naive_f = timed(lambda: naive_fn(*ins), args.reps)
        ours_fb = timed(fwd_bwd(ours_fn, ins, do), args.reps)
        naive_fb = timed(fwd_bwd(naive_fn, ins, do), args.reps)
        rows.append((name, ours_f, naive_f, ours_fb, naive_fb))
    header = (f"CPU benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, linattn {linattn.__version__}, "
              f"float32, B,T,H,K,V = {B},{T},{H},{K},{V}, median of {args.reps}\n\n"
              "| op | linattn fwd ms | naive fwd ms | fwd speedup | linattn fwd+bwd ms | naive fwd+bwd ms | fwd+bwd speedup |\n"
              "|---|---|---|---|---|---|---|\n")
    lines = [f"| {n} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {c:.1f} | {d:.1f} | {d / c:.1f}x |" for n, a, b, c, d in rows]
    text = header + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
