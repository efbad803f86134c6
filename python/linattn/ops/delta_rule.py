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


def _recurrent(q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel,
               cu_seqlens, inplace_final_state):
    """inplace_final_state=True: the final state overwrites initial_state (one state buffer for serving loops),
    which is also returned as the final state. Without autograd, and with a contiguous state already in the
    state dtype, the kernel itself writes it (fused_recurrent_delta_rule_inplace: the state is read and written
    once); otherwise the differentiable op runs and its final state is copied in."""
    if inplace_final_state:
        if initial_state is None:
            raise ValueError("inplace_final_state=True needs an initial_state to write into")
        tensors = [t for t in (q, k, v, g, beta, initial_state) if t is not None]
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        if not needs_grad and initial_state.dtype == state_dtype and initial_state.is_contiguous():
            o = _ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, initial_state, scale,
                                                        use_qk_l2norm_in_kernel, cu_seqlens)
            return o, initial_state
    want = output_final_state or inplace_final_state
    # The op saves its initial state for backward: give it a copy when that buffer is about to be overwritten.
    h0 = initial_state.clone() if inplace_final_state else initial_state
    if g is None:
        out = _ops.fused_recurrent_delta_rule(q, k, v, beta, scale, h0, want, use_qk_l2norm_in_kernel, cu_seqlens)
    else:
        out = _ops.fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, h0, want, use_qk_l2norm_in_kernel,
                                                    cu_seqlens)
    o, final_state = _result(out, want)
    if inplace_final_state:
        with torch.no_grad():
            initial_state.copy_(final_state)
        return o, initial_state
    return o, final_state


def fused_recurrent_delta_rule(q, k, v, beta, scale: Optional[float] = None, initial_state=None,
                               output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                               cu_seqlens=None, inplace_final_state: bool = False, cu_seqlens_cpu=None
                               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """DeltaNet step by step (decoding)."""
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_delta_rule")
    return _recurrent(q, k, v, None, beta, scale, initial_state, output_final_state,
                      use_qk_l2norm_in_kernel, cu_seqlens, inplace_final_state)


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
    return _recurrent(q, k, v, g, beta, scale, initial_state,
                      output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, inplace_final_state)
