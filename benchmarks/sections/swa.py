"""Sliding-window attention: linattn.sliding_window_attention vs torch flex_attention with a sliding-window
block mask (compiled on GPU; eager in a dry run, where it only checks the harness) and, when torch provides it,
FlashAttention's own window through torch.nn.attention.varlen.varlen_attn."""
import inspect

import torch

import linattn
from common import NA, measure_step, output_diff, seed_for, show
from report import cell, ratio

SHAPES = [(8, 2048, 16, 128), (2, 16384, 16, 128)]
DRY_SHAPES = [(1, 256, 2, 32)]
WINDOWS = (64, 512)

_compiled = {}


def flex_fn(ctx, T, w):
    """q, k, v [B, H, T, D] -> flex_attention with causal window i-w+1..i (our convention)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # w as a tensor: the compiled kernel takes it as an input, so a second window size does not recompile.
    w_t = torch.tensor(w, device=ctx.device)

    def window(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < w_t)
    mask = create_block_mask(window, None, None, T, T, device=ctx.device)
    if ctx.dry_run or not ctx.cuda:
        attend = flex_attention  # eager: a reference path, fine for checking the harness
    else:
        attend = _compiled.setdefault("flex", torch.compile(flex_attention, dynamic=False))
    return lambda q, k, v: attend(q, k, v, block_mask=mask)


def fa_window_fn(ctx, B, T, w):
    """(FlashAttention's sliding window on [B*T, H, D] packed rows, None) or (None, why it is unavailable)."""
    if not ctx.cuda:
        return None, "FlashAttention needs CUDA"
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, "this torch has no torch.nn.attention.varlen"
    if "window_size" not in inspect.signature(varlen_attn).parameters:
        return None, "this torch's varlen_attn has no window_size"
    cu = (torch.arange(B + 1, device=ctx.device) * T).to(torch.int32)
    return (lambda q, k, v: varlen_attn(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu, T, T,
                                        window_size=(w - 1, 0))), None


def measure(ctx, fn, q, k, v, layout):
    """measure_step of fn on [B,T,H,D] inputs; layout "bhtd" means fn takes and returns [B,H,T,D]."""
    def call():
        # Forward-only calls get detached inputs: flex_attention on CPU refuses inputs that require grad.
        ins = [t if torch.is_grad_enabled() else t.detach() for t in (q, k, v)]
        if layout == "bhtd":
            return fn(*(t.transpose(1, 2) for t in ins)).transpose(1, 2)
        return fn(*ins)
    return measure_step(ctx, call, [q, k, v], want_output=True)


def run(ctx) -> dict:
    mode = "eager (dry run)" if (ctx.dry_run or not ctx.cuda) else "torch.compile'd"
    rows = []

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        return {
            "name": "swa", "title": "Sliding-window attention vs flex_attention",
            "intro": [f"Query i attends keys i-w+1..i. flex_attention is {mode} with a block mask built by "
                      "create_block_mask; FA window = `varlen_attn(window_size=(w-1, 0))`. Speedups are baseline / "
                      "linattn; max |diff| compares linattn and flex forward outputs."],
            "tables": [{"caption": "Times (ms)",
                        "columns": ["B,T,H,D", "w", "linattn fwd", "flex fwd", "fwd speedup vs flex",
                                    "linattn fwd+bwd", "flex fwd+bwd", "fwd+bwd speedup vs flex", "FA window fwd",
                                    "FA window fwd+bwd", "fwd+bwd speedup vs FA", "max abs diff vs flex"],
                        "rows": rows}],
            "data": {},
        }

    for (B, T, H, D) in (DRY_SHAPES if ctx.dry_run else SHAPES):
        for w in WINDOWS:
            torch.manual_seed(seed_for("swa", B, T, H, D, w))
            q, k, v = (torch.randn(B, T, H, D, device=ctx.device, dtype=ctx.dtype).requires_grad_() for _ in range(3))
            o_f, o_fb, _, o_out = measure(ctx, lambda a, b, c: linattn.sliding_window_attention(a, b, c, w),
                                       q, k, v, "bthd")
            flex = ctx.attempt(flex_fn, ctx, T, w)
            x_f, x_fb, _, x_out = measure(ctx, flex, q, k, v, "bhtd") if not isinstance(flex, NA) else (flex,) * 4
            fa, why = fa_window_fn(ctx, B, T, w)
            a_f, a_fb, _, _ = measure(ctx, fa, q, k, v, "bthd") if fa else (NA(why),) * 4
            diff = output_diff(o_out, x_out)
            rows.append([f"{B},{T},{H},{D}", str(w), cell(o_f), cell(x_f), ratio(x_f, o_f), cell(o_fb), cell(x_fb),
                         ratio(x_fb, o_fb), cell(a_f), cell(a_fb), ratio(a_fb, o_fb), cell(diff, ".1e")])
            ctx.progress(result())
            ctx.log(f"swa {B},{T},{H},{D} w={w}: linattn {show(o_f)} / {show(o_fb)}, flex {show(x_f)} / "
                    f"{show(x_fb)}, FA window {show(a_f)} / {show(a_fb)} ms (fwd / fwd+bwd)")
    return result()
