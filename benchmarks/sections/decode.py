"""Decoding (T = 1) with an initial state and output_final_state=True: linattn vs fla fused_recurrent_* vs the
memory-bandwidth floor (cost_model.decode_bytes at the copy bandwidth measured in the ceilings section).

Each op is timed eagerly and as a CUDA-graph replay: at T = 1 the kernels take microseconds, so eager times
are mostly host launch overhead, while serving stacks replay graphs; the floor fraction uses the graph time."""
import torch
import torch.nn.functional as F

import fla_compat
import linattn
from common import NA, is_num, no_grad, seed_for, show
from cost_model import decode_bytes
from report import cell, ratio

OPS = ("fused_recurrent_gla", "fused_recurrent_simple_gla", "fused_recurrent_delta_rule",
       "fused_recurrent_gated_delta_rule")
BATCHES, H, K, V = (1, 64, 256), 16, 128, 128
DRY_BATCHES, DRY_H, DRY_K, DRY_V = (1, 3), 2, 32, 32


def make_inputs(op, B, Hh, Kd, Vd, ctx):
    dev, dt = ctx.device, ctx.dtype
    kw = dict(q=torch.randn(B, 1, Hh, Kd, device=dev, dtype=dt), k=torch.randn(B, 1, Hh, Kd, device=dev, dtype=dt),
              v=torch.randn(B, 1, Hh, Vd, device=dev, dtype=dt),
              initial_state=torch.randn(B, Hh, Kd, Vd, device=dev) * 0.1, output_final_state=True)
    if op == "fused_recurrent_gla":
        kw["gk"] = F.logsigmoid(torch.randn(B, 1, Hh, Kd, device=dev)).to(dt) / 16
    elif op == "fused_recurrent_simple_gla":
        kw["g"] = F.logsigmoid(torch.randn(B, 1, Hh, device=dev)).to(dt) / 16
    else:
        kw["beta"] = torch.rand(B, 1, Hh, device=dev).to(dt)
        kw["use_qk_l2norm_in_kernel"] = True
        if op == "fused_recurrent_gated_delta_rule":
            kw["g"] = F.logsigmoid(torch.randn(B, 1, Hh, device=dev)).to(dt) / 16
    return kw


def time_decode(ctx, fn, kw):
    call = no_grad(lambda: fn(**kw))
    eager = ctx.attempt(ctx.time, call)
    graph = ctx.attempt(ctx.time, call, graph=True) if ctx.cuda else NA("CUDA graphs need a GPU")
    return eager, graph


def run(ctx) -> dict:
    batches, Hh, Kd, Vd = (DRY_BATCHES, DRY_H, DRY_K, DRY_V) if ctx.dry_run else (BATCHES, H, K, V)
    elem = torch.finfo(ctx.dtype).bits // 8
    bw = ctx.ceilings.get("copy_gbs")
    rows = []

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        return {
            "name": "decode", "title": "Decoding kernels at T = 1 (initial state in, final state out)",
            "intro": [f"H = {Hh}, K = {Kd}, V = {Vd}, fp32 states, {str(ctx.dtype).replace('torch.', '')} q/k/v; "
                      "delta-rule ops with `use_qk_l2norm_in_kernel=True`. Floor = (state read + written in fp32 + "
                      "q, k, v, o and gates once) / measured copy bandwidth; fraction of floor = floor / time "
                      "(1.00 = at the bandwidth limit), taken from the graph time when capture worked, else eager. "
                      "Speedup vs fla compares the same (graph, else eager) times. Copy bandwidth used: "
                      + (f"{bw:.4g} GB/s (ceilings of this invocation)." if bw else "not measured.")],
            "tables": [{"caption": "Times (ms)",
                        "columns": ["op", "B", "linattn eager", "linattn graph", "fla eager", "fla graph",
                                    "speedup vs fla", "floor ms", "linattn fraction of floor",
                                    "fla fraction of floor"],
                        "rows": rows}],
            "data": {},
        }

    for op in OPS:
        for B in batches:
            torch.manual_seed(seed_for(op, B))
            kw = make_inputs(op, B, Hh, Kd, Vd, ctx)
            o_eager, o_graph = time_decode(ctx, getattr(linattn, op), kw)
            fn, why = fla_compat.get(op, ctx.device.type)
            f_eager, f_graph = time_decode(ctx, fn, kw) if fn else (NA(why), NA(why))
            floor = decode_bytes(op, B, Hh, Kd, Vd, elem) / (bw * 1e9) * 1e3 if bw else None
            best_ours = o_graph if is_num(o_graph) else o_eager
            best_fla = f_graph if is_num(f_graph) else f_eager
            rows.append([op, str(B), cell(o_eager, ".4f"), cell(o_graph, ".4f"), cell(f_eager, ".4f"),
                         cell(f_graph, ".4f"), ratio(best_fla, best_ours), cell(floor, ".4f"),
                         # 3 significant digits, not 2 decimals: a CPU dry run's tiny fractions must not print as 0.00
                         ratio(floor, best_ours, ".3g"), ratio(floor, best_fla, ".3g")])
            ctx.progress(result())
            ctx.log(f"decode {op} B={B}: linattn {show(o_eager, '.4f')} / {show(o_graph, '.4f')} ms, fla "
                    f"{show(f_eager, '.4f')} / {show(f_graph, '.4f')} ms (eager / graph), "
                    f"floor {show(floor, '.4f')} ms")
    return result()
