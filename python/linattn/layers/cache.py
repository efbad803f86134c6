"""Where the linearized attention layers keep their decoding state between calls.

Three kinds of cache are accepted as `past_key_values`:

* `StateCache` (this module), for callers driving the layers themselves;
* a plain dict {layer_idx: state} (the fla-style layers and MomAttention; `read_layer_state` /
  `write_layer_state`);
* a Hugging Face `transformers` Cache (what `generate` creates): the layer's slot in `cache.layers` is replaced
  by a `DynamicLayer` subclass that holds the linattn state instead of the full keys and values and reports
  the number of tokens seen, so position ids, masks and `get_seq_length` keep working. The window and the
  linear state have constant size, which is the point of linearizing.

A state is a NamedTuple of tensors with the batch first (LolcatsState, LigerState), so beam search reorders
it with one index_select per field.
"""
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch


class LinearAttentionState(NamedTuple):
    """Decoding state of one GatedLinearAttention / SimpleGatedLinearAttention / DeltaNet / GatedDeltaNet layer,
    batch (sequence) first so caches can reorder beams on dim 0.

    recurrent [N, H, K, V]: linattn's layout (fla keeps [N, H, V, K]; the caches are not interchangeable), float32
    (float64 for float64 inputs). conv_q / conv_k / conv_v [N, C, W-1]: the last W-1 projections seen before each
    short convolution, oldest first, in the activations' dtype; width 0 when the layer has no convolutions.
    """
    recurrent: torch.Tensor
    conv_q: torch.Tensor
    conv_k: torch.Tensor
    conv_v: torch.Tensor


class StateCache:
    """{layer_idx: (state, tokens seen)} for layers used outside Hugging Face generation."""

    def __init__(self):
        self.states: Dict[int, Tuple[Any, int]] = {}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.states[layer_idx][1] if layer_idx in self.states else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.states = {i: (_select(s, beam_idx), n) for i, (s, n) in self.states.items()}


def _select(state, index: torch.Tensor):
    return type(state)(*(t.index_select(0, index.to(t.device)) for t in state))


_HF_LAYER_CLASS = None


def _hf_state_layer_class():
    """Built on first use so that transformers stays an optional dependency."""
    global _HF_LAYER_CLASS
    if _HF_LAYER_CLASS is None:
        from transformers.cache_utils import DynamicLayer

        class LinattnStateLayer(DynamicLayer):
            """A cache layer holding a linattn decoding state; behaves as a DynamicLayer until one is stored,
            so a softmax layer of a partly converted model can share the same slot class."""

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.linattn_state = None
                self.linattn_seen = 0

            def get_seq_length(self, *args, **kwargs) -> int:
                if self.linattn_state is not None:
                    return self.linattn_seen
                return super().get_seq_length(*args, **kwargs)

            def reset(self) -> None:
                self.linattn_state, self.linattn_seen = None, 0
                super().reset()

            def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
                if self.linattn_state is not None:
                    self.linattn_state = _select(self.linattn_state, beam_idx)
                else:
                    super().reorder_cache(beam_idx)

            def batch_repeat_interleave(self, repeats: int) -> None:
                if self.linattn_state is not None:
                    self.linattn_state = type(self.linattn_state)(
                        *(t.repeat_interleave(repeats, dim=0) for t in self.linattn_state))
                else:
                    super().batch_repeat_interleave(repeats)

            def batch_select_indices(self, indices: torch.Tensor) -> None:
                if self.linattn_state is not None:
                    self.linattn_state = type(self.linattn_state)(*(t[indices, ...] for t in self.linattn_state))
                else:
                    super().batch_select_indices(indices)

            def crop(self, tokens_to_remove: int) -> None:
                if self.linattn_state is not None:
                    raise NotImplementedError("a linear-attention state cannot be cropped (it does not keep the "
                                              "past tokens); assisted decoding is not supported")
                super().crop(tokens_to_remove)

        _HF_LAYER_CLASS = LinattnStateLayer
    return _HF_LAYER_CLASS


def _hf_slot(cache, layer_idx: int):
    cls = _hf_state_layer_class()
    while len(cache.layers) <= layer_idx:
        cache.layers.append(cls())
    slot = cache.layers[layer_idx]
    if not isinstance(slot, cls):
        if slot.get_seq_length() > 0:
            raise RuntimeError(f"cache layer {layer_idx} already holds softmax keys/values; a linearized layer "
                               "cannot continue from them")
        slot = cache.layers[layer_idx] = cls()
    return slot


def get_state(cache, layer_idx: int) -> Optional[Any]:
    """The layer's decoding state, or None before its first call with this cache."""
    if isinstance(cache, StateCache):
        return cache.states.get(layer_idx, (None, 0))[0]
    if hasattr(cache, "layers"):
        return _hf_slot(cache, layer_idx).linattn_state
    raise TypeError(f"past_key_values must be a linattn StateCache or a transformers Cache, got {type(cache)}")


def set_state(cache, layer_idx: int, state, new_tokens: int) -> None:
    if isinstance(cache, StateCache):
        cache.states[layer_idx] = (state, cache.get_seq_length(layer_idx) + new_tokens)
        return
    slot = _hf_slot(cache, layer_idx)
    slot.linattn_state = state
    slot.linattn_seen += new_tokens


def _cache_key(layer_idx: Optional[int]) -> int:
    # A layer built without layer_idx (fla's default None) uses slot 0, as a single layer driven alone would.
    return 0 if layer_idx is None else layer_idx


def read_layer_state(cache, layer_idx: Optional[int]):
    """The state stored for layer_idx in a StateCache, transformers Cache or dict; None when there is none yet."""
    if cache is None:
        return None
    if isinstance(cache, dict):
        return cache.get(_cache_key(layer_idx))
    return get_state(cache, _cache_key(layer_idx))


def write_layer_state(cache, layer_idx: Optional[int], state, new_tokens: int) -> None:
    if isinstance(cache, dict):
        cache[_cache_key(layer_idx)] = state
    else:
        set_state(cache, _cache_key(layer_idx), state, new_tokens)
