"""The wrappers behind linattn.fla.ops: fla 0.5.2's parameter lists (names, order, defaults), each forwarding by
keyword to linattn's op. Ops fla marks deprecated (fused_chunk_gla, fused_chunk_delta_rule) are not provided, nor
fla's naive_* reference loops (linattn.reference holds float64 recurrences)."""
from typing import Optional

import torch

from ... import ops as _ops
from ...ops import _fla_args
from ...ops import gla as _gla
from ...ops import linear_attn as _linear_attn

Tensor = torch.Tensor


def chunk_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: Optional[float] = None,
              initial_state: Optional[Tensor] = None, output_final_state: bool = False, state_v_first: bool = False,
              cu_seqlens: Optional[Tensor] = None, cu_seqlens_cpu: Optional[Tensor] = None):
    return _ops.gla.chunk_gla(q, k, v, g, scale=scale, initial_state=initial_state,
                              output_final_state=output_final_state, state_v_first=state_v_first,
                              cu_seqlens=cu_seqlens, cu_seqlens_cpu=cu_seqlens_cpu)


def fused_recurrent_gla(q: Tensor, k: Tensor, v: Tensor, gk: Optional[Tensor] = None, gv: Optional[Tensor] = None,
                        scale: Optional[float] = None, initial_state: Optional[Tensor] = None,
                        output_final_state: bool = False, reverse: bool = False, state_v_first: bool = False,
                        cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _ops.gla.fused_recurrent_gla(q, k, v, gk=gk, gv=gv, scale=scale, initial_state=initial_state,
                                        output_final_state=output_final_state, reverse=reverse,
                                        state_v_first=state_v_first, cu_seqlens=cu_seqlens, **kwargs)


def chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor] = None, g_gamma: Optional[Tensor] = None,
                     scale: Optional[float] = None, initial_state: Optional[Tensor] = None,
                     output_final_state: bool = False, state_v_first: bool = False,
                     cu_seqlens: Optional[Tensor] = None, cu_seqlens_cpu: Optional[Tensor] = None, **kwargs):
    return _ops.gla.chunk_simple_gla(q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                                     output_final_state=output_final_state, state_v_first=state_v_first,
                                     cu_seqlens=cu_seqlens, cu_seqlens_cpu=cu_seqlens_cpu, **kwargs)


def fused_chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor] = None,
                           g_gamma: Optional[Tensor] = None, scale: Optional[float] = None,
                           initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                           cu_seqlens: Optional[Tensor] = None):
    return _ops.gla.chunk_simple_gla(q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                                     output_final_state=output_final_state, cu_seqlens=cu_seqlens)


def fused_recurrent_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor] = None,
                               g_gamma: Optional[Tensor] = None, scale: Optional[float] = None,
                               initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                               reverse: bool = False, state_v_first: bool = False,
                               cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _ops.gla.fused_recurrent_simple_gla(q, k, v, g=g, g_gamma=g_gamma, scale=scale,
                                               initial_state=initial_state, output_final_state=output_final_state,
                                               reverse=reverse, state_v_first=state_v_first, cu_seqlens=cu_seqlens,
                                               **kwargs)


def chunk_lightning_attn(q: Tensor, k: Tensor, v: Tensor, layer_idx: int, num_layers: int,
                         scale: Optional[float] = None, initial_state: Optional[Tensor] = None,
                         output_final_state: bool = False, cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _gla.chunk_lightning_attn(q, k, v, layer_idx, num_layers, scale=scale, initial_state=initial_state,
                                     output_final_state=output_final_state, cu_seqlens=cu_seqlens, **kwargs)


def fused_recurrent_lightning_attn(q: Tensor, k: Tensor, v: Tensor, layer_idx: int, num_layers: int,
                                   scale: Optional[float] = None, initial_state: Optional[Tensor] = None,
                                   output_final_state: bool = False, reverse: bool = False,
                                   cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _gla.fused_recurrent_lightning_attn(q, k, v, layer_idx, num_layers, scale=scale,
                                               initial_state=initial_state, output_final_state=output_final_state,
                                               reverse=reverse, cu_seqlens=cu_seqlens, **kwargs)


def chunk_retention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                    initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                    cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _gla.chunk_retention(q, k, v, scale=scale, initial_state=initial_state,
                                output_final_state=output_final_state, cu_seqlens=cu_seqlens, **kwargs)


def fused_recurrent_retention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                              initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                              reverse: bool = False, state_v_first: bool = False,
                              cu_seqlens: Optional[Tensor] = None, **kwargs):
    return _gla.fused_recurrent_retention(q, k, v, scale=scale, initial_state=initial_state,
                                          output_final_state=output_final_state, reverse=reverse,
                                          state_v_first=state_v_first, cu_seqlens=cu_seqlens, **kwargs)


def chunk_linear_attn(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None, initial_state=None,
                      output_final_state: bool = False, normalize: bool = True, cu_seqlens: Optional[Tensor] = None):
    return _linear_attn.chunk_linear_attn(q, k, v, scale=scale, initial_state=initial_state,
                                          output_final_state=output_final_state, normalize=normalize,
                                          cu_seqlens=cu_seqlens)


def fused_recurrent_linear_attn(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None, initial_state=None,
                                output_final_state: bool = False, reverse: bool = False, normalize: bool = False,
                                cu_seqlens: Optional[Tensor] = None):
    return _linear_attn.fused_recurrent_linear_attn(q, k, v, scale=scale, initial_state=initial_state,
                                                    output_final_state=output_final_state, reverse=reverse,
                                                    normalize=normalize, cu_seqlens=cu_seqlens)


def chunk_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: Optional[float] = None,
                     initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                     use_qk_l2norm_in_kernel: bool = False, cu_seqlens: Optional[Tensor] = None,
                     cu_seqlens_cpu: Optional[Tensor] = None, **kwargs):
    return _ops.delta_rule.chunk_delta_rule(q, k, v, beta, scale=scale, initial_state=initial_state,
                                            output_final_state=output_final_state,
                                            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, cu_seqlens=cu_seqlens,
                                            cu_seqlens_cpu=cu_seqlens_cpu, **kwargs)


def fused_recurrent_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Optional[Tensor] = None,
                               scale: Optional[float] = None, initial_state: Optional[Tensor] = None,
                               output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                               cu_seqlens: Optional[Tensor] = None):
    return _ops.delta_rule.fused_recurrent_delta_rule(q, k, v, _unit_beta(q, v) if beta is None else beta,
                                                      scale=scale, initial_state=initial_state,
                                                      output_final_state=output_final_state,
                                                      use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                                                      cu_seqlens=cu_seqlens)


def chunk_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, scale: Optional[float] = None,
                           initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                           use_qk_l2norm_in_kernel: bool = False, use_beta_sigmoid_in_kernel: bool = False,
                           allow_neg_eigval: bool = False, state_v_first: bool = False,
                           cu_seqlens: Optional[Tensor] = None, cu_seqlens_cpu: Optional[Tensor] = None,
                           cp_context=None, **kwargs):
    return _ops.delta_rule.chunk_gated_delta_rule(
        q, k, v, g, beta, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
        allow_neg_eigval=allow_neg_eigval, state_v_first=state_v_first, cu_seqlens=cu_seqlens,
        cu_seqlens_cpu=cu_seqlens_cpu, cp_context=cp_context, **kwargs)


def fused_recurrent_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor] = None,
                                     gk: Optional[Tensor] = None, gv: Optional[Tensor] = None,
                                     beta: Optional[Tensor] = None, scale: Optional[float] = None,
                                     initial_state: Optional[Tensor] = None, output_final_state: bool = False,
                                     use_qk_l2norm_in_kernel: bool = False, use_gate_in_kernel: bool = False,
                                     A_log: Optional[Tensor] = None, dt_bias: Optional[Tensor] = None,
                                     use_beta_sigmoid_in_kernel: bool = False, allow_neg_eigval: bool = False,
                                     state_v_first: bool = False, cu_seqlens: Optional[Tensor] = None, **kwargs):
    if beta is None:
        beta = _unit_beta(q, v)
    if g is None and use_gate_in_kernel:
        raise ValueError("fused_recurrent_gated_delta_rule: use_gate_in_kernel=True needs g (the raw gate input)")
    if g is None:  # fla then applies no decay: a log gate of 0
        g = torch.zeros(beta.shape, dtype=torch.float64 if q.dtype == torch.float64 else torch.float32,
                        device=q.device)
    return _ops.delta_rule.fused_recurrent_gated_delta_rule(
        q, k, v, g, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, gk=gk, gv=gv,
        use_gate_in_kernel=use_gate_in_kernel, A_log=A_log, dt_bias=dt_bias,
        use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel, allow_neg_eigval=allow_neg_eigval,
        state_v_first=state_v_first, cu_seqlens=cu_seqlens, **kwargs)


def _unit_beta(q: Tensor, v: Tensor) -> Tensor:
    # fla's default when beta is None: every token writes with strength 1 (one beta per value head).
    return torch.ones(v.shape[:-1], dtype=q.dtype, device=q.device)


# fla's fused_chunk_* forms of these take the same parameters as the chunk_* forms and compute the same function.
fused_chunk_retention = chunk_retention


def _decayed_scores(q: Tensor, k: Tensor, g: Optional[Tensor], scale: Optional[float]) -> Tensor:
    """[B, H, T, T]: scale q_i . k_j exp(G_i - G_j) for j <= i, 0 above the diagonal (G the running sum of g over
    T), in fp32 at least, returned in q's dtype: the weights fla's parallel kernels store for output_attentions."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("bihk,bjhk->bhij", q.to(dtype), k.to(dtype)) * scale
    causal = torch.ones(q.shape[1], q.shape[1], dtype=torch.bool, device=q.device).tril()
    if g is not None:
        G = g.to(dtype).cumsum(1).transpose(1, 2)  # [B, H, T]
        # exponent masked before exp: above the diagonal G_i - G_j > 0 could overflow
        s = s * torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~causal, 0))
    return s.masked_fill(~causal, 0).to(q.dtype)


def parallel_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Optional[Tensor] = None, scale: Optional[float] = None,
                        output_attentions: bool = False, cu_seqlens: Optional[Tensor] = None,
                        cu_seqlens_cpu: Optional[Tensor] = None, **kwargs):
    """fla's parallel form -> (o, attn): o from chunk_simple_gla (the same function), attn the [B, H, T, T]
    weights when output_attentions (not with cu_seqlens, as in fla), else None."""
    if output_attentions and cu_seqlens is not None:
        raise ValueError("parallel_simple_gla: output_attentions=True is not supported with cu_seqlens (as in fla)")
    o, _ = _ops.gla.chunk_simple_gla(q, k, v, g=g, scale=scale, cu_seqlens=cu_seqlens,
                                     cu_seqlens_cpu=cu_seqlens_cpu, **kwargs)
    return o, (_decayed_scores(q, k, g, scale) if output_attentions else None)


def parallel_retention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None,
                       output_attentions: bool = False, cu_seqlens: Optional[Tensor] = None, **kwargs):
    """fla's parallel retention: parallel_simple_gla with the RetNet decay as a per-step gate."""
    g = _fla_args.retention_decay(q).expand(q.shape[0], q.shape[1], q.shape[2])
    return parallel_simple_gla(q, k, v, g, scale=scale, output_attentions=output_attentions, cu_seqlens=cu_seqlens,
                               **kwargs)
fused_chunk_linear_attn = chunk_linear_attn
chunk_gdn = chunk_gated_delta_rule
fused_recurrent_gdn = fused_recurrent_gated_delta_rule
