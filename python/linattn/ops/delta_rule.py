"""DeltaNet and gated DeltaNet (fla-compatible signatures).

Per value head, state S in R^{K x V}, q_hat = scale * q:
    S <- exp(g_t) S                      (gated only)
    u_t = beta_t (v_t - S^T k_t),  S <- S + k_t u_t^T,  o_t = S^T q_hat_t
q, k: [B, T, H, K]; v: [B, T, HV, V] with HV a multiple of H (value head i uses q/k head i // (HV // H));
beta, g: [B, T, HV]; states float32 [N, HV, K, V] (float64 for float64 inputs). use_qk_l2norm_in_kernel
normalises q and k by x / sqrt(sum(x^2) + 1e-6) first (and differentiates it). Returns (o, final_state or None).
"""
from typing import Optional, Tuple

import torch

from ._varlen import resolve_cu_seqlens

_ops = torch.ops.linattn


def _result(out, output_final_state):
    o, final_state = out
    return o, (final_state if output_final_state else None)


def chunk_delta_rule(q, k, v, beta, scale: Optional[float] = None, initial_state=None,
                     output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                     cu_seqlens=None, cu_seqlens_cpu=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked DeltaNet (UT transform, chunk 64)."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_delta_rule")
    return _result(_ops.chunk_delta_rule(q, k, v, beta, scale, initial_state, output_final_state,
                                         use_qk_l2norm_in_kernel, cu_seqlens), output_final_state)


def _write_back(out, initial_state, inplace_final_state):
    """inplace_final_state: the new state is written into initial_state (one state buffer for serving loops),
    which is also returned as the final state. The kernels still produce a separate state that is copied in."""
    if not inplace_final_state:
        return out
    if initial_state is None:
        raise ValueError("inplace_final_state=True needs an initial_state to write into")
    with torch.no_grad():
        initial_state.copy_(out[1])
    return out[0], initial_state


def fused_recurrent_delta_rule(q, k, v, beta, scale: Optional[float] = None, initial_state=None,
                               output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                               cu_seqlens=None, inplace_final_state: bool = False, cu_seqlens_cpu=None
                               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """DeltaNet step by step (decoding)."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_delta_rule")
    want = output_final_state or inplace_final_state
    out = _result(_ops.fused_recurrent_delta_rule(q, k, v, beta, scale, initial_state, want,
                                                  use_qk_l2norm_in_kernel, cu_seqlens), want)
    return _write_back(out, initial_state, inplace_final_state)


def chunk_gated_delta_rule(q, k, v, g, beta, scale: Optional[float] = None, initial_state=None,
                           output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                           cu_seqlens=None, cu_seqlens_cpu=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked gated DeltaNet; g [B, T, HV] log decays."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_gated_delta_rule")
    return _result(_ops.chunk_gated_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state,
                                               use_qk_l2norm_in_kernel, cu_seqlens), output_final_state)


def fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale: Optional[float] = None, initial_state=None,
                                     output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                                     cu_seqlens=None, inplace_final_state: bool = False, cu_seqlens_cpu=None
                                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gated DeltaNet step by step (decoding), differentiable."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_gated_delta_rule")
    want = output_final_state or inplace_final_state
    out = _result(_ops.fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, initial_state, want,
                                                        use_qk_l2norm_in_kernel, cu_seqlens), want)
    return _write_back(out, initial_state, inplace_final_state)
