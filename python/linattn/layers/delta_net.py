"""DeltaNet and gated DeltaNet token mixers ([B, T, hidden] -> [B, T, hidden])."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.delta_rule import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
)
from .gla import GatedRMSNorm, _at_least_fp32


class GatedDeltaNet(nn.Module):
    """Gated DeltaNet layer: silu-activated q, k (L2-normalised in the kernel), v with num_v_heads >= num_heads
    (grouped value heads), beta = sigmoid(b_proj x), decay g = -exp(A_log) * softplus(a_proj x + dt_bias)
    (Mamba-2 style), gated RMSNorm output. gated=False gives plain DeltaNet (no decay)."""

    def __init__(self, hidden_size: int = 1024, num_heads: int = 4, head_dim: int = 64,
                 num_v_heads: Optional[int] = None, expand_v: float = 1.0, gated: bool = True,
                 norm_eps: float = 1e-5, mode: str = "chunk"):
        super().__init__()
        if mode not in ("chunk", "fused_recurrent"):
            raise ValueError(f"mode must be 'chunk' or 'fused_recurrent', got {mode!r}")
        self.num_heads, self.head_k, self.mode, self.gated = num_heads, head_dim, mode, gated
        self.num_v_heads = num_v_heads or num_heads
        if self.num_v_heads % num_heads:
            raise ValueError(f"num_v_heads {self.num_v_heads} must be a multiple of num_heads {num_heads}")
        self.head_v = int(head_dim * expand_v)
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.num_v_heads * self.head_v, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        if gated:
            self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
            self.A_log = nn.Parameter(torch.log(torch.empty(self.num_v_heads).uniform_(1, 16)))
            dt = torch.exp(torch.rand(self.num_v_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.g_proj = nn.Linear(hidden_size, self.num_v_heads * self.head_v, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v, eps=norm_eps)
        self.o_proj = nn.Linear(self.num_v_heads * self.head_v, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, state: Optional[torch.Tensor] = None, use_cache: bool = False,
                cu_seqlens: Optional[torch.LongTensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, T, _ = x.shape
        q = F.silu(self.q_proj(x)).view(B, T, self.num_heads, self.head_k)
        k = F.silu(self.k_proj(x)).view(B, T, self.num_heads, self.head_k)
        v = F.silu(self.v_proj(x)).view(B, T, self.num_v_heads, self.head_v)
        beta = torch.sigmoid(_at_least_fp32(self.b_proj(x)))
        recurrent = self.mode == "fused_recurrent" or (not self.training and T <= 64)
        kw = dict(initial_state=state, output_final_state=use_cache, use_qk_l2norm_in_kernel=True,
                  cu_seqlens=cu_seqlens)
        if self.gated:
            a = _at_least_fp32(self.a_proj(x)) + self.dt_bias.to(_at_least_fp32(x).dtype)
            g = -self.A_log.to(a.dtype).exp() * F.softplus(a)
            fn = fused_recurrent_gated_delta_rule if recurrent else chunk_gated_delta_rule
            o, new_state = fn(q, k, v, g.to(q.dtype), beta.to(q.dtype), **kw)
        else:
            fn = fused_recurrent_delta_rule if recurrent else chunk_delta_rule
            o, new_state = fn(q, k, v, beta.to(q.dtype), **kw)
        o = self.o_norm(o, self.g_proj(x).view(B, T, self.num_v_heads, self.head_v))
        return self.o_proj(o.reshape(B, T, -1)), new_state


class DeltaNet(GatedDeltaNet):
    """DeltaNet layer (no decay); see GatedDeltaNet."""

    def __init__(self, hidden_size: int = 1024, num_heads: int = 4, head_dim: int = 64, **kwargs):
        super().__init__(hidden_size, num_heads, head_dim, gated=False, **kwargs)
