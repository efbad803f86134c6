"""Liger attention: the registered op vs the same computation composed from separate linattn ops in Python
(softmax feature maps, chunk_gla with scale 1, sliding_window_attention, weighted sum). On CUDA the op is the
fused path of ops/liger/liger_cuda.cpp (softmax pair kernels, the mix in the GLA forward's output write, do scaled
as the backwards load it; ops/liger/README.md), so the difference is what that fusion saves (launches,
intermediate tensors) over writing the layer by hand. 8,2048,16,128 is the shape of the benchmarks/NOTES.md
prediction."""
import torch
import torch.nn.functional as F

import linattn
from common import measure_step, output_diff, seed_for, show
from report import cell, ratio

SHAPES = [(8, 2048, 16, 128), (1, 8192, 32, 128)]
DRY_SHAPES = [(1, 128, 2, 32)]
WINDOW = 64


def liger_composed(q, k, v, g, q_rot, k_rot, window_size=WINDOW, softmax_weight=0.5, linear_weight=0.5):
    o_win = linattn.sliding_window_attention(q_rot, k_rot, v, window_size)
    o_lin, _ = linattn.chunk_gla(q.softmax(-1), k.softmax(-1), v, g, scale=1.0)
    return softmax_weight * o_win + linear_weight * o_lin


def liger_op(q, k, v, g, q_rot, k_rot):
    return linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size=WINDOW)[0]


def make_inputs(ctx, B, T, H, D):
    dev, dt = ctx.device, ctx.dtype
    q, k, v, q_rot, k_rot = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(5))
    g = F.logsigmoid(torch.randn(B, T, H, D, device=dev)).to(dt) / 16  # Liger's gate range: logsigmoid / 16
    return [t.requires_grad_() for t in (q, k, v, g, q_rot, k_rot)]


def compare(ctx, B, T, H, D):
    """(op, composition) (fwd, fwd+bwd, peak) and the max abs diff of their outputs; inputs freed on return."""
    torch.manual_seed(seed_for("liger", B, T, H, D))
    ins = make_inputs(ctx, B, T, H, D)
    op = measure_step(ctx, lambda: liger_op(*ins), ins, want_output=True)
    composed = measure_step(ctx, lambda: liger_composed(*ins), ins, want_output=True)
    return op[:3], composed[:3], output_diff(op[3], composed[3])


def run(ctx) -> dict:
    rows = []

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        return {
            "name": "liger", "title": "Liger attention: fused op vs composition of separate ops",
            "intro": [f"o = 0.5 SWA_w={WINDOW}(q_rot, k_rot, v) + 0.5 GLA(softmax(q), softmax(k), v, g, scale 1); "
                      "the composition calls linattn.sliding_window_attention and linattn.chunk_gla from Python, the op is "
                      "the fused CUDA path (ops/liger/README.md). "
                      "Speedup = composed / op."],
            "tables": [{"caption": "Times (ms), peak memory of fwd+bwd (MiB)",
                        "columns": ["B,T,H,D", "op fwd", "composed fwd", "fwd speedup", "op fwd+bwd",
                                    "composed fwd+bwd", "fwd+bwd speedup", "op peak MiB", "composed peak MiB",
                                    "max abs diff"],
                        "rows": rows}],
            "data": {},
        }

    for (B, T, H, D) in (DRY_SHAPES if ctx.dry_run else SHAPES):
        (o_f, o_fb, o_mem), (c_f, c_fb, c_mem), diff = compare(ctx, B, T, H, D)
        rows.append([f"{B},{T},{H},{D}", cell(o_f), cell(c_f), ratio(c_f, o_f), cell(o_fb), cell(c_fb),
                     ratio(c_fb, o_fb), cell(o_mem, ".0f"), cell(c_mem, ".0f"), cell(diff, ".1e")])
        ctx.progress(result())
        ctx.log(f"liger {B},{T},{H},{D}: op {show(o_f)} / {show(o_fb)}, composed {show(c_f)} / {show(c_fb)} ms")
    return result()
