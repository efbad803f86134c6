"""GLA and simple-GLA token mixers with fla 0.5.2's constructors, parameter names and forward signature, so fla
checkpoints load and fla call sites run unchanged ([B, T, hidden] -> [B, T, hidden])."""
from typing import Optional

import torch
import torch.nn as nn

from ..ops.gla import chunk_gla, chunk_simple_gla, fused_recurrent_gla, fused_recurrent_simple_gla
from .base import FlaTokenMixer, check_mode, heads_multiple, repad
from .modules import GatedRMSNorm, RMSNorm, ShortConvolution, _at_least_fp32, activation, logsigmoid

__all__ = ["GatedLinearAttention", "SimpleGatedLinearAttention", "LightningAttention", "GatedRMSNorm"]


class _GlaFamily(FlaTokenMixer):
    """What GLA and simple GLA share: q/k/v(/g) projections with grouped k/v heads, optional short
    convolutions, optional feature map, and the output norm + gate."""

    def _setup(self, mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, feature_map, use_short_conv,
               conv_size, conv_bias, gate_fn, elementwise_affine, norm_eps, gate_logit_normalizer, fuse_norm,
               layer_idx, modes):
        check_mode(mode, modes)
        self.mode, self.hidden_size, self.expand_k, self.expand_v = mode, hidden_size, expand_k, expand_v
        self.num_heads = num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_kv_heads < 1 or num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.feature_map = feature_map
        self.feature_map_fn = None if feature_map is None else activation(feature_map, "feature_map")
        self.gate_fn_name = gate_fn
        self.gate_fn = activation(gate_fn, "gate_fn")
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        if use_short_conv and conv_size < 1:
            raise ValueError(f"conv_size must be >= 1, got {conv_size}")
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim = heads_multiple(self.key_dim, num_heads, "key_dim = hidden_size * expand_k =")
        self.head_v_dim = heads_multiple(self.value_dim, num_heads, "value_dim = hidden_size * expand_v =")
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.elementwise_affine, self.norm_eps = bool(elementwise_affine), norm_eps
        self.gate_logit_normalizer, self.fuse_norm, self.layer_idx = gate_logit_normalizer, fuse_norm, layer_idx

    def _make_convs(self):
        self.q_conv1d = ShortConvolution(self.key_dim, self.conv_size, self.conv_bias)
        self.k_conv1d = ShortConvolution(self.key_dim_per_group, self.conv_size, self.conv_bias)
        self.v_conv1d = ShortConvolution(self.value_dim_per_group, self.conv_size, self.conv_bias)

    def _make_norm(self, gated: bool):
        """fla fuses norm and swish gate into g_norm_swish_gate; any other gate_fn (or fuse_norm=False) is a plain
        g_norm followed by gate_fn(g) on the flattened heads. The two differ in parameter name only for swish."""
        self.fuse_norm_and_gate = gated and self.gate_fn_name == "swish" and self.fuse_norm
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = GatedRMSNorm(self.head_v_dim, self.norm_eps, self.elementwise_affine)
        else:
            self.g_norm = RMSNorm(self.head_v_dim, self.norm_eps, self.elementwise_affine)

    def _split_heads(self, q, k, v):
        """[.., key_dim], [.., key_dim_per_group], [.., value_dim_per_group] -> [.., H, D] with every kv head
        repeated for the num_kv_groups query heads that share it (query head i reads kv head i // groups)."""
        q = q.unflatten(-1, (self.num_heads, self.head_k_dim))
        k = k.unflatten(-1, (self.num_kv_heads, self.head_k_dim)).repeat_interleave(self.num_kv_groups, -2)
        v = v.unflatten(-1, (self.num_kv_heads, self.head_v_dim)).repeat_interleave(self.num_kv_groups, -2)
        return q, k, v

    def _output(self, o: torch.Tensor, x: torch.Tensor, gated: bool) -> torch.Tensor:
        if not gated:
            return self.o_proj(self.g_norm(o).flatten(-2))
        g = self.g_proj(x)
        if self.fuse_norm_and_gate:
            o = self.g_norm_swish_gate(o, g.unflatten(-1, (self.num_heads, self.head_v_dim))).flatten(-2)
        else:
            o = self.g_norm(o).flatten(-2) * self.gate_fn(g)
        return self.o_proj(o)


class GatedLinearAttention(_GlaFamily):
    """GLA layer (Yang et al. 2023), a drop-in for fla 0.5.2's `fla.layers.GatedLinearAttention`: same keywords
    and defaults, same parameter names and shapes (fla state dicts load), same forward signature and result.

    Math, per token x: q = q_proj x, k = k_proj x, v = v_proj x (each through its causal short convolution +
    SiLU when use_short_conv); k, v (and the key gate) have num_kv_heads heads, each shared by
    num_heads / num_kv_heads query heads; per-key log decay gk = logsigmoid(gk_proj x) / gate_logit_normalizer
    (gk_proj = Linear(hidden, gate_low_rank_dim) then Linear(gate_low_rank_dim, key_dim/groups, bias)),
    clamped below at clamp_min when given; feature_map (an fla activation name) on q and k; then
    S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(head_k_dim) per head (linattn.chunk_gla,
    or fused_recurrent_gla when mode='fused_recurrent' or T <= 64, as fla switches). Output: with
    use_output_gate, RMSNorm(o) * weight * swish(g_proj x) per head (g_norm_swish_gate) when gate_fn='swish'
    and fuse_norm, else RMSNorm(o) (g_norm) times gate_fn(g_proj x); without it, RMSNorm(o) alone; then o_proj.
    mode='fused_chunk' computes the same function with chunk_gla (linattn has no separate fused-chunk kernel).

    forward(hidden_states [B, T, hidden], attention_mask=None, past_key_values=None, use_cache=False,
    output_attentions=False, cu_seqlens=None) -> (o [B, T, hidden], None, past_key_values).
    attention_mask [B, T] or [B, past + T] (1 = token, 0 = padding, anywhere in the row): the padding is
    removed and every row runs as its own sequence (padded outputs are zero, states ignore padding).
    cu_seqlens (B = 1) packs independent sequences. Cache: see FlaTokenMixer / LinearAttentionState
    (StateCache, transformers Cache or dict; created when use_cache=True and none is given).
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 0.5, expand_v: float = 1.0,
                 num_heads: int = 4, num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None,
                 use_short_conv: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 use_output_gate: bool = True, gate_fn: str = "swish", elementwise_affine: Optional[bool] = True,
                 norm_eps: float = 1e-5, gate_logit_normalizer: int = 16, gate_low_rank_dim: int = 16,
                 clamp_min: Optional[float] = None, fuse_norm: bool = True, layer_idx: Optional[int] = None):
        super().__init__()
        self._setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, feature_map, use_short_conv,
                    conv_size, conv_bias, gate_fn, elementwise_affine, norm_eps, gate_logit_normalizer, fuse_norm,
                    layer_idx, ("chunk", "fused_recurrent", "fused_chunk"))
        self.use_output_gate, self.gate_low_rank_dim, self.clamp_min = use_output_gate, gate_low_rank_dim, clamp_min
        # Registration order follows fla so the state dict keys come out in the same order.
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:
            self._make_convs()
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True))
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self._make_norm(use_output_gate)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: Optional[bool] = False, output_attentions: Optional[bool] = False,
                **kwargs):
        B, T, _ = hidden_states.shape
        x, indices, cu_seqlens, past_key_values, state = self._unpadded_inputs(hidden_states, attention_mask,
                                                                               past_key_values, use_cache, kwargs)

        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        conv_states = None
        if self.use_short_conv:
            (q, k, v), conv_states = self._short_convs(q, k, v, state, cu_seqlens)
        gk = logsigmoid(_at_least_fp32(self.gk_proj(x))) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        q, k, v = self._split_heads(q, k, v)
        gk = gk.unflatten(-1, (self.num_kv_heads, self.head_k_dim)).repeat_interleave(self.num_kv_groups, -2)

        h0 = None if state is None else state.recurrent
        if T <= 64 or self.mode == "fused_recurrent":
            o, ht = fused_recurrent_gla(q, k, v, gk=gk, initial_state=h0, output_final_state=bool(use_cache),
                                        cu_seqlens=cu_seqlens)
        else:
            o, ht = chunk_gla(q, k, v, g=gk, initial_state=h0, output_final_state=bool(use_cache),
                              cu_seqlens=cu_seqlens)
        if use_cache:
            self._write_state(past_key_values, ht, conv_states, T)

        o = self._output(o, x, self.use_output_gate)
        if indices is not None:
            o = repad(o, indices, B, T)
        return o, None, past_key_values


class SimpleGatedLinearAttention(_GlaFamily):
    """Simple GLA layer (one decay per head and step), a drop-in for fla 0.5.2's
    `fla.layers.SimpleGatedLinearAttention`: same keywords and defaults, parameter names and shapes, forward
    signature and result.

    Math: q, k, v projections (k, v with num_kv_heads heads, repeated for the query heads sharing them), each
    through its short convolution + SiLU when use_short_conv (default True); feature_map on q and k; per-head log
    decay g = logsigmoid(gk_proj x) / gate_logit_normalizer (gk_proj = Linear(hidden, num_heads, bias));
    S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(head_k_dim) (linattn.chunk_simple_gla, or
    fused_recurrent_simple_gla when mode='fused_recurrent' or T <= 64); output RMSNorm(o) * weight * swish(g_proj x)
    (g_norm_swish_gate) when gate_fn='swish' and fuse_norm, else RMSNorm(o) (g_norm) times gate_fn(g_proj x);
    then o_proj.

    attention_mask [B, T] or [B, past + T] is applied as fla applies it, without removing the padding: the
    projections are zeroed at padded positions before the convolutions, and v is zeroed there, so padded tokens
    add nothing to the state but their gates still decay it (left padding is exact; with right padding the
    cached state has decayed over the padding, as in fla). With use_short_conv, attention_mask and cu_seqlens
    cannot be combined (fla refuses it too). Returns (o [B, T, hidden], None, past_key_values).
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 1.0, expand_v: float = 1.0,
                 num_heads: int = 4, num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None,
                 use_short_conv: bool = True, conv_size: int = 4, conv_bias: bool = False, gate_fn: str = "swish",
                 elementwise_affine: Optional[bool] = True, norm_eps: float = 1e-5, gate_logit_normalizer: int = 16,
                 fuse_norm: bool = True, layer_idx: Optional[int] = None):
        super().__init__()
        self._setup(mode, hidden_size, expand_k, expand_v, num_heads, num_kv_heads, feature_map, use_short_conv,
                    conv_size, conv_bias, gate_fn, elementwise_affine, norm_eps, gate_logit_normalizer, fuse_norm,
                    layer_idx, ("chunk", "fused_recurrent"))
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:
            self._make_convs()
        self.gk_proj = nn.Linear(hidden_size, num_heads)
        self._make_norm(True)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def state_size(self, **kwargs) -> int:
        """Numbers of state per sequence, counted as fla counts them: key_dim * head_v_dim for the recurrent state
        plus channels * kernel size per short convolution."""
        convs = [m for m in self.children() if isinstance(m, ShortConvolution)]
        return self.key_dim * self.head_v_dim + sum(c.in_channels * c.kernel_size[0] for c in convs)

    def _decay(self, x: torch.Tensor):
        """(per-step log gate [.., H] or None, constant per-head log decay [H] or None)."""
        return logsigmoid(_at_least_fp32(self.gk_proj(x))) / self.gate_logit_normalizer, None

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: Optional[bool] = False, output_attentions: Optional[bool] = False,
                **kwargs):
        cu_seqlens = self._check_inputs(hidden_states, attention_mask, kwargs)
        B, T, _ = hidden_states.shape
        x = hidden_states
        mask = None if attention_mask is None else attention_mask[:, -T:].to(x.device)
        num_seqs = B if cu_seqlens is None else cu_seqlens.numel() - 1
        past_key_values, state = self._read_state(past_key_values, bool(use_cache), num_seqs)

        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        conv_states = None
        if self.use_short_conv:
            if mask is not None:
                if cu_seqlens is not None:
                    raise ValueError("attention_mask and cu_seqlens cannot be combined when use_short_conv=True")
                q, k, v = (t * mask.unsqueeze(-1).to(t.dtype) for t in (q, k, v))
            (q, k, v), conv_states = self._short_convs(q, k, v, state, cu_seqlens)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        if mask is not None:
            v = v * mask.unsqueeze(-1).to(v.dtype)
        q, k, v = self._split_heads(q, k, v)
        g, g_gamma = self._decay(x)

        h0 = None if state is None else state.recurrent
        fn = fused_recurrent_simple_gla if T <= 64 or self.mode == "fused_recurrent" else chunk_simple_gla
        o, ht = fn(q, k, v, g=g, g_gamma=g_gamma, initial_state=h0, output_final_state=bool(use_cache),
                   cu_seqlens=cu_seqlens)
        if use_cache:
            self._write_state(past_key_values, ht, conv_states, T)
        return self._output(o, x, True), None, past_key_values


class LightningAttention(SimpleGatedLinearAttention):
    """linattn's own variant (fla has no layer of this name): SimpleGatedLinearAttention with a constant per-head
    decay instead of the learned gate, so there is no gk_proj. With num_layers (and layer_idx) the decay is
    lightning attention's, g_gamma[h] = -8 h / H * (1 - layer_idx / num_layers) (fla's chunk_lightning_attn);
    without, RetNet's log(1 - 2^(-5 - h)). Every other keyword is SimpleGatedLinearAttention's."""

    def __init__(self, *args, num_layers: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        del self.gk_proj
        H = self.num_heads
        heads = torch.arange(H, dtype=torch.float64)
        if num_layers is None:
            gamma = torch.log1p(-torch.exp2(-5.0 - heads))
        else:
            if self.layer_idx is None or num_layers < 1 or not 0 <= self.layer_idx <= num_layers:
                raise ValueError(f"lightning decay needs 0 <= layer_idx <= num_layers with num_layers >= 1, got "
                                 f"layer_idx={self.layer_idx}, num_layers={num_layers}")
            gamma = -8.0 / H * (1.0 - self.layer_idx / num_layers) * heads
        self.num_layers = num_layers
        self.register_buffer("g_gamma", gamma.float(), persistent=False)

    def _decay(self, x: torch.Tensor):
        return None, self.g_gamma.to(_at_least_fp32(x).dtype)
