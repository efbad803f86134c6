"""Liger: gates from the pretrained key projection and Liger attention."""
from typing import NamedTuple, Optional, Tuple

import torch


def liger_gate(k: torch.Tensor, out_dim: Optional[int] = None, divisor: float = 16.0) -> torch.Tensor:
    """g = logsigmoid(avgpool_last_dim(k, out_dim)) / divisor (out_dim=None: no pooling)."""
    return torch.ops.linattn.liger_gate(k, out_dim, divisor)


def liger_attention(q, k, v, g, q_rot, k_rot, window_size: int = 64, initial_state=None,
                    output_final_state: bool = False, softmax_weight: float = 0.5, linear_weight: float = 0.5
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """o = softmax_weight * SWA(q_rot, k_rot, v) + linear_weight * GLA(softmax(q), softmax(k), v, g, scale=1);
    g is [B, T, H, D] (a log gate per key) or [B, T, H] (one per head)."""
    o, ht = torch.ops.linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size, initial_state,
                                              output_final_state, softmax_weight, linear_weight)
    return o, (ht if output_final_state else None)


class LigerState(NamedTuple):
    """Decoding state of Liger attention after n tokens: the last min(w-1, n) rotated keys and values for the
    softmax window (a real window cache, so decoding equals the full forward) and the GLA state. Batch first."""
    k_rot: torch.Tensor  # [B, W, H, D]
    v: torch.Tensor      # [B, W, H, V]
    h: torch.Tensor      # [B, H, D, V] fp32 (fp64 for fp64 inputs)


def liger_prefill(q, k, v, g, q_rot, k_rot, window_size: int = 64, softmax_weight: float = 0.5,
                  linear_weight: float = 0.5) -> Tuple[torch.Tensor, LigerState]:
    """liger_attention over a whole prompt, also returning the state that liger_decode continues from."""
    o, h = torch.ops.linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size, None, True,
                                             softmax_weight, linear_weight)
    keep = min(window_size - 1, q.shape[1])
    T = q.shape[1]
    return o, LigerState(k_rot[:, T - keep:], v[:, T - keep:], h)


def liger_decode(q, k, v, g, q_rot, k_rot, state: LigerState, window_size: int = 64,
                 softmax_weight: float = 0.5, linear_weight: float = 0.5) -> Tuple[torch.Tensor, LigerState]:
    """Continues Liger attention from `state` over any number of new tokens; the outputs equal those of
    liger_attention on the whole sequence."""
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    T, W = q.shape[1], state.k_rot.shape[1]
    ops = torch.ops.linattn
    if g.dim() == 4:  # a log gate per key
        gla = ops.fused_recurrent_gla if T <= 64 else ops.chunk_gla
        o_lin, h = gla(q.softmax(-1), k.softmax(-1), v, g, 1.0, state.h, True, None)
    else:  # one per head, [B, T, H]
        gla = ops.fused_recurrent_simple_gla if T <= 64 else ops.chunk_simple_gla
        o_lin, h = gla(q.softmax(-1), k.softmax(-1), v, g, None, 1.0, state.h, True, None)
    # The window part runs on [cached keys, new keys]; the cached positions get placeholder queries whose
    # outputs are dropped, and window offsets are relative, so the new queries see exactly their w keys.
    kc, vc = torch.cat([state.k_rot, k_rot], 1), torch.cat([state.v, v], 1)
    qc = torch.cat([q_rot.new_zeros(q_rot.shape[0], W, *q_rot.shape[2:]), q_rot], 1)
    o_win = torch.ops.linattn.sliding_window_attention(qc, kc, vc, window_size, None, None)[:, W:]
    keep = min(window_size - 1, kc.shape[1])
    o = o_win * softmax_weight + o_lin * linear_weight
    return o, LigerState(kc[:, kc.shape[1] - keep:], vc[:, vc.shape[1] - keep:], h)
