"""Gated linear attention (GLA) and simple GLA (scalar gate / lightning decay).

Per sequence and head, with state S in R^{K x V} and q_hat = scale * q:
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,    o_t = S_t^T q_hat_t
Layout [B, T, H, D]; varlen through cu_seqlens (int64 [N+1], B == 1). States are float32 [N, H, K, V]
(float64 for float64 inputs). Each function returns (o, final_state or None) and is differentiable
w.r.t. q, k, v, the gates and initial_state.

fla 0.5's extra keywords are accepted by keyword (`state_v_first`, `reverse` for the recurrent forms, `chunk_size`,
`head_first=False`; see _fla_args.py); `gv` is refused. chunk_lightning_attn / fused_recurrent_lightning_attn are
simple GLA with fla's per-layer lightning decay, chunk_retention / fused_recurrent_retention with RetNet's per-head
decay.
"""
from typing import Optional, Tuple

import torch

from . import _fla_args as fla
from ._varlen import resolve_cu_seqlens

_ops = torch.ops.linattn


def _result(out, output_final_state: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    o, final_state = out
    return o, (final_state if output_final_state else None)


def _recurrent(run, q, k, v, g, initial_state, output_final_state, cu_seqlens, reverse, state_v_first):
    """run(q, k, v, g, h0) calls a recurrent op; fla's reverse and state_v_first wrap it."""
    h0 = fla.state_in(initial_state, state_v_first)
    if reverse:
        index = fla.reversed_tokens(cu_seqlens, q.shape[1], q.device)
        q, k, v, g = fla.reverse_time((q, k, v, g), index)
    o, ht = _result(run(q, k, v, g, h0), output_final_state)
    if reverse:
        o = o.index_select(1, index)
    return o, fla.state_out(ht, state_v_first)


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
    *,
    state_v_first: bool = False,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked GLA. q, k, g: [B, T, H, K] (g log-space, e.g. logsigmoid); v: [B, T, H, V]."""
    fla.check_extra_kwargs("chunk_gla", kwargs, chunked=True)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_gla")
    o, ht = _result(_ops.chunk_gla(q, k, v, g, scale, fla.state_in(initial_state, state_v_first),
                                   output_final_state, cu_seqlens), output_final_state)
    return o, fla.state_out(ht, state_v_first)


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
    *,
    gv: Optional[torch.Tensor] = None,
    reverse: bool = False,
    state_v_first: bool = False,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """GLA evaluated step by step (decoding and short T). gk: [B, T, H, K] or None (no decay). reverse=True runs
    every sequence from its last token to its first."""
    fla.check_extra_kwargs("fused_recurrent_gla", kwargs, chunked=False)
    fla.refuse("fused_recurrent_gla", gv=gv)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_gla")
    return _recurrent(lambda q, k, v, g, h0: _ops.fused_recurrent_gla(q, k, v, g, scale, h0, output_final_state,
                                                                      cu_seqlens),
                      q, k, v, gk, initial_state, output_final_state, cu_seqlens, reverse, state_v_first)


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
    *,
    state_v_first: bool = False,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked simple GLA: g [B, T, H] per-step scalar log gate and/or g_gamma [H] constant log decay
    (lightning attention); with both, the gate is their sum; with neither, plain causal linear attention."""
    fla.check_extra_kwargs("chunk_simple_gla", kwargs, chunked=True)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_simple_gla")
    o, ht = _result(_ops.chunk_simple_gla(q, k, v, g, g_gamma, scale, fla.state_in(initial_state, state_v_first),
                                          output_final_state, cu_seqlens), output_final_state)
    return o, fla.state_out(ht, state_v_first)


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
    *,
    reverse: bool = False,
    state_v_first: bool = False,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Simple GLA evaluated step by step; same arguments as chunk_simple_gla, plus reverse=True (every sequence
    from its last token to its first)."""
    fla.check_extra_kwargs("fused_recurrent_simple_gla", kwargs, chunked=False)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_simple_gla")
    return _recurrent(lambda q, k, v, g, h0: _ops.fused_recurrent_simple_gla(q, k, v, g, g_gamma, scale, h0,
                                                                             output_final_state, cu_seqlens),
                      q, k, v, g, initial_state, output_final_state, cu_seqlens, reverse, state_v_first)


def chunk_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Lightning attention (fla's chunk_lightning_attn): chunk_simple_gla with the constant per-head log decay
    g_gamma[h] = -8 h / H * (1 - layer_idx / num_layers)."""
    g_gamma = fla.lightning_decay(q, layer_idx, num_layers)
    return chunk_simple_gla(q, k, v, None, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                            cu_seqlens_cpu, **kwargs)


def fused_recurrent_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Lightning attention step by step (fla's fused_recurrent_lightning_attn, same positional order)."""
    g_gamma = fla.lightning_decay(q, layer_idx, num_layers)
    return fused_recurrent_simple_gla(q, k, v, None, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                                      cu_seqlens_cpu, reverse=reverse, **kwargs)


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Retention (RetNet; fla's chunk_retention): chunk_simple_gla with the constant per-head log decay
    g_gamma[h] = log(1 - 2^(-5 - h))."""
    return chunk_simple_gla(q, k, v, None, fla.retention_decay(q), scale, initial_state, output_final_state,
                            cu_seqlens, cu_seqlens_cpu, **kwargs)


def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    cu_seqlens_cpu: Optional[torch.LongTensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Retention step by step (fla's fused_recurrent_retention; its state_v_first goes by keyword)."""
    return fused_recurrent_simple_gla(q, k, v, None, fla.retention_decay(q), scale, initial_state,
                                      output_final_state, cu_seqlens, cu_seqlens_cpu, reverse=reverse, **kwargs)
