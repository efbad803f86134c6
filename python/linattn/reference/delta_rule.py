"""(Gated) delta rule by its definition, one step at a time, in float64."""
from typing import Optional

import torch


def l2norm(x):
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + 1e-6)


def delta_rule_recurrence(q, k, v, beta, g=None, scale: Optional[float] = None, initial_state=None,
                          output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                          cu_seqlens=None, dtype=torch.float64):
    """S <- exp(g_t) S; u_t = beta_t (v_t - S^T k_t); S <- S + k_t u_t^T; o_t = S^T (scale q_t), per value head.

    Differentiable with plain autograd; returns (o in q's dtype, final state [N, HV, K, V] or None)."""
    out_dtype = q.dtype
    dtype = dtype or q.dtype
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    q, k = q.repeat_interleave(G, dim=2), k.repeat_interleave(G, dim=2)
    scale = K ** -0.5 if scale is None else scale
    gate = g.to(dtype) if g is not None else torch.zeros(B, T, HV, dtype=dtype, device=q.device)
    spans = ([(b, 0, T) for b in range(B)] if cu_seqlens is None else
             [(0, s, e) for s, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())])
    pieces, finals = [], []
    for n, (b, bos, eos) in enumerate(spans):
        S = (initial_state[n].to(dtype) if initial_state is not None
             else torch.zeros(HV, K, V, dtype=dtype, device=q.device))
        rows = []
        for t in range(bos, eos):
            S = gate[b, t].exp()[:, None, None] * S
            u = beta[b, t][:, None] * (v[b, t] - torch.einsum("hkv,hk->hv", S, k[b, t]))
            S = S + k[b, t][:, :, None] * u[:, None, :]
            rows.append(torch.einsum("hkv,hk->hv", S, q[b, t] * scale))
        pieces.append(torch.stack(rows, 0) if rows else q.new_zeros(0, HV, V))
        finals.append(S)
    o = torch.stack(pieces, 0) if cu_seqlens is None else torch.cat(pieces, 0).unsqueeze(0)
    return o.to(out_dtype), (torch.stack(finals, 0) if output_final_state else None)
