"""LolcatsAttention: a drop-in replacement for a Llama-family attention module computing the LoLCATs hybrid
(softmax over a sliding window + Hedgehog linear attention over the earlier tokens, one normaliser)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.lolcats import hedgehog_feature_map, lolcats_attention, lolcats_decode, lolcats_prefill_state
from .cache import get_state, set_state
from .hf_attention import ConvertedAttention


class LolcatsAttention(ConvertedAttention):
    """Takes over `base`'s q/k/v/o projections and adds, per query head, Hedgehog feature maps for queries and
    keys (`feature_map_q`, `feature_map_k`, [H, D, F], initialised to the identity slice so that phi starts as
    [softmax(x[:F]), softmax(-x[:F])]) and a window factor logit (`window_factor`, [H]).

    Rotary embeddings are applied before the feature maps. Key/value heads are repeated to the query heads.
    With `attention_transfer = True` the layer returns the softmax teacher's output (so the next layer is fed
    the teacher's inputs) and leaves the MSE between the hybrid and the teacher in `transfer_loss`.

    Right padding is harmless for causal attention; left padding is refused with an error (no mask).
    Pass `past_key_values` (a transformers Cache or linattn.layers.StateCache) to decode.
    """

    def __init__(self, base: nn.Module, feature_dim: Optional[int] = None, window_size: int = 64,
                 init_window_factor: float = 0.0, layer_idx: Optional[int] = None):
        super().__init__(base, layer_idx)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        D, H = self.head_dim, self.num_heads
        Fd = D if feature_dim is None else feature_dim
        if Fd < 1:
            raise ValueError(f"feature_dim must be >= 1, got {Fd}")
        ref = self.q_proj.weight
        eye = torch.eye(D, Fd, dtype=ref.dtype, device=ref.device).expand(H, D, Fd)
        self.feature_map_q = nn.Parameter(eye.clone())
        self.feature_map_k = nn.Parameter(eye.clone())
        self.window_factor = nn.Parameter(torch.full((H,), float(init_window_factor), dtype=ref.dtype,
                                                     device=ref.device))
        self.window_size, self.feature_dim = window_size, Fd
        self.attention_transfer = False
        self.transfer_loss: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"feature_dim={self.feature_dim}, window_size={self.window_size}")

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                past_key_values=None, **kwargs):
        self.check_mask(attention_mask)
        q, k, v = self.project(hidden_states)
        q, k = self.rotary(q, k, position_embeddings)
        q, k, v = self.upcast(q, self.repeat_kv(k), self.repeat_kv(v))
        fq = hedgehog_feature_map(q, self.feature_map_q.to(q.dtype))
        fk = hedgehog_feature_map(k, self.feature_map_k.to(q.dtype))
        w, scale, wf = self.window_size, self.scaling, self.window_factor.to(q.dtype)
        if self.attention_transfer:
            with torch.no_grad():
                teacher = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                         is_causal=True, scale=scale).transpose(1, 2)
            student = lolcats_attention(q, k, v, fq, fk, wf, w, scale)
            self.transfer_loss = F.mse_loss(student.float(), teacher.float())
            return self.finish(teacher), None
        if past_key_values is None:
            return self.finish(lolcats_attention(q, k, v, fq, fk, wf, w, scale)), None
        state = get_state(past_key_values, self.layer_idx)
        if state is None:
            o = lolcats_attention(q, k, v, fq, fk, wf, w, scale)
            state = lolcats_prefill_state(k, v, fk, w)
        else:
            o, state = lolcats_decode(q, k, v, fq, fk, self.window_factor, state, w, scale)
        set_state(past_key_values, self.layer_idx, state, q.shape[1])
        return self.finish(o), None
