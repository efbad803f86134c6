"""What the linearized attentions share: they take over a Hugging Face Llama-family attention module (Llama,
Mistral, Qwen2 and the like: q/k/v/o projections, grouped key/value heads, rotary embeddings passed in as
(cos, sin)) and keep its projections as they are, under the same names, so the pretrained weights, LoRA
target names and state-dict keys stay valid."""
from typing import Optional, Tuple

import torch
import torch.nn as nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos, sin [B, T, D] as Llama-family rotary modules return them."""
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    return x * cos + rotate_half(x) * sin


class ConvertedAttention(nn.Module):
    """Adopts `base`'s projections (and Qwen3-style per-head q/k norms when present)."""

    def __init__(self, base: nn.Module, layer_idx: Optional[int] = None):
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not isinstance(getattr(base, name, None), nn.Linear):
                raise TypeError(f"{type(base).__name__} has no nn.Linear {name}; expected a Llama-family attention")
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = base.q_proj, base.k_proj, base.v_proj, base.o_proj
        self.q_norm = getattr(base, "q_norm", None)
        self.k_norm = getattr(base, "k_norm", None)
        config = getattr(base, "config", None)
        self.head_dim = getattr(base, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads = self.q_proj.out_features // self.head_dim
        self.num_kv_heads = self.k_proj.out_features // self.head_dim
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_heads} query heads are not a multiple of {self.num_kv_heads} key heads")
        self.layer_idx = getattr(base, "layer_idx", None) if layer_idx is None else layer_idx
        self.scaling = getattr(base, "scaling", self.head_dim ** -0.5)
        if config is not None:
            self.config = config

    def project(self, hidden_states: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B,T,H,D]; k [B,T,Hkv,D]; v [B,T,Hkv,D], before rotary embeddings."""
        B, T, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return q, k, v

    def repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """[B,T,Hkv,*] -> [B,T,H,*]: query head h uses key head h // (H / Hkv), as grouped-query attention."""
        groups = self.num_heads // self.num_kv_heads
        return x if groups == 1 else x.repeat_interleave(groups, dim=2)

    def rotary(self, q, k, position_embeddings):
        if position_embeddings is None:
            raise ValueError(f"{type(self).__name__} needs position_embeddings=(cos, sin) from the model's rotary "
                             "embedding module")
        cos, sin = position_embeddings
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    @staticmethod
    def upcast(*xs: torch.Tensor):
        """The CPU kernels take float32/float64: half-precision models compute the attention in float32 there."""
        if xs[0].device.type == "cpu" and xs[0].dtype in (torch.float16, torch.bfloat16):
            return tuple(x.float() for x in xs)
        return xs

    def check_mask(self, attention_mask) -> None:
        """Linear attention has no mask: refuse padding that is not at the end of the sequences (left padding),
        since pad tokens would flow into the state. Transformers passes None when there is no padding."""
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4 or attention_mask.numel() == 0:
            return
        if torch.compiler.is_compiling():
            return
        last = attention_mask[:, :, -1, :]
        attend = last if last.dtype == torch.bool else last >= 0
        # Right padding shows as masked keys after the last token: harmless for the tokens before it.
        if bool((~attend[..., :-1] & attend[..., 1:]).any()):
            raise ValueError(f"{type(self).__name__}: the attention mask pads the start of a sequence (left "
                             "padding); linear attention would read the pad tokens. Pass unpadded or right-padded "
                             "inputs (generate one prompt at a time, or prompts of equal length).")

    def finish(self, o: torch.Tensor) -> torch.Tensor:
        return self.o_proj(o.reshape(*o.shape[:2], -1).to(self.o_proj.weight.dtype))
