"""Gated linear attention (GLA) and simple GLA (scalar gate / lightning decay).

Per sequence and head, with state S in R^{K x V} and q_hat = scale * q:
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,    o_t = S_t^T q_hat_t
Layout [B, T, H, D]; varlen through cu_seqlens (int64 [N+1], B == 1). States are float32 [N, H, K, V]
(float64 for float64 inputs). Each function returns (o, final_state or None) and is differentiable
w.r.t. q, k, v, the gates and initial_state.
"""
from typing import Optional, Tuple

import torch

from ._varlen import resolve_cu_seqlens

_ops = torch.ops.linattn


def _result(out, output_final_state: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    o, final_state = out
    return o, (final_state if output_final_state else None)


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked GLA. q, k, g: [B, T, H, K] (g log-space, e.g. logsigmoid); v: [B, T, H, V]."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_gla")
    return _result(_ops.chunk_gla(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens),
                   output_final_state)


def fused_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """GLA evaluated step by step (decoding and short T). gk: [B, T, H, K] or None (no decay)."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_gla")
    return _result(
        _ops.fused_recurrent_gla(q, k, v, gk, scale, initial_state, output_final_state, cu_seqlens),
        output_final_state)


def chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked simple GLA: g [B, T, H] per-step scalar log gate and/or g_gamma [H] constant log decay
    (lightning attention); with both, the gate is their sum; with neither, plain causal linear attention."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_simple_gla")
    return _result(
        _ops.chunk_simple_gla(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens),
        output_final_state)


def fused_recurrent_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Simple GLA evaluated step by step; same arguments as chunk_simple_gla."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_simple_gla")
    return _result(
        _ops.fused_recurrent_simple_gla(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens),
        output_final_state)
