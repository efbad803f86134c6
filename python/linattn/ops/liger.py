"""Liger: gates from the pretrained key projection and Liger attention."""
from typing import Optional, Tuple

import torch


def liger_gate(k: torch.Tensor, out_dim: Optional[int] = None, divisor: float = 16.0) -> torch.Tensor:
    """g = logsigmoid(avgpool_last_dim(k, out_dim)) / divisor (out_dim=None: no pooling)."""
    return torch.ops.linattn.liger_gate(k, out_dim, divisor)


def liger_attention(q, k, v, g, q_rot, k_rot, window_size: int = 64, initial_state=None,
                    output_final_state: bool = False, softmax_weight: float = 0.5, linear_weight: float = 0.5
                    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """o = softmax_weight * SWA(q_rot, k_rot, v) + linear_weight * GLA(softmax(q), softmax(k), v, g, scale=1)."""
    o, ht = torch.ops.linattn.liger_attention(q, k, v, g, q_rot, k_rot, window_size, initial_state,
                                              output_final_state, softmax_weight, linear_weight)
    return o, (ht if output_final_state else None)
