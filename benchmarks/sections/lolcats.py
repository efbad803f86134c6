"""LoLCATs hybrid attention: linattn.lolcats_attention (O(T) memory) vs a plain PyTorch implementation of the
definition with T x T masks, in the benchmark dtype (scores in fp32, weights cast back for the value product,
as an attention written directly in PyTorch would do)."""
import torch

import linattn
from common import measure_step, output_diff, seed_for, show
from report import cell, ratio

SHAPES = [(2, 2048, 32, 128), (1, 4096, 32, 128)]  # Llama-3-8B heads; T x T fp32 masks stay within an H100
DRY_SHAPES = [(1, 128, 2, 32)]
FEATURES, DRY_FEATURES = 128, 16  # phi(x) width: Hedgehog's [softmax(xW), softmax(-xW)] with F = 64
WINDOW = 64


def lolcats_torch(q, k, v, fq, fk, window_factor, window_size, scale=None):
    """y_i = (sum_{window} g e^{s-m} v + sum_{before window} (fq.fk) v) / (same sums without v)."""
    B, T, H, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    idx = torch.arange(T, device=q.device)
    lag = idx[:, None] - idx[None, :]
    win, lin = (lag >= 0) & (lag < window_size), lag >= window_size
    qh, kh, vh, fqh, fkh = (t.transpose(1, 2) for t in (q, k, v, fq, fk))
    s = (qh @ kh.transpose(-1, -2)).float() * scale
    s = s.masked_fill(~win, float("-inf"))  # before exp, so masked entries are 0 with a 0 gradient
    e = torch.sigmoid(window_factor.float()).view(1, -1, 1, 1) * (s - s.amax(-1, keepdim=True)).exp()
    a = (fqh @ fkh.transpose(-1, -2)).float().masked_fill(~lin, 0.0)
    p = e + a
    p = p / p.sum(-1, keepdim=True)
    return (p.to(v.dtype) @ vh).transpose(1, 2)


def make_inputs(ctx, B, T, H, D, Fd):
    dev, dt = ctx.device, ctx.dtype
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dt) for _ in range(3))
    x = torch.randn(B, T, H, Fd // 2, device=dev)
    fq = torch.cat([x.softmax(-1), (-x).softmax(-1)], -1).to(dt)
    x = torch.randn(B, T, H, Fd // 2, device=dev)
    fk = torch.cat([x.softmax(-1), (-x).softmax(-1)], -1).to(dt)
    wf = torch.randn(H, device=dev, dtype=dt)
    return [t.requires_grad_() for t in (q, k, v, fq, fk, wf)]


def compare(ctx, B, T, H, D, Fd):
    """(linattn, PyTorch) (fwd, fwd+bwd, peak) and the max abs diff of their outputs; inputs freed on return."""
    torch.manual_seed(seed_for("lolcats", B, T, H, D))
    ins = make_inputs(ctx, B, T, H, D, Fd)
    ours = measure_step(ctx, lambda: linattn.lolcats_attention(*ins, window_size=WINDOW), ins, want_output=True)
    ref = measure_step(ctx, lambda: lolcats_torch(*ins, window_size=WINDOW), ins, want_output=True)
    return ours[:3], ref[:3], output_diff(ours[3], ref[3])


def run(ctx) -> dict:
    Fd = DRY_FEATURES if ctx.dry_run else FEATURES
    rows = []

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        return {
            "name": "lolcats", "title": "LoLCATs hybrid attention vs a plain PyTorch implementation",
            "intro": [f"Window {WINDOW}, feature width F (phi(q), phi(k) are [B,T,H,F]). The PyTorch version builds "
                      "the T x T scores, window max, linear-attention weights and one normaliser (fp32 scores, "
                      "dtype value product); max |diff| is between the two forward outputs."],
            "tables": [{"caption": "Times (ms), peak memory of fwd+bwd (MiB)",
                        "columns": ["B,T,H,D", "F", "linattn fwd", "torch fwd", "fwd speedup", "linattn fwd+bwd",
                                    "torch fwd+bwd", "fwd+bwd speedup", "linattn peak MiB", "torch peak MiB",
                                    "max abs diff"],
                        "rows": rows}],
            "data": {},
        }

    for (B, T, H, D) in (DRY_SHAPES if ctx.dry_run else SHAPES):
        (o_f, o_fb, o_mem), (r_f, r_fb, r_mem), diff = compare(ctx, B, T, H, D, Fd)
        rows.append([f"{B},{T},{H},{D}", str(Fd), cell(o_f), cell(r_f), ratio(r_f, o_f), cell(o_fb), cell(r_fb),
                     ratio(r_fb, o_fb), cell(o_mem, ".0f"), cell(r_mem, ".0f"), cell(diff, ".1e")])
        ctx.progress(result())
        ctx.log(f"lolcats {B},{T},{H},{D}: linattn {show(o_f)} / {show(o_fb)}, torch {show(r_f)} / {show(r_fb)} ms")
    return result()
