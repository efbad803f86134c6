"""GLA and simple-GLA attention layers (drop-in token mixers, [B, T, hidden] -> [B, T, hidden])."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.gla import chunk_gla, chunk_simple_gla, fused_recurrent_gla, fused_recurrent_simple_gla


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # Gates are computed in fp32 for half-precision inputs (and keep float64 for float64 inputs).
    return x.to(torch.promote_types(x.dtype, torch.float32))


class GatedRMSNorm(nn.Module):
    """RMSNorm over the head dim, multiplied by swish(gate) (the output gate of GLA)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        x32, gate32 = _at_least_fp32(x), _at_least_fp32(gate)
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(x32.dtype) * F.silu(gate32)).to(x.dtype)


class _LinearAttentionBase(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, expand_k: float, expand_v: float, norm_eps: float,
                 mode: str):
        super().__init__()
        if mode not in ("chunk", "fused_recurrent"):
            raise ValueError(f"mode must be 'chunk' or 'fused_recurrent', got {mode!r}")
        self.hidden_size, self.num_heads, self.mode = hidden_size, num_heads, mode
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"key_dim {self.key_dim} and value_dim {self.value_dim} must divide by num_heads {num_heads}")
        self.head_k, self.head_v = self.key_dim // num_heads, self.value_dim // num_heads
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.g_norm = GatedRMSNorm(self.head_v, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def _heads(self, x: torch.Tensor, d: int) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_heads, d)

    def _use_recurrent(self, T: int) -> bool:
        # Short inputs at inference (decoding) take the step-by-step kernels, as in fla.
        return self.mode == "fused_recurrent" or (not self.training and T <= 64)

    def _finish(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        o = self.g_norm(o, self._heads(self.g_proj(x), self.head_v))
        return self.o_proj(o.reshape(*o.shape[:-2], self.value_dim))


class GatedLinearAttention(_LinearAttentionBase):
    """GLA layer: per-key-dim data-dependent decay from a low-rank projection,
    g = logsigmoid(W2 W1 x) / gate_logit_normalizer."""

    def __init__(self, hidden_size: int = 1024, num_heads: int = 4, expand_k: float = 0.5, expand_v: float = 1.0,
                 gate_low_rank_dim: int = 16, gate_logit_normalizer: float = 16.0, norm_eps: float = 1e-5,
                 mode: str = "chunk"):
        super().__init__(hidden_size, num_heads, expand_k, expand_v, norm_eps, mode)
        self.gate_logit_normalizer = gate_logit_normalizer
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim, bias=True))

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, use_cache: bool = False,
                cu_seqlens: Optional[torch.LongTensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        q = self._heads(self.q_proj(x), self.head_k)
        k = self._heads(self.k_proj(x), self.head_k)
        v = self._heads(self.v_proj(x), self.head_v)
        gk = self._heads(F.logsigmoid(_at_least_fp32(self.gk_proj(x))) / self.gate_logit_normalizer, self.head_k)
        fn = fused_recurrent_gla if self._use_recurrent(x.shape[1]) else chunk_gla
        o, new_state = fn(q, k, v, gk.to(q.dtype), initial_state=state, output_final_state=use_cache,
                          cu_seqlens=cu_seqlens)
        return self._finish(x, o), new_state


class SimpleGatedLinearAttention(_LinearAttentionBase):
    """Simple GLA layer: one decay per head and step. decay='data' learns it from the input
    (g = logsigmoid(W x) / normalizer); decay='fixed' uses lightning/RetNet-style constant per-head decays."""

    def __init__(self, hidden_size: int = 1024, num_heads: int = 4, expand_k: float = 1.0, expand_v: float = 1.0,
                 decay: str = "data", gate_logit_normalizer: float = 16.0, norm_eps: float = 1e-5,
                 mode: str = "chunk"):
        super().__init__(hidden_size, num_heads, expand_k, expand_v, norm_eps, mode)
        if decay not in ("data", "fixed"):
            raise ValueError(f"decay must be 'data' or 'fixed', got {decay!r}")
        self.decay, self.gate_logit_normalizer = decay, gate_logit_normalizer
        if decay == "data":
            self.gh_proj = nn.Linear(hidden_size, num_heads, bias=True)
        else:
            gamma = torch.log1p(-torch.exp2(-5.0 - torch.arange(num_heads, dtype=torch.float32)))
            self.register_buffer("g_gamma", gamma, persistent=False)

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, use_cache: bool = False,
                cu_seqlens: Optional[torch.LongTensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        q = self._heads(self.q_proj(x), self.head_k)
        k = self._heads(self.k_proj(x), self.head_k)
        v = self._heads(self.v_proj(x), self.head_v)
        g = (F.logsigmoid(_at_least_fp32(self.gh_proj(x))) / self.gate_logit_normalizer).to(q.dtype) \
            if self.decay == "data" else None
        g_gamma = self.g_gamma.to(q.dtype) if self.decay == "fixed" else None
        fn = fused_recurrent_simple_gla if self._use_recurrent(x.shape[1]) else chunk_simple_gla
        o, new_state = fn(q, k, v, g, g_gamma, initial_state=state, output_final_state=use_cache,
                          cu_seqlens=cu_seqlens)
        return self._finish(x, o), new_state


LightningAttention = SimpleGatedLinearAttention
