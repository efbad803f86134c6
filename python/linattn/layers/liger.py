"""LigerAttention: a drop-in replacement for a Llama-family attention module that adds no parameters; the GLA
gate is pooled from the pretrained key projection, and the output mixes a softmax sliding window with GLA over
softmax feature maps of the raw q and k."""
from typing import Optional

import torch.nn as nn

from ..ops.liger import liger_attention, liger_decode, liger_gate, liger_prefill
from .cache import get_state, set_state
from .hf_attention import ConvertedAttention


class LigerAttention(ConvertedAttention):
    """o = softmax_weight * SWA_w(RoPE q, RoPE k, v) + linear_weight * GLA(softmax(q), softmax(k), v, g), with
    g = logsigmoid(avgpool(k)) / gate_divisor.

    variant "gla" (default): the gate keeps the key dim (one decay per key channel). variant "pooled": the key
    is average-pooled to one value per head (a scalar decay per head and step, as simple GLA / lightning
    attention). Key/value heads are repeated to the query heads, as the
    original does. Left padding is refused (no mask). Pass `past_key_values` (a transformers Cache or
    linattn.layers.StateCache) to decode: the cache keeps the last window_size-1 rotated keys and values and
    the GLA state, so decoding equals the full forward.
    """

    def __init__(self, base: nn.Module, window_size: int = 64, variant: str = "gla", gate_divisor: float = 16.0,
                 softmax_weight: float = 0.5, linear_weight: float = 0.5, layer_idx: Optional[int] = None):
        super().__init__(base, layer_idx)
        if variant not in ("gla", "pooled"):
            raise ValueError(f"variant must be 'gla' or 'pooled', got {variant!r}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size, self.variant, self.gate_divisor = window_size, variant, gate_divisor
        self.softmax_weight, self.linear_weight = softmax_weight, linear_weight

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"variant={self.variant}, window_size={self.window_size}")

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        self.check_mask(attention_mask)
        q, k, v = self.project(hidden_states)
        q_rot, k_rot = self.rotary(q, k, position_embeddings)
        q, k, v, q_rot, k_rot = self.upcast(q, self.repeat_kv(k), self.repeat_kv(v), q_rot, self.repeat_kv(k_rot))
        # pooled: one gate per head and step, [B, T, H], which liger_attention runs as simple GLA (no [B, T, H, D]
        # copy of a broadcast gate; the tensor-core scalar-gate kernels on CUDA).
        div = self.gate_divisor
        g = liger_gate(k, 1, div)[..., 0] if self.variant == "pooled" else liger_gate(k, None, div)
        args = (q, k, v, g, q_rot, k_rot)
        mix = dict(window_size=self.window_size, softmax_weight=self.softmax_weight, linear_weight=self.linear_weight)
        if past_key_values is None:
            o, _ = liger_attention(*args, **mix)
            return self.finish(o), None
        state = get_state(past_key_values, self.layer_idx)
        if state is None:
            o, state = liger_prefill(*args, **mix)
        else:
            o, state = liger_decode(*args, state, **mix)
        set_state(past_key_values, self.layer_idx, state, q.shape[1])
        return self.finish(o), None
