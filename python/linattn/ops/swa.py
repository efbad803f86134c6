"""Sliding-window attention: causal softmax attention where query i sees keys i-w+1 .. i."""
from typing import Optional

import torch

from ._varlen import resolve_cu_seqlens


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_size: int,
                             scale: Optional[float] = None, cu_seqlens: Optional[torch.LongTensor] = None,
                             cu_seqlens_cpu: Optional[torch.LongTensor] = None) -> torch.Tensor:
    """q, k: [B, T, H, K]; v: [B, T, H, V]; returns o [B, T, H, V]. O(T * window) work, no T x T tensor."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "sliding_window_attention")
    return torch.ops.linattn.sliding_window_attention(q, k, v, window_size, scale, cu_seqlens)
