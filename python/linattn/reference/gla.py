"""GLA by its definition, one step at a time, in float64 (or the inputs' dtype with dtype=None)."""
from typing import Optional

import torch


def _expand_gate(q, g, g_gamma):
    """Gate as [B, T, H, K] log decays: per-key g, scalar g [B, T, H], per-head g_gamma [H], or zeros."""
    B, T, H, K = q.shape
    total = torch.zeros(B, T, H, K, dtype=q.dtype, device=q.device)
    if g is not None:
        total = total + (g if g.dim() == 4 else g.unsqueeze(-1)).to(q.dtype)
    if g_gamma is not None:
        total = total + g_gamma.to(q.dtype).view(1, 1, H, 1)
    return total


def gla_recurrence(q, k, v, g=None, g_gamma=None, scale: Optional[float] = None, initial_state=None,
                   output_final_state: bool = False, cu_seqlens=None, dtype=torch.float64):
    """S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t), per sequence and head.

    Differentiable with plain autograd; returns (o in q's dtype, final state [N, H, K, V] or None)."""
    out_dtype = q.dtype
    dtype = dtype or q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    gate = _expand_gate(q, g, g_gamma)
    if cu_seqlens is None:
        spans = [(b, 0, T) for b in range(B)]
    else:
        offs = cu_seqlens.tolist()
        spans = [(0, offs[i], offs[i + 1]) for i in range(len(offs) - 1)]
    pieces, finals = [], []
    for n, (b, bos, eos) in enumerate(spans):
        S = (initial_state[n].to(dtype) if initial_state is not None
             else torch.zeros(H, K, V, dtype=dtype, device=q.device))
        rows = []
        for t in range(bos, eos):
            S = gate[b, t].exp().unsqueeze(-1) * S + k[b, t].unsqueeze(-1) * v[b, t].unsqueeze(-2)
            rows.append(torch.einsum("hk,hkv->hv", q[b, t] * scale, S))
        pieces.append(torch.stack(rows, 0) if rows else q.new_zeros(0, H, V))
        finals.append(S)
    outs = torch.stack(pieces, 0) if cu_seqlens is None else torch.cat(pieces, 0).unsqueeze(0)
    final = torch.stack(finals, 0) if output_final_state else None
    return outs.to(out_dtype), final


def naive_chunk_gla(q, k, v, g, scale: Optional[float] = None, chunk_size: int = 64):
    """Plain chunked GLA written with PyTorch ops (autograd differentiates it): the baseline the CPU
    kernels are benchmarked against. q, k, g: [B, T, H, K], v: [B, T, H, V], T a multiple of chunk_size."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    scale = K ** -0.5 if scale is None else scale
    n = T // C
    q, k, v, g = (x.reshape(B, n, C, H, -1).transpose(2, 3) for x in (q, k, v, g))  # [B, n, H, C, D]
    b = g.float().cumsum(-2)
    S = q.new_zeros(B, H, K, V, dtype=torch.float32)
    mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    outs = []
    for c in range(n):
        qc, kc, vc, bc = q[:, c], k[:, c], v[:, c], b[:, c]
        decay = (bc.unsqueeze(-2) - bc.unsqueeze(-3)).masked_fill(~mask[..., None], float("-inf")).exp()
        A = torch.einsum("bhik,bhjk,bhijk->bhij", qc * scale, kc, decay)
        o = A @ vc + (qc * scale * bc.exp()) @ S
        bl = bc[:, :, -1:]
        S = bl.transpose(-1, -2).exp() * S + (kc * (bl - bc).exp()).transpose(-1, -2) @ vc
        outs.append(o)
    return torch.stack(outs, 1).transpose(2, 3).reshape(B, T, H, V)
