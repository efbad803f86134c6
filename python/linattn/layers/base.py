"""Forward plumbing shared by the fla-compatible token mixers (GatedLinearAttention, SimpleGatedLinearAttention,
DeltaNet, GatedDeltaNet): argument checks, padding masks turned into packed sequences and back, the generation
cache, and the three short convolutions run with their cached states."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from .cache import LinearAttentionState, StateCache, read_layer_state, write_layer_state

MODES = ("chunk", "fused_recurrent")


def check_mode(mode: str, allowed=MODES) -> None:
    if mode not in allowed:
        raise ValueError(f"mode must be one of {list(allowed)}, got {mode!r}")


def heads_multiple(value: int, num_heads: int, what: str) -> int:
    if value % num_heads:
        raise ValueError(f"{what} {value} must be divisible by num_heads {num_heads}")
    return value // num_heads


def unpad(x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, T, C], mask [B, T] (nonzero = token) -> (the tokens packed row after row [1, R, C], their flat
    indices [R], cu_seqlens [B+1]): each batch row becomes one sequence of its real tokens, at any positions."""
    keep = mask != 0
    indices = keep.reshape(-1).nonzero().squeeze(1)
    cu_seqlens = torch.cat([keep.new_zeros(1, dtype=torch.long), keep.sum(-1).cumsum(0)])
    return x.reshape(-1, x.shape[-1]).index_select(0, indices).unsqueeze(0), indices, cu_seqlens


def repad(o: torch.Tensor, indices: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Inverse of unpad: [1, R, C] -> [B, T, C] with zeros at the padded positions."""
    out = o.new_zeros(B * T, o.shape[-1]).index_copy(0, indices, o[0])
    return out.view(B, T, -1)


class FlaTokenMixer(nn.Module):
    """Base of the fla-compatible layers. Subclasses set hidden_size, layer_idx, use_short_conv (and q_conv1d,
    k_conv1d, v_conv1d when it is True)."""

    def _check_inputs(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      kwargs: dict) -> Optional[torch.Tensor]:
        """Validates the forward arguments; returns cu_seqlens (int64, on the input's device) or None."""
        if "state" in kwargs:
            # linattn's earlier layers took `state=`; fla's signature would silently ignore it.
            raise TypeError(f"{type(self).__name__}.forward takes the decoding state through past_key_values "
                            "(a StateCache, transformers Cache or dict filled by a call with use_cache=True), "
                            "not state=")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden_states must be [B, T, hidden_size={self.hidden_size}], got "
                             f"{tuple(hidden_states.shape)}")
        B, T, _ = hidden_states.shape
        if attention_mask is not None and (attention_mask.dim() != 2 or attention_mask.shape[0] != B
                                           or attention_mask.shape[1] < T):
            raise ValueError("attention_mask must be a 0/1 padding mask [B, seq_len >= T] (0 = padding; the last T "
                             f"columns belong to hidden_states), got {tuple(attention_mask.shape)} for B={B}, T={T}; "
                             "arbitrary [B, T, T] attention masks are not supported")
        cu_seqlens = kwargs.get("cu_seqlens")
        if cu_seqlens is not None:
            if B != 1:
                raise ValueError(f"with cu_seqlens the batch size must be 1 (sequences packed along T), got B={B}")
            if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
                raise ValueError(f"cu_seqlens must be a 1-D tensor [N+1] of offsets, got {tuple(cu_seqlens.shape)}")
            # Host data costs nothing to check here; device data (and, under torch.compile, where reading values
            # would break the graph, host data too) is checked by the op itself.
            if cu_seqlens.device.type == "cpu" and not torch.compiler.is_compiling():
                cu = cu_seqlens.tolist()
                if cu[0] != 0 or cu[-1] != T or any(b < a for a, b in zip(cu, cu[1:])):
                    raise ValueError(f"cu_seqlens must start at 0, never decrease and end at T={T}, got {cu}")
            cu_seqlens = cu_seqlens.to(hidden_states.device, torch.long)
        return cu_seqlens

    def _unpadded_inputs(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor],
                         past_key_values, use_cache: bool, kwargs: dict):
        """The prologue of the layers that drop padded tokens: checks, unpadding (a mask becomes packed sequences)
        and the cache read -> (x, indices for repad or None, cu_seqlens or None, cache to return, cached state)."""
        cu_seqlens = self._check_inputs(hidden_states, attention_mask, kwargs)
        if cu_seqlens is not None and attention_mask is not None:
            raise ValueError("pass either cu_seqlens or attention_mask, not both")
        B, T, _ = hidden_states.shape
        x, indices = hidden_states, None
        if attention_mask is not None:
            x, indices, cu_seqlens = unpad(hidden_states, attention_mask[:, -T:])
        num_seqs = B if cu_seqlens is None else cu_seqlens.numel() - 1
        past_key_values, state = self._read_state(past_key_values, bool(use_cache), num_seqs)
        return x, indices, cu_seqlens, past_key_values, state

    def _read_state(self, past_key_values, use_cache: bool, num_seqs: int):
        """(cache to return, cached LinearAttentionState or None). use_cache without a cache starts a StateCache."""
        if use_cache and past_key_values is None:
            past_key_values = StateCache()
        state = read_layer_state(past_key_values, self.layer_idx)
        if state is not None:
            if not isinstance(state, LinearAttentionState):
                raise TypeError(f"the cache slot of layer {self.layer_idx} holds a {type(state).__name__}, not the "
                                f"LinearAttentionState a {type(self).__name__} writes")
            if state.recurrent.shape[0] != num_seqs:
                raise ValueError(f"the cached state holds {state.recurrent.shape[0]} sequences but this call has "
                                 f"{num_seqs}")
        return past_key_values, state

    def _write_state(self, past_key_values, recurrent: torch.Tensor, conv: Optional[List[torch.Tensor]],
                     new_tokens: int) -> None:
        if conv is None:  # no convolutions: zero-width conv states keep the NamedTuple all tensors
            conv = [recurrent.new_zeros(recurrent.shape[0], 0, 0)] * 3
        write_layer_state(past_key_values, self.layer_idx, LinearAttentionState(recurrent, *conv), new_tokens)

    def _short_convs(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     state: Optional[LinearAttentionState], cu_seqlens: Optional[torch.Tensor]):
        """q, k, v projections [B, T, C] through q_conv1d / k_conv1d / v_conv1d, each sequence (batch row, or
        cu_seqlens span) from its cached conv state or zeros -> ((q, k, v), [final conv states])."""
        B, T = q.shape[:2]
        cu = cu_seqlens if cu_seqlens is not None else torch.arange(B + 1, device=q.device) * T
        outs, finals = [], []
        for name, x in zip("qkv", (q, k, v)):
            init = None if state is None else getattr(state, "conv_" + name)
            y, final = getattr(self, f"{name}_conv1d").packed(x.reshape(B * T, -1), cu, init)
            outs.append(y.view(B, T, -1))
            finals.append(final)
        return outs, finals
