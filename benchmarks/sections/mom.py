"""MomAttention (routed: each memory runs gated DeltaNet over only its tokens, as one varlen batch) vs a dense
loop over memories (each memory runs over all tokens; unrouted tokens are masked out), forward+backward."""
import torch
import torch.nn.functional as F

import linattn
from common import measure_step, output_diff, seed_for, show
from report import cell, ratio

# Layer sizes (head_dim = K, head_dim * expand_v = V) and (B, T) cases.
CONFIG = dict(hidden_size=1024, num_heads=4, head_dim=128, expand_v=2, num_memories=4, topk=2, shared_mem=True)
SHAPES = [(4, 2048), (1, 8192)]
DRY_CONFIG = dict(hidden_size=32, num_heads=2, head_dim=8, expand_v=2, num_memories=4, topk=2, shared_mem=True)
DRY_SHAPES = [(2, 48)]


def _fp32_or_wider(t):
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _projections(layer, slot):
    if slot == "shared" or layer.single_kv_proj:
        return layer.shared_k, layer.shared_v, layer.shared_b, layer.shared_a
    return layer.k_proj[slot], layer.v_proj[slot], layer.b_proj[slot], layer.a_proj[slot]


def mom_dense(layer, x):
    """The layer's output computed memory by memory over the whole sequence.

    An unrouted token gets beta = 0 and log decay g = 0 in that memory, which leaves the state exactly as it
    was, and mixing weight 0. Short convolutions run over the whole sequence (a dense layer keeps no
    per-memory token lists), so with use_short_conv=True the output differs slightly from the routed layer;
    with use_short_conv=False the two agree to rounding (tests/python/test_benchmarks_dry_run.py checks it)."""
    B, T, _ = x.shape
    E, H, K, Vd = layer.num_memories, layer.num_heads, layer.head_dim, layer.head_v_dim
    weights, idx = linattn.mom_route(layer.gate(x), layer.topk)
    mix = weights.new_zeros(B, T, E).scatter_add(-1, idx, weights)
    routed = torch.zeros(B, T, E, dtype=torch.bool, device=x.device).scatter(-1, idx, True)

    def act(pre, conv):
        return getattr(layer, conv)(pre) if layer.use_short_conv else F.silu(pre)

    q = act(layer.q_proj(x), "q_conv1d").view(B, T, H, K)  # q_proj is shared by the memories
    out = 0
    for slot in list(range(E)) + (["shared"] if layer.shared_mem else []):
        kp, vp, bp, ap = _projections(layer, slot)
        k = act(kp(x), "k_conv1d").view(B, T, H, K)
        v = act(vp(x), "v_conv1d").view(B, T, H, Vd)
        beta = torch.sigmoid(_fp32_or_wider(bp(x)))
        g = -layer.A_log.to(beta.dtype).exp() * F.softplus(_fp32_or_wider(ap(x)) + layer.dt_bias.to(beta.dtype))
        w = 1.0
        if slot != "shared":
            keep = routed[..., slot, None].to(beta.dtype)
            beta, g, w = beta * keep, g * keep, mix[..., slot, None, None]
        o, _ = linattn.chunk_gated_delta_rule(q, k, v, g.to(q.dtype), beta.to(q.dtype), use_qk_l2norm_in_kernel=True)
        out = out + w * o
    if layer.use_output_gate:
        out = layer.o_norm(out, layer.g_proj(x).view(B, T, H, Vd))
    else:
        out = layer.o_norm(out)
    return layer.o_proj(out.reshape(B, T, H * Vd))


def make_layer(ctx, **overrides):
    cfg = dict(DRY_CONFIG if ctx.dry_run else CONFIG)
    cfg.update(overrides)
    return linattn.layers.MomAttention(**cfg).to(ctx.device, ctx.dtype).train()


def compare(ctx, B, T):
    """(layer, dense loop) (fwd, fwd+bwd, peak) and the max abs diff of their outputs, with one fresh layer
    and input that are freed on return."""
    torch.manual_seed(seed_for("mom", B, T))
    layer = make_layer(ctx)
    x = torch.randn(B, T, layer.hidden_size, device=ctx.device, dtype=ctx.dtype).requires_grad_()
    leaves = [x, *layer.parameters()]
    routed = measure_step(ctx, lambda: layer(x)[0], leaves, want_output=True)
    dense = measure_step(ctx, lambda: mom_dense(layer, x), leaves, want_output=True)
    return routed[:3], dense[:3], output_diff(routed[3], dense[3])


def run(ctx) -> dict:
    cfg = DRY_CONFIG if ctx.dry_run else CONFIG
    rows = []

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        return {
            "name": "mom", "title": "MomAttention layer: routed memories vs a dense loop over memories",
            "intro": [f"Layer {cfg} with short convolutions, training mode, whole layer (projections, routing, "
                      "convolutions, gated DeltaNet, norm, output projection). Dense: every memory processes every "
                      "token (E + shared passes over B*T tokens) with unrouted tokens masked (beta = 0, no decay, "
                      "weight 0); its convolutions see all tokens, so max |diff| is not ~0 here (it is with "
                      "use_short_conv=False). Speedup = dense / layer."],
            "tables": [{"caption": "Times (ms), peak memory of fwd+bwd (MiB)",
                        "columns": ["B,T", "layer fwd", "dense fwd", "fwd speedup", "layer fwd+bwd", "dense fwd+bwd",
                                    "fwd+bwd speedup", "layer peak MiB", "dense peak MiB", "max abs diff"],
                        "rows": rows}],
            "data": {},
        }

    for (B, T) in (DRY_SHAPES if ctx.dry_run else SHAPES):
        (r_f, r_fb, r_mem), (d_f, d_fb, d_mem), diff = compare(ctx, B, T)
        rows.append([f"{B},{T}", cell(r_f), cell(d_f), ratio(d_f, r_f), cell(r_fb), cell(d_fb), ratio(d_fb, r_fb),
                     cell(r_mem, ".0f"), cell(d_mem, ".0f"), cell(diff, ".1e")])
        ctx.progress(result())
        ctx.log(f"mom B={B} T={T}: layer {show(r_f)} / {show(r_fb)}, dense {show(d_f)} / {show(d_fb)} ms")
    return result()
