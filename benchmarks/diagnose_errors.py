"""Bad-input calls that must raise RuntimeError. On the GPU machine (2026-11-23, torch 2.11) some of them
ended the process with SIGSEGV instead; benchmarks/run_gpu.sh diagnose runs this under cuda-gdb so that the
native backtrace of the first crash is printed. Each call announces itself first, so the last line before a
crash names it."""
import torch
import torch.nn.functional as F

import linattn  # noqa: E402
ops = torch.ops.linattn

D = torch.float64


def calls():
    q, k = torch.randn(1, 3, 1, 4, dtype=D), F.normalize(torch.randn(1, 3, 1, 4, dtype=D), dim=-1)
    v, beta = torch.randn(1, 3, 2, 5, dtype=D), torch.rand(1, 3, 2, dtype=D)
    g, h0 = F.logsigmoid(torch.randn(1, 3, 2, dtype=D)), torch.randn(1, 2, 4, 5, dtype=D)
    yield "inplace: float32 state", lambda: ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0.float())
    yield "inplace: non-contiguous state", lambda: ops.fused_recurrent_delta_rule_inplace(
        q, k, v, g, beta, h0.transpose(2, 3).contiguous().transpose(2, 3))
    yield "inplace: state heads", lambda: ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0[:, :1].contiguous())
    a = dict(q=torch.randn(2, 12, 2, 6, dtype=D), k=torch.randn(2, 12, 2, 6, dtype=D), v=torch.randn(2, 12, 4, 5, dtype=D),
             g=torch.randn(2, 12, 4, dtype=D).sigmoid().log(), beta=torch.rand(2, 12, 4, dtype=D))
    bad = {"hv not multiple": dict(v=torch.randn(2, 12, 3, 5, dtype=D), beta=torch.rand(2, 12, 3, dtype=D),
                                   g=torch.randn(2, 12, 3, dtype=D)),
           "beta shape": dict(beta=torch.rand(2, 12, 2, dtype=D)),
           "g shape": dict(g=torch.randn(2, 12, 4, 1, dtype=D)),
           "integer beta": dict(beta=torch.ones(2, 12, 4, dtype=torch.long)),
           "k shape": dict(k=torch.randn(2, 12, 2, 5, dtype=D))}
    for name, change in bad.items():
        b = {**a, **change}
        yield f"chunk_gated_delta_rule: {name}", lambda b=b: linattn.chunk_gated_delta_rule(
            b["q"], b["k"], b["v"], b["g"], b["beta"])
    lq, lk, lv = (torch.randn(2, 40, 2, 8, dtype=D) for _ in range(3))
    lg = linattn.liger_gate(lk)
    yield "liger_attention: q_rot shape", lambda: linattn.liger_attention(lq, lk, lv, lg, lq[:, :5], lk, window_size=8)
    yield "liger_gate: out_dim 0", lambda: linattn.liger_gate(lk, 0)
    if torch.cuda.is_available():
        sq = torch.randn(1, 8, 1, 4, device="cuda")
        yield "swa: float64 on CUDA", lambda: linattn.sliding_window_attention(sq.double(), sq.double(), sq.double(), 4)
        yield "swa: k on CPU", lambda: linattn.sliding_window_attention(sq, sq.cpu(), sq, 4)
        yield "chunk_gla: k on CPU", lambda: linattn.chunk_gla(sq, sq.cpu(), sq, F.logsigmoid(sq))


def main():
    failures = 0
    for name, call in calls():
        print(f"call: {name}", flush=True)
        try:
            call()
        except (RuntimeError, ValueError) as e:
            print(f"  raised {type(e).__name__}: {str(e).splitlines()[0][:160]}", flush=True)
        else:
            print("  DID NOT RAISE", flush=True)
            failures += 1
    print(f"diagnose_errors done, {failures} calls did not raise", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
