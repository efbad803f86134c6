"""Chunked ops (training path): linattn vs fla vs causal FlashAttention (SDPA), forward and forward+backward.

Cases run in the order below so that a section that runs out of its time budget loses the least common
cases: head dim 128 first, then D = 64 and D = 256, each of which makes fla autotune its Triton kernels anew
(minutes on a fresh machine; the results are cached under TRITON_CACHE_DIR for later runs)."""
import contextlib
import functools
import inspect

import torch
import torch.nn.functional as F

import fla_compat
import linattn
from common import NA, FwdBwd, is_num, measure_step, no_grad, seed_for, show
from cost_model import chunked_bytes, chunked_flops
from report import cell, ratio

OPS = ("chunk_gla", "chunk_simple_gla", "chunk_delta_rule", "chunk_gated_delta_rule")
SHAPES = [(8, 2048, 16, 128), (4, 4096, 16, 128), "varlen", (2, 16384, 16, 128), (4, 4096, 64, 128),
          (8, 1024, 8, 64), (8, 2048, 32, 256)]
# 14 packed sequences of very different lengths, 16384 tokens: long ones, chunk-unaligned ones, tiny ones.
VARLEN = [5000, 3000, 2500, 1900, 1200, 900, 700, 500, 300, 200, 100, 60, 17, 7]
VARLEN_HD = (16, 128)
DRY_SHAPES = [(1, 128, 2, 32), (2, 200, 2, 64), "varlen"]
DRY_VARLEN = [100, 7, 64, 1]
DRY_VARLEN_HD = (2, 32)


def cases(dry_run: bool, only=None):
    """(label, B, T, H, D, lengths or None); a varlen case is B = 1 with the lengths packed along T. `only`:
    indices into the shape list (as strings) to keep."""
    for i, s in enumerate(DRY_SHAPES if dry_run else SHAPES):
        if only is not None and str(i) not in only:
            continue
        if s == "varlen":
            lengths = DRY_VARLEN if dry_run else VARLEN
            H, D = DRY_VARLEN_HD if dry_run else VARLEN_HD
            yield f"varlen {len(lengths)} seqs,{sum(lengths)},{H},{D}", 1, sum(lengths), H, D, lengths
        else:
            B, T, H, D = s
            yield f"{B},{T},{H},{D}", B, T, H, D, None


def make_inputs(op, B, T, H, D, ctx, cu_seqlens):
    """Keyword arguments accepted by both linattn and fla, and the tensors that receive gradients."""
    dev, dt = ctx.device, ctx.dtype
    q = torch.randn(B, T, H, D, device=dev, dtype=dt) / D ** 0.25
    k = torch.randn(B, T, H, D, device=dev, dtype=dt) / D ** 0.25
    v = torch.randn(B, T, H, D, device=dev, dtype=dt)
    kw = dict(q=q, k=k, v=v)
    # Log gates as the models produce them: logsigmoid of a projection, damped so the decay is realistic.
    if op == "chunk_gla":
        kw["g"] = F.logsigmoid(torch.randn(B, T, H, D, device=dev)).to(dt) / 16
    elif op == "chunk_simple_gla":
        kw["g"] = F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dt) / 16
    else:
        kw["beta"] = torch.rand(B, T, H, device=dev).to(dt)
        kw["use_qk_l2norm_in_kernel"] = True  # how DeltaNet layers call it; unnormalised keys diverge
        if op == "chunk_gated_delta_rule":
            kw["g"] = F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dt) / 16
    leaves = [t.requires_grad_() for t in kw.values() if isinstance(t, torch.Tensor)]
    if cu_seqlens is not None:
        kw["cu_seqlens"] = cu_seqlens
    return kw, leaves


def sdpa_pair(ctx, B, T, H, D, lengths):
    """Causal FlashAttention through SDPA on the same shape (varlen: torch's varlen_attn when present)."""
    q, k, v = (torch.randn(B, T, H, D, device=ctx.device, dtype=ctx.dtype).requires_grad_() for _ in range(3))
    if lengths is None:
        def fn():
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  is_causal=True)
    else:
        fn = _varlen_sdpa(ctx, q, k, v, lengths)
    backend = contextlib.nullcontext()
    if ctx.cuda:  # FlashAttention or n/a, never a silent fallback to another SDPA backend
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    with backend:
        return ctx.attempt(ctx.time, no_grad(fn)), ctx.attempt(ctx.time, FwdBwd(fn, [q, k, v]))


def _torch_varlen_attn():
    """torch.nn.attention.varlen.varlen_attn with causal masking bound, or None (older torch)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    # The causal flag changed name across releases: is_causal, later window_size=(-1, 0).
    params = inspect.signature(varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    return functools.partial(varlen_attn, **causal)


def _varlen_sdpa(ctx, q, k, v, lengths):
    cu = torch.tensor([0] + lengths, device=ctx.device).cumsum(0)
    fa = _torch_varlen_attn() if ctx.cuda else None
    if fa is not None:
        cu32, m = cu.to(torch.int32), max(lengths)
        return lambda: fa(q[0], k[0], v[0], cu32, cu32, m, m)
    bounds = cu.tolist()  # one causal SDPA call per sequence

    def per_sequence():
        return torch.cat([F.scaled_dot_product_attention(*(t[:, a:b].transpose(1, 2) for t in (q, k, v)),
                                                         is_causal=True).transpose(1, 2)
                          for a, b in zip(bounds[:-1], bounds[1:]) if b > a], 1)
    return per_sequence


def measure_op(ctx, op, label, B, T, H, D, cu):
    """((fwd, fwd+bwd, peak) of linattn, the same of fla) on one set of fresh inputs, freed on return."""
    torch.manual_seed(seed_for(op, label))
    kw, leaves = make_inputs(op, B, T, H, D, ctx, cu)
    ours = getattr(linattn, op)
    mine = measure_step(ctx, lambda: ours(**kw), leaves)[:3]
    theirs, why = fla_compat.get(op, ctx.device.type)
    return mine, (measure_step(ctx, lambda: theirs(**kw), leaves)[:3] if theirs else (NA(why),) * 3)


def efficiency(ctx, op, ms, tokens, H, D):
    """(TFLOP/s, % of matmul ceiling, GB/s, % of copy ceiling) of a fwd+bwd time under the cost model."""
    if not is_num(ms):
        return [cell(ms)] * 4
    elem = torch.finfo(ctx.dtype).bits // 8
    tflops = chunked_flops(op, tokens, H, D, D, backward=True) / (ms * 1e-3) / 1e12
    gbs = chunked_bytes(op, tokens, H, D, D, elem, backward=True) / (ms * 1e-3) / 1e9
    peak, bw = ctx.ceilings.get("matmul_tflops"), ctx.ceilings.get("copy_gbs")
    return [cell(tflops, ".3g"), cell(100 * tflops / peak, ".1f") if peak else "-",
            cell(gbs, ".4g"), cell(100 * gbs / bw, ".1f") if bw else "-"]


def _ceilings_text(ctx) -> str:
    peak, bw = ctx.ceilings.get("matmul_tflops"), ctx.ceilings.get("copy_gbs")
    return (f"matmul {peak:.4g} TFLOP/s" if peak else "matmul not measured") + ", " + \
        (f"copy {bw:.4g} GB/s" if bw else "copy not measured")


def run(ctx) -> dict:
    times, eff, records, speedups = [], [], [], []
    todo = list(cases(ctx.dry_run, ctx.cases))
    prev = ctx.previous.get("chunked") if ctx.cases is not None else None
    if prev and prev.get("data", {}).get("records") is not None:
        # Keep the day's rows of the cases this run skips (a run with --cases covers part of the shapes).
        rerun = {c[0] for c in todo}
        times += [r for r in prev["tables"][0]["rows"] if r[1] not in rerun]
        eff += [r for r in prev["tables"][1]["rows"] if r[1] not in rerun]
        records += [r for r in prev["data"]["records"] if r["label"] not in rerun]
        speedups += [r["fla_fb"] / r["ours_fb"] for r in records if r.get("fla_fb") and r.get("ours_fb")]

    order = {c[0]: i for i, c in enumerate(cases(ctx.dry_run))}

    def rank(op, label):  # table order: shapes as listed, then ops
        return order.get(label, len(order)), OPS.index(op) if op in OPS else len(OPS)

    def result():  # the section so far: written after every case, so a cut-short run keeps it
        times.sort(key=lambda r: rank(r[0], r[1]))
        eff.sort(key=lambda r: rank(r[0], r[1]))
        records.sort(key=lambda r: rank(r["op"], r["label"]))
        return {
            "name": "chunked", "title": f"Chunked ops, {str(ctx.dtype).replace('torch.', '')}: linattn vs fla vs "
                                        "FlashAttention (SDPA, causal)",
            "intro": ["B,T,H,D with K = V = D; varlen = B 1 with the sequences packed and `cu_seqlens` "
                      f"(lengths {DRY_VARLEN if ctx.dry_run else VARLEN}); SDPA on a varlen case is torch's "
                      "`varlen_attn` (FlashAttention) when present. DeltaNet ops run with "
                      "`use_qk_l2norm_in_kernel=True` and beta in (0, 1); gates are logsigmoid(x)/16.",
                      "Efficiency uses the FLOP and byte models of benchmarks/cost_model.py (fwd+bwd = 3x the "
                      "forward chunk FLOP count; bytes = inputs, outputs and gradients once) against the ceilings "
                      f"of this invocation: {_ceilings_text(ctx)}."],
            "tables": [
                {"caption": "Times (ms) and speedups",
                 "columns": ["op", "B,T,H,D", "linattn fwd", "fla fwd", "fwd speedup vs fla", "linattn fwd+bwd",
                             "fla fwd+bwd", "fwd+bwd speedup vs fla", "SDPA fwd", "fwd speedup vs SDPA",
                             "SDPA fwd+bwd", "fwd+bwd speedup vs SDPA", "linattn peak MiB (fwd+bwd)",
                             "fla peak MiB (fwd+bwd)"],
                 "rows": times},
                {"caption": "Efficiency of fwd+bwd against the measured ceilings",
                 "columns": ["op", "B,T,H,D", "linattn TFLOP/s", "linattn % matmul", "linattn GB/s",
                             "linattn % copy BW", "fla TFLOP/s", "fla % matmul"],
                 "rows": eff}],
            "data": {"speedups": speedups, "records": records},
        }

    for label, B, T, H, D, lengths in todo:
        cu = None
        if lengths is not None:
            cu = torch.tensor([0] + lengths, device=ctx.device).cumsum(0)
        torch.manual_seed(seed_for("sdpa", label))
        sdpa_fwd, sdpa_fb = sdpa_pair(ctx, B, T, H, D, lengths)
        for op in OPS:
            (o_f, o_fb, o_mem), (f_f, f_fb, f_mem) = measure_op(ctx, op, label, B, T, H, D, cu)
            if is_num(o_fb) and is_num(f_fb):
                speedups.append(f_fb / o_fb)
            times.append([op, label, cell(o_f), cell(f_f), ratio(f_f, o_f), cell(o_fb), cell(f_fb),
                          ratio(f_fb, o_fb), cell(sdpa_fwd), ratio(sdpa_fwd, o_f), cell(sdpa_fb),
                          ratio(sdpa_fb, o_fb), cell(o_mem, ".0f"), cell(f_mem, ".0f")])
            fla_eff = efficiency(ctx, op, f_fb, B * T, H, D)[:2]
            eff.append([op, label] + efficiency(ctx, op, o_fb, B * T, H, D) + fla_eff)
            records.append({"op": op, "label": label, "B": B, "T": T, "H": H, "D": D,
                            "varlen": lengths is not None,
                            **{k: (v if is_num(v) else None) for k, v in
                               (("ours_fwd", o_f), ("ours_fb", o_fb), ("fla_fwd", f_f), ("fla_fb", f_fb),
                                ("sdpa_fwd", sdpa_fwd), ("sdpa_fb", sdpa_fb))}})
            ctx.progress(result())
            ctx.log(f"chunked {op} {label}: linattn {show(o_f)} / {show(o_fb)} ms, fla {show(f_f)} / {show(f_fb)} ms "
                    "(fwd / fwd+bwd)")
        if ctx.cuda:
            torch.cuda.empty_cache()
    return result()
