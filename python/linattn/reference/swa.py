"""Sliding-window attention by its definition: a masked T x T softmax per sequence, in float64."""
from typing import Optional

import torch


def sliding_window_attention_reference(q, k, v, window_size: int, scale: Optional[float] = None, cu_seqlens=None,
                                       dtype=torch.float64):
    out_dtype = q.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    spans = ([(b, 0, T) for b in range(B)] if cu_seqlens is None else
             [(0, s, e) for s, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())])
    pieces = []
    for b, bos, eos in spans:
        L = eos - bos
        i = torch.arange(L).unsqueeze(1)
        j = torch.arange(L).unsqueeze(0)
        mask = (j <= i) & (j > i - window_size)
        s = torch.einsum("ihd,jhd->hij", q[b, bos:eos], k[b, bos:eos]) * scale
        p = s.masked_fill(~mask, float("-inf")).softmax(-1)
        pieces.append(torch.einsum("hij,jhd->ihd", p, v[b, bos:eos]))
    o = torch.stack(pieces, 0) if cu_seqlens is None else torch.cat(pieces, 0).unsqueeze(0)
    return o.to(out_dtype)
