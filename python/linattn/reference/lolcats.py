"""LoLCATs hybrid attention by its definition: the explicit T x T form with one shared normaliser."""
from typing import Optional

import torch


def lolcats_attention_reference(q, k, v, fq, fk, window_factor, window_size: int, scale: Optional[float] = None,
                                dtype=torch.float64):
    """Query i: gamma exp(s_ij - m_i) over the window keys i-w+1..i plus fq_i . fk_j over the keys before the
    window, both normalised by their common sum; m_i is the window max (autograd through amax gives the
    exact gradient the kernels must reproduce). Differentiable by autograd."""
    out_dtype = q.dtype
    q, k, v, fq, fk, window_factor = (t.to(dtype) for t in (q, k, v, fq, fk, window_factor))
    T, D = q.shape[1], q.shape[-1]
    scale = D ** -0.5 if scale is None else scale
    i = torch.arange(T, device=q.device).unsqueeze(1)
    j = torch.arange(T, device=q.device).unsqueeze(0)
    win = (j <= i) & (j > i - window_size)
    lin = j <= i - window_size
    s = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    m = s.masked_fill(~win, float("-inf")).amax(-1, keepdim=True)
    e = torch.sigmoid(window_factor).view(1, -1, 1, 1) * (s - m).exp() * win
    a = torch.einsum("bihf,bjhf->bhij", fq, fk) * lin
    num = torch.einsum("bhij,bjhv->bihv", e + a, v)
    den = (e + a).sum(-1).transpose(1, 2).unsqueeze(-1)
    return (num / den).to(out_dtype)
