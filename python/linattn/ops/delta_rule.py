"""DeltaNet and gated DeltaNet (fla-compatible signatures).

Per value head, state S in R^{K x V}, q_hat = scale * q:
    S <- exp(g_t) S                      (gated only)
    u_t = beta_t (v_t - S^T k_t),  S <- S + k_t u_t^T,  o_t = S^T q_hat_t
q, k: [B, T, H, K]; v: [B, T, HV, V] with HV a multiple of H (value head i uses q/k head i // (HV // H));
beta, g: [B, T, HV]; states float32 [N, HV, K, V] (float64 for float64 inputs). use_qk_l2norm_in_kernel
normalises q and k by x / sqrt(sum(x^2) + 1e-6) first (and differentiates it). Returns (o, final_state or None).

fla 0.5's extra keywords are accepted by keyword (see _fla_args.py): `state_v_first`, `chunk_size`,
`head_first=False`, and for the gated forms `use_gate_in_kernel` (with `A_log`, `dt_bias`),
`use_beta_sigmoid_in_kernel`, `allow_neg_eigval`; `gk`, `gv` and `cp_context` are refused.
"""
from typing import Optional, Tuple

import torch

from . import _fla_args as fla
from ._varlen import resolve_cu_seqlens

_ops = torch.ops.linattn


def _result(out, output_final_state):
    o, final_state = out
    return o, (final_state if output_final_state else None)


def _gated_inputs(op, g, beta, kwargs, use_beta_sigmoid_in_kernel, allow_neg_eigval):
    """fla's gate / beta activations, applied before the op (so their gradients flow through autograd)."""
    use_gate = kwargs.pop("use_gate_in_kernel", False)
    A_log, dt_bias = kwargs.pop("A_log", None), kwargs.pop("dt_bias", None)
    if use_gate:
        g = fla.gate_from_raw(g, A_log, dt_bias, op)
    elif A_log is not None or dt_bias is not None:
        raise ValueError(f"{op}: A_log / dt_bias are only used with use_gate_in_kernel=True")
    return g, fla.beta_from_logits(beta, use_beta_sigmoid_in_kernel, allow_neg_eigval, op)


def chunk_delta_rule(q, k, v, beta, scale: Optional[float] = None, initial_state=None,
                     output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                     cu_seqlens=None, cu_seqlens_cpu=None, *, state_v_first: bool = False,
                     **kwargs) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked DeltaNet (UT transform, chunk 64)."""
    fla.check_extra_kwargs("chunk_delta_rule", kwargs, chunked=True)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_delta_rule")
    o, ht = _result(_ops.chunk_delta_rule(q, k, v, beta, scale, fla.state_in(initial_state, state_v_first),
                                          output_final_state, use_qk_l2norm_in_kernel, cu_seqlens),
                    output_final_state)
    return o, fla.state_out(ht, state_v_first)


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
                               cu_seqlens=None, inplace_final_state: bool = False, cu_seqlens_cpu=None,
                               *, state_v_first: bool = False, **kwargs
                               ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """DeltaNet step by step (decoding)."""
    fla.check_extra_kwargs("fused_recurrent_delta_rule", kwargs, chunked=False)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_delta_rule")
    o, ht = _recurrent(q, k, v, None, beta, scale, fla.state_in(initial_state, state_v_first), output_final_state,
                       use_qk_l2norm_in_kernel, cu_seqlens, inplace_final_state)
    return o, (initial_state if inplace_final_state else fla.state_out(ht, state_v_first))


def chunk_gated_delta_rule(q, k, v, g, beta, scale: Optional[float] = None, initial_state=None,
                           output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                           cu_seqlens=None, cu_seqlens_cpu=None, *, use_beta_sigmoid_in_kernel: bool = False,
                           allow_neg_eigval: bool = False, state_v_first: bool = False, cp_context=None,
                           **kwargs) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chunked gated DeltaNet; g [B, T, HV] log decays."""
    op = "chunk_gated_delta_rule"
    fla.refuse(op, cp_context=cp_context)
    g, beta = _gated_inputs(op, g, beta, kwargs, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    fla.check_extra_kwargs(op, kwargs, chunked=True)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, op)
    o, ht = _result(_ops.chunk_gated_delta_rule(q, k, v, g, beta, scale, fla.state_in(initial_state, state_v_first),
                                                output_final_state, use_qk_l2norm_in_kernel, cu_seqlens),
                    output_final_state)
    return o, fla.state_out(ht, state_v_first)


def fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale: Optional[float] = None, initial_state=None,
                                     output_final_state: bool = False, use_qk_l2norm_in_kernel: bool = False,
                                     cu_seqlens=None, inplace_final_state: bool = False, cu_seqlens_cpu=None,
                                     *, gk=None, gv=None, use_beta_sigmoid_in_kernel: bool = False,
                                     allow_neg_eigval: bool = False, state_v_first: bool = False, **kwargs
                                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gated DeltaNet step by step (decoding), differentiable. Unlike fla's, beta is the fifth positional
    argument (fla puts gk, gv before it): pass fla's arguments by keyword."""
    op = "fused_recurrent_gated_delta_rule"
    fla.refuse(op, gk=gk, gv=gv)
    g, beta = _gated_inputs(op, g, beta, kwargs, use_beta_sigmoid_in_kernel, allow_neg_eigval)
    fla.check_extra_kwargs(op, kwargs, chunked=False)
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, op)
    o, ht = _recurrent(q, k, v, g, beta, scale, fla.state_in(initial_state, state_v_first),
                       output_final_state, use_qk_l2norm_in_kernel, cu_seqlens, inplace_final_state)
    return o, (initial_state if inplace_final_state else fla.state_out(ht, state_v_first))
