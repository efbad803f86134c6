"""Mixture-of-memories (MoM) token mixer with the parameter names of fla's `MomAttention`.

Each token is routed to `topk` of `num_memories` memories (gated DeltaNet states); every memory runs over the
tokens routed to it, in token order, as one packed varlen batch, and the outputs are mixed with the routing
weights. An optional shared memory sees every token with weight 1.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
from ..ops.mom import mom_combine, mom_dispatch, mom_grouped_linear, mom_route
from .cache import StateCache, read_layer_state, write_layer_state
from .modules import GatedRMSNorm, RMSNorm, ShortConvolution, _at_least_fp32


_MAX_VIRTUAL_MEMORIES = 512  # mom_dispatch's CUDA limit on num_memories (ops/mom/cuda/mom_launch.h)


class MomState(NamedTuple):
    """Decoding state of one MomAttention layer, batch first (so caches can reorder beams on dim 0).

    recurrent [B, E, H, K, V] and conv_q/conv_k [B, E, key_dim, W-1], conv_v [B, E, value_dim, W-1] belong to
    the routed memories; the shared_* fields have the same layout with a memory axis of size 1 (size 0 when
    shared_mem=False). A conv state holds the last W-1 projections (before the convolution) seen by that
    memory, oldest first, zero where the memory has seen fewer tokens; W-1 is 0 when use_short_conv=False.
    Recurrent states are float32 (float64 for float64 inputs); conv states have the activations' dtype.
    """
    recurrent: torch.Tensor
    conv_q: torch.Tensor
    conv_k: torch.Tensor
    conv_v: torch.Tensor
    shared_recurrent: torch.Tensor
    shared_conv_q: torch.Tensor
    shared_conv_k: torch.Tensor
    shared_conv_v: torch.Tensor


def load_balancing_loss(router_logits: Union[torch.Tensor, Sequence[torch.Tensor]], num_memories: int,
                        topk: int, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mixtral/Switch load-balancing loss E * sum_e f_e * P_e over the tokens of all given layers.

    router_logits: [N, E] (what MomAttention returns) or a tuple of them, one per layer. f_e is the fraction of
    tokens that have e among their top-k (so sum_e f_e = topk), P_e the mean router probability of e (fp32
    softmax). The top-k is mom_route's, i.e. the selection the layer used. attention_mask [B, T] (0 = padding)
    drops padded tokens when each layer's logits have B*T rows."""
    if isinstance(router_logits, torch.Tensor):
        router_logits = (router_logits,)
    logits = torch.cat([t.reshape(-1, num_memories) for t in router_logits], 0)
    probs = torch.softmax(_at_least_fp32(logits), -1)
    _, idx = mom_route(logits.unsqueeze(0), topk)
    chosen = torch.zeros_like(probs).scatter_(-1, idx[0], 1.0)
    if attention_mask is None:
        f, p = chosen.mean(0), probs.mean(0)
    else:
        valid = attention_mask.reshape(-1).to(probs.dtype).repeat(len(router_logits))[:, None]
        f, p = (chosen * valid).sum(0) / valid.sum(), (probs * valid).sum(0) / valid.sum()
    return num_memories * (f * p).sum()


class MomAttention(nn.Module):
    """Mixture-of-memories layer (MoM, arXiv 2502.13685) with fla's parameter names, so fla state dicts load.

    Routing: p = softmax(gate(x)) in fp32, top-k with ties to the lower index, weights renormalised over the k
    (linattn.mom_route). Every (token, chosen memory) copy goes to that memory's sequence in token order
    (linattn.mom_dispatch). Memory e projects its rows with its own k_proj[e], v_proj[e], b_proj[e], a_proj[e]
    (or the single shared_k/v/b/a for every memory when single_kv_proj=True); q_proj, A_log, dt_bias and the
    three convolutions are one set shared by all memories, as in fla. Per memory: beta = sigmoid(b),
    g = -exp(A_log) * softplus(a + dt_bias) (fp32), gated DeltaNet with q, k L2-normalised in the kernel.
    Outputs are mixed with the routing weights (linattn.mom_combine); with shared_mem=True a shared memory
    (projections shared_k/v/b/a) runs over all tokens and is added with weight 1. Then o_norm (RMSNorm gated by
    swish(g_proj(x)) when use_output_gate, plain RMSNorm otherwise) per head and o_proj.

    Convolutions: q, k and v go through q_conv1d/k_conv1d/v_conv1d (causal depthwise, SiLU) over each
    memory's own token sequence, after the projections: q's conv weights are shared but its input and state
    are per memory (a token's q differs between the memories it visits, as in fla). Each memory sequence (and
    each batch row) starts from its cached conv state, zeros without cache: no leakage across memories. fla
    convolves the packed rows without boundaries while training; here they never mix. The shared memory's
    convolutions run over the whole token sequence. use_short_conv=False applies SiLU without convolution.

    forward(hidden_states [B, T, hidden], attention_mask=None, past_key_values=None, use_cache=False,
    cu_seqlens=None) returns fla's 4-tuple (o [B, T, hidden], None, past_key_values, router_logits [B*T, E]).
    The auxiliary loss is `layer.load_balancing_loss(router_logits, attention_mask)` (Mixtral form, see
    `load_balancing_loss`), computed by the caller as fla's model does. attention_mask [B, T] or
    [B, past + T] (1 = token, 0 = padding, any position): padded tokens enter no memory and do not change any
    state. cu_seqlens (B = 1) packs independent sequences; router_logits then has one row per real token. Packed
    sequences are routed without padding (memory e's varlen sequences are its (e, sequence) pairs) while
    (E + shared) * N <= 512, else padded into rows (one host read).

    Cache: `past_key_values` is a linattn StateCache, a transformers Cache, or a plain dict {layer_idx: MomState}
    (layer_idx None counts as 0). The layer reads its MomState when the cache holds one and, with
    use_cache=True, writes the new one (a StateCache is created when use_cache=True and none is given). At
    decoding only the memories a token selects change; the others keep bit-identical states.

    capacity is accepted and stored for fla compatibility and, as in fla, not used (no token is dropped).
    The per-memory projections run as one `mom_grouped_linear` per projection (an opaque op: torch.compile
    traces the layer with fullgraph=True; the op reads the memories' row offsets on the host once per call).
    Recurrent states are [B, E, H, K, V] here, whereas fla keeps [.., V, K]; the caches are not interchangeable.
    """

    def __init__(self, hidden_size: int = 2048, head_dim: int = 256, num_heads: int = 4, expand_v: float = 2,
                 mode: str = "chunk", use_output_gate: bool = True, use_short_conv: bool = True, conv_size: int = 4,
                 conv_bias: bool = False, layer_idx: Optional[int] = None, norm_eps: float = 1e-5,
                 num_memories: int = 8, topk: int = 2, capacity: float = 1.0, shared_mem: bool = False,
                 single_kv_proj: bool = False, **kwargs):
        super().__init__()
        if mode not in ("chunk", "fused_recurrent"):
            raise ValueError(f"mode must be 'chunk' or 'fused_recurrent', got {mode!r}")
        if num_memories < 1:
            raise ValueError(f"num_memories must be >= 1, got {num_memories}")
        if not 1 <= topk <= num_memories:
            raise ValueError(f"topk must be in [1, num_memories={num_memories}], got {topk}")
        if use_short_conv and conv_size < 1:
            raise ValueError(f"conv_size must be >= 1, got {conv_size}")
        self.hidden_size, self.head_dim, self.num_heads, self.expand_v = hidden_size, head_dim, num_heads, expand_v
        self.mode, self.use_output_gate, self.use_short_conv = mode, use_output_gate, use_short_conv
        self.conv_size, self.conv_bias, self.layer_idx, self.norm_eps = conv_size, conv_bias, layer_idx, norm_eps
        self.num_memories, self.topk, self.capacity = num_memories, topk, capacity
        self.shared_mem, self.single_kv_proj = shared_mem, single_kv_proj
        self.key_dim = num_heads * head_dim
        self.head_v_dim = int(head_dim * expand_v)
        self.value_dim = num_heads * self.head_v_dim

        # Registration order follows fla so the state dict keys come out in the same order.
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.gate = nn.Linear(hidden_size, num_memories, bias=False)
        if not single_kv_proj:
            def per_memory(out):
                return nn.ModuleList(nn.Linear(hidden_size, out, bias=False) for _ in range(num_memories))
            self.k_proj, self.v_proj = per_memory(self.key_dim), per_memory(self.value_dim)
            self.b_proj, self.a_proj = per_memory(num_heads), per_memory(num_heads)
        if single_kv_proj or shared_mem:
            self.shared_k = nn.Linear(hidden_size, self.key_dim, bias=False)
            self.shared_v = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.shared_b = nn.Linear(hidden_size, num_heads, bias=False)
            self.shared_a = nn.Linear(hidden_size, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1, 16)))
        dt = torch.exp(torch.rand(num_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, conv_bias)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, conv_bias)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, conv_bias)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
            self.o_norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=2 ** -2.5)

    def extra_repr(self) -> str:
        return (f"num_memories={self.num_memories}, topk={self.topk}, shared_mem={self.shared_mem}, "
                f"heads={self.num_heads}, head_dim={self.head_dim}, head_v_dim={self.head_v_dim}")

    def load_balancing_loss(self, router_logits, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return load_balancing_loss(router_logits, self.num_memories, self.topk, attention_mask)

    # ------------------------------------------------------------------------------------------------------------
    def _kvba_packed(self, xs: torch.Tensor, offsets: torch.Tensor):
        """Pre-activation k, v and the beta / decay logits of every packed row, each row with the projections of
        its memory (rows offsets[e] .. offsets[e+1]; the shared memory is the last); padding-slot rows get 0."""
        if self.single_kv_proj:  # one projection for every memory: a plain matmul over all rows
            return self.shared_k(xs), self.shared_v(xs), self.shared_b(xs), self.shared_a(xs)
        shared = (self.shared_k, self.shared_v, self.shared_b, self.shared_a) if self.shared_mem else (None,) * 4
        routed = (self.k_proj, self.v_proj, self.b_proj, self.a_proj)
        return tuple(mom_grouped_linear(xs, [m.weight for m in mods] + ([one.weight] if one is not None else []),
                                        offsets) for mods, one in zip(routed, shared))

    def _empty_state(self, B: int, x: torch.Tensor) -> MomState:
        S, W1 = int(self.shared_mem), (self.conv_size - 1 if self.use_short_conv else 0)
        sdtype = _at_least_fp32(x).dtype
        H, K, V = self.num_heads, self.head_dim, self.head_v_dim

        def z(*shape, dtype=x.dtype):
            return torch.zeros(*shape, dtype=dtype, device=x.device)
        return MomState(z(B, self.num_memories, H, K, V, dtype=sdtype), z(B, self.num_memories, self.key_dim, W1),
                        z(B, self.num_memories, self.key_dim, W1), z(B, self.num_memories, self.value_dim, W1),
                        z(B, S, H, K, V, dtype=sdtype), z(B, S, self.key_dim, W1), z(B, S, self.key_dim, W1),
                        z(B, S, self.value_dim, W1))

    def _read_cache(self, cache):
        return read_layer_state(cache, self.layer_idx)

    def _write_cache(self, cache, state: MomState, new_tokens: int):
        write_layer_state(cache, self.layer_idx, state, new_tokens)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: Optional[bool] = False, output_attentions: Optional[bool] = False,
                **kwargs):
        cu_seqlens = kwargs.get("cu_seqlens")
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(f"hidden_states must be [B, T, {self.hidden_size}], got {tuple(hidden_states.shape)}")
        if cu_seqlens is not None:
            return self._forward_varlen(hidden_states, cu_seqlens, attention_mask, past_key_values, use_cache)
        B, T, _ = hidden_states.shape
        valid = None
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] < T:
                raise ValueError(f"attention_mask must be a 0/1 padding mask [B={B}, >= T={T}], got "
                                 f"{tuple(attention_mask.shape)}")
            valid = attention_mask[:, -T:].to(hidden_states.device) == 1
        if use_cache and past_key_values is None:
            past_key_values = StateCache()
        state = self._read_cache(past_key_values)
        o, router_logits, new_state = self._mix(hidden_states, valid, state, bool(use_cache))
        if use_cache:
            self._write_cache(past_key_values, new_state, T)
        return o, None, past_key_values, router_logits.reshape(-1, self.num_memories)

    def _forward_varlen(self, x, cu_seqlens, attention_mask, past_key_values, use_cache):
        if x.shape[0] != 1:
            raise ValueError(f"with cu_seqlens the batch size must be 1, got {x.shape[0]}")
        if attention_mask is not None:
            raise ValueError("pass either cu_seqlens or attention_mask, not both")
        cu = cu_seqlens.to(x.device, torch.long)
        lengths = cu.diff()
        N, T = lengths.numel(), x.shape[1]
        if use_cache and past_key_values is None:
            past_key_values = StateCache()
        state = self._read_cache(past_key_values)
        slots = self.num_memories + int(self.shared_mem)
        if slots * N > _MAX_VIRTUAL_MEMORIES:
            # Too many (memory, sequence) pairs for the CUDA dispatch: sequences become rows of a right-padded
            # batch instead (exact: padded tokens enter no memory), at the price of one host read for the length
            # (and a graph break under torch.compile). Same on every device, so CPU tests cover it.
            L = int(lengths.max())
            mask = torch.arange(L, device=x.device)[None, :] < lengths[:, None]
            padded = x.new_zeros(N, L, x.shape[-1]).masked_scatter(mask[..., None], x[0])
            o, router_logits, new_state = self._mix(padded, mask, state, bool(use_cache))
            o, router_logits = o[mask].unsqueeze(0), router_logits[mask]
        else:
            seq_of_token = torch.repeat_interleave(torch.arange(N, device=x.device), lengths, output_size=T)
            o, router_logits, new_state = self._mix(x, None, state, bool(use_cache), (N, seq_of_token))
            router_logits = router_logits.reshape(-1, self.num_memories)
        if use_cache:
            self._write_cache(past_key_values, new_state, T)
        return o, None, past_key_values, router_logits

    def _mix(self, x: torch.Tensor, valid: Optional[torch.Tensor], state: Optional[MomState], use_cache: bool,
             packed: Optional[Tuple[int, torch.Tensor]] = None):
        """packed = (N, sequence of each token [T]) for N sequences packed in one row (B = 1): the memories' varlen
        sequences are then (memory, packed sequence) pairs instead of (memory, batch row)."""
        B, T, _ = x.shape
        nb = B if packed is None else packed[0]  # states per memory: batch rows or packed sequences
        E, S, H = self.num_memories, int(self.shared_mem), self.num_heads
        router_logits = self.gate(x)
        weights, idx = mom_route(router_logits, self.topk)
        # Slot E is the shared memory (weight 1, not renormalised); padded tokens send every copy to one more slot,
        # whose sequences run from zero states and whose results are dropped, so padded tokens reach no memory,
        # change no state and get weight 0.
        if S:
            idx = torch.cat([idx, idx.new_full((B, T, 1), E)], -1)
            weights = torch.cat([weights, weights.new_ones(B, T, 1)], -1)
        slots = E + S
        if valid is not None:
            idx = torch.where(valid[..., None], idx, slots)
            weights = weights * valid[..., None].to(weights.dtype)
            slots += 1
        if packed is not None:  # virtual memory e*N + n: memory e, packed sequence n (dispatch with B = 1)
            idx, slots = idx * nb + packed[1].view(1, T, 1), slots * nb
        xs, cu, sort_index = mom_dispatch(x, idx, slots)
        n_seq = (E + S) * nb  # sequence e*nb + b: batch row (or packed sequence) b in memory e
        pad_seq = cu.numel() - 1 - n_seq  # the padding slot's sequences, when there is a padding mask
        q = self.q_proj(xs)
        k, v, b_logit, a_logit = self._kvba_packed(xs, cu[:n_seq + 1:nb])

        old = state if state is not None else (self._empty_state(nb, x) if use_cache else None)

        def by_sequence(mem, shared):
            # [nb, E, ...] and [nb, S, ...] -> [slots*nb, ...], memory-major like the packing; the padding slot's
            # sequences start from zeros (their k and v rows are zero as well; their results are dropped).
            both = torch.cat([mem, shared], 1)
            seqs = both.transpose(0, 1).reshape(n_seq, *both.shape[2:])
            return torch.cat([seqs, seqs.new_zeros(pad_seq, *seqs.shape[1:])]) if pad_seq else seqs

        conv_names = ("q", "k", "v")
        conv_init = {n: None if old is None else by_sequence(getattr(old, "conv_" + n),
                                                             getattr(old, "shared_conv_" + n)) for n in conv_names}
        conv_final = {}
        if self.use_short_conv:
            (q, conv_final["q"]), (k, conv_final["k"]), (v, conv_final["v"]) = (
                getattr(self, f"{n}_conv1d").packed(t, cu, conv_init[n]) for n, t in zip(conv_names, (q, k, v)))
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)

        beta = torch.sigmoid(_at_least_fp32(b_logit))
        a = _at_least_fp32(a_logit) + self.dt_bias.to(beta.dtype)
        g = -self.A_log.to(beta.dtype).exp() * F.softplus(a)
        R = q.shape[0]
        q, k = q.view(1, R, H, self.head_dim), k.view(1, R, H, self.head_dim)
        v = v.view(1, R, H, self.head_v_dim)
        recurrent = self.mode == "fused_recurrent" or (not self.training and T <= 64)
        fn = fused_recurrent_gated_delta_rule if recurrent else chunk_gated_delta_rule
        h0 = None if old is None else by_sequence(old.recurrent, old.shared_recurrent)
        o, h = fn(q, k, v, g.to(q.dtype).unsqueeze(0), beta.to(q.dtype).unsqueeze(0), initial_state=h0,
                  output_final_state=use_cache, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
        o = mom_combine(o.reshape(R, self.value_dim), weights, idx, sort_index, slots).view(B, T, H, self.head_v_dim)

        new_state = None
        if use_cache:
            # Kernels are expected to return the initial state of an empty sequence unchanged; the select makes
            # "unselected memories keep their state bit for bit" independent of that.
            touched = cu[:n_seq + 1].diff() > 0

            def by_memory(t):  # inverse of by_sequence, before the split into routed and shared
                return t[:n_seq].view(E + S, nb, *t.shape[1:]).transpose(0, 1)

            def keep(new, prev):
                new, prev = new[:n_seq], prev[:n_seq]
                return by_memory(torch.where(touched.view(-1, *([1] * (new.dim() - 1))), new, prev.to(new.dtype)))

            fields = {"recurrent": keep(h, h0)}
            for n in conv_names:  # without convolutions the states have width 0 and nothing to update
                fields["conv_" + n] = (keep(conv_final[n], conv_init[n]) if self.use_short_conv
                                       else by_memory(conv_init[n]))
            new_state = MomState(**{name: t[:, :E].contiguous() for name, t in fields.items()},
                                 **{f"shared_{name}": t[:, E:].contiguous() for name, t in fields.items()})

        if self.use_output_gate:
            o = self.o_norm(o, self.g_proj(x).view(B, T, H, self.head_v_dim))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, self.value_dim)), router_logits, new_state
