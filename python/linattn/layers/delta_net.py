"""DeltaNet and gated DeltaNet token mixers with fla 0.5.2's constructors, parameter names and forward
signature, so fla checkpoints load and fla call sites run unchanged ([B, T, hidden] -> [B, T, hidden])."""
import math
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.delta_rule import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
)
from .base import FlaTokenMixer, check_mode, heads_multiple, repad
from .modules import GatedRMSNorm, RMSNorm, ShortConvolution, _at_least_fp32

_CONV_WARNING = ("use_short_conv=False: fla warns that the short convolutions matter a lot for quality; turn them "
                 "off only on purpose")


class _DeltaFamily(FlaTokenMixer):
    """Shared forward of DeltaNet and GatedDeltaNet: padding removal, projections, convolutions, the op call,
    output norm (gated by g_proj when use_gate) and o_proj."""

    def _make_convs(self, qk_activation: Optional[str]):
        self.q_conv1d = ShortConvolution(self.key_dim, self.conv_size, self.conv_bias, activation=qk_activation)
        self.k_conv1d = ShortConvolution(self.key_dim, self.conv_size, self.conv_bias, activation=qk_activation)
        self.v_conv1d = ShortConvolution(self.value_dim, self.conv_size, self.conv_bias)

    def _make_output(self):
        if self.use_gate:
            self.g_proj = nn.Linear(self.hidden_size, self.value_dim, bias=False)
            self.o_norm = GatedRMSNorm(self.head_v_dim, eps=self.norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, eps=self.norm_eps)
        self.o_proj = nn.Linear(self.value_dim, self.hidden_size, bias=False)

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
        else:
            q, k, v = self._activate_unconvolved(q, k, v)
        q = q.unflatten(-1, (self.num_heads, self.head_k_dim))
        k = k.unflatten(-1, (self.num_heads, self.head_k_dim))
        v = v.unflatten(-1, (self.num_v_heads, self.head_v_dim))
        # The kernel choice follows fla: it looks at T, the padded length, not at the packed token count.
        o, ht = self._mix(x, q, k, v, None if state is None else state.recurrent, cu_seqlens, bool(use_cache), T)
        if use_cache:
            self._write_state(past_key_values, ht, conv_states, T)

        if self.use_gate:
            o = self.o_norm(o, self.g_proj(x).unflatten(-1, (self.num_v_heads, self.head_v_dim)))
        else:
            o = self.o_norm(o)
        o = self.o_proj(o.flatten(-2))
        if indices is not None:
            o = repad(o, indices, B, T)
        return o, None, past_key_values


class DeltaNet(_DeltaFamily):
    """DeltaNet layer (Yang et al. 2024), a drop-in for fla 0.5.2's `fla.layers.DeltaNet`: same keywords and
    defaults (d_model overrides hidden_size; unknown keywords are accepted and ignored, as in fla), parameter
    names and shapes, forward signature and result.

    Math: q = q_proj x, k = k_proj x, v = v_proj x, each through its short convolution when use_short_conv (SiLU
    after v's always, after q's and k's only for qk_activation='silu'; without convolutions the same SiLUs are
    applied directly); then qk_activation 'relu', 'elu' (elu(x) + 1) or 'identity' on q and k; qk_norm 'l2'
    (in the op: x / sqrt(sum x^2 + 1e-6)) or 'sum' (x / sum(x)); beta = sigmoid(b_proj x) (1 when
    use_beta=False), doubled with allow_neg_eigval; the delta rule u_t = beta_t (v_t - S^T k_t),
    S_t = S_{t-1} + k_t u_t^T, o_t = S_t^T q_t / sqrt(head_k_dim) (linattn.chunk_delta_rule, or
    fused_recurrent_delta_rule when mode='fused_recurrent' or T <= 64); output RMSNorm(o) * weight, times
    swish(g_proj x) when use_gate, per head; then o_proj. mode='fused_chunk' raises, as in fla.

    attention_mask [B, T] or [B, past + T] (0 = padding, any position) removes the padding (each row runs as its
    own sequence, padded outputs are zero); cu_seqlens (B = 1) packs sequences. Returns (o, None, past_key_values).
    """

    def __init__(self, mode: str = "chunk", d_model: Optional[int] = None, hidden_size: int = 1024,
                 expand_k: float = 1.0, expand_v: float = 1.0, num_heads: int = 4, use_beta: bool = True,
                 use_gate: bool = False, use_short_conv: bool = True, conv_size: int = 4, conv_bias: bool = False,
                 allow_neg_eigval: bool = False, layer_idx: Optional[int] = None, qk_activation: str = "silu",
                 qk_norm: str = "l2", norm_eps: float = 1e-5, **kwargs):
        super().__init__()
        if mode == "fused_chunk":
            raise NotImplementedError("DeltaNet mode 'fused_chunk' is deprecated in fla and not provided; use 'chunk'")
        check_mode(mode)
        if qk_activation not in ("silu", "relu", "elu", "identity"):
            raise ValueError(f"qk_activation must be 'silu', 'relu', 'elu' or 'identity', got {qk_activation!r}")
        if qk_norm not in ("l2", "sum"):
            raise ValueError(f"qk_norm must be 'l2' or 'sum', got {qk_norm!r}")
        if d_model is not None:
            hidden_size = d_model
        self.mode, self.hidden_size, self.expand_k, self.expand_v = mode, hidden_size, expand_k, expand_v
        self.num_heads = self.num_v_heads = num_heads
        self.use_beta, self.use_gate, self.allow_neg_eigval = use_beta, use_gate, allow_neg_eigval
        self.use_short_conv, self.conv_size, self.conv_bias = use_short_conv, conv_size, conv_bias
        self.qk_activation, self.qk_norm, self.norm_eps, self.layer_idx = qk_activation, qk_norm, norm_eps, layer_idx
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim = heads_multiple(self.key_dim, num_heads, "key_dim = hidden_size * expand_k =")
        self.head_v_dim = heads_multiple(self.value_dim, num_heads, "value_dim = hidden_size * expand_v =")
        if use_short_conv and conv_size < 1:
            raise ValueError(f"conv_size must be >= 1, got {conv_size}")

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_beta:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        if use_short_conv:
            self._make_convs("silu" if qk_activation == "silu" else None)
        else:
            warnings.warn(_CONV_WARNING)
        self._make_output()

    def _activate_unconvolved(self, q, k, v):
        if self.qk_activation == "silu":
            q, k = F.silu(q), F.silu(k)
        return q, k, F.silu(v)

    def _mix(self, x, q, k, v, h0, cu_seqlens, use_cache, T):
        if self.qk_activation == "relu":
            q, k = F.relu(q), F.relu(k)
        elif self.qk_activation == "elu":
            q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        if self.qk_norm == "sum":
            q, k = q / q.sum(-1, keepdim=True), k / k.sum(-1, keepdim=True)
        if self.use_beta:
            beta = torch.sigmoid(_at_least_fp32(self.b_proj(x)))
        else:
            beta = torch.ones(q.shape[:-1], dtype=_at_least_fp32(q).dtype, device=q.device)
        if self.allow_neg_eigval:
            beta = beta * 2.0
        fn = fused_recurrent_delta_rule if T <= 64 or self.mode == "fused_recurrent" else chunk_delta_rule
        return fn(q, k, v, beta, initial_state=h0, output_final_state=use_cache,
                  use_qk_l2norm_in_kernel=self.qk_norm == "l2", cu_seqlens=cu_seqlens)


class GatedDeltaNet(_DeltaFamily):
    """Gated DeltaNet layer (Yang et al. 2024), a drop-in for fla 0.5.2's `fla.layers.GatedDeltaNet`: same
    keywords and defaults (unknown keywords accepted and ignored, as in fla), parameter names and shapes
    (A_log, dt_bias [num_v_heads]), forward signature and result.

    Math: q, k [num_heads, head_dim] and v [num_v_heads, head_dim * expand_v] from their projections, each through
    its short convolution + SiLU (SiLU alone when use_short_conv=False); value head i reads q/k head
    i // (num_v_heads / num_heads); beta = sigmoid(b_proj x) (doubled with allow_neg_eigval); log decay
    g = -exp(A_log) * softplus(a_proj x + dt_bias) in fp32; q and k L2-normalised in the op; S <- exp(g_t) S, then
    the delta rule (linattn.chunk_gated_delta_rule, or fused_recurrent_gated_delta_rule at inference when
    T <= 64 or mode='fused_recurrent'; the gate and beta activations go through the ops' fla keywords
    use_gate_in_kernel / use_beta_sigmoid_in_kernel / allow_neg_eigval); output RMSNorm(o) * weight, times
    swish(g_proj x) when use_gate, per head; then o_proj. fla refuses mode='fused_recurrent' in training;
    linattn's recurrent op is differentiable, so it is allowed here.

    attention_mask (0 = padding, any position) removes the padding; cu_seqlens (B = 1) packs sequences.
    Returns (o, None, past_key_values).
    """

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256, num_heads: int = 6,
                 num_v_heads: Optional[int] = None, mode: str = "chunk", use_gate: bool = True,
                 use_short_conv: bool = True, allow_neg_eigval: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, layer_idx: Optional[int] = None, norm_eps: float = 1e-5, **kwargs):
        super().__init__()
        check_mode(mode)
        self.mode, self.hidden_size, self.expand_v, self.head_dim = mode, hidden_size, expand_v, head_dim
        self.num_heads = num_heads
        self.num_v_heads = num_heads if num_v_heads is None else num_v_heads
        if self.num_v_heads < num_heads or self.num_v_heads % num_heads:
            raise ValueError(f"num_v_heads={self.num_v_heads} must be a multiple of num_heads={num_heads}")
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        if not math.isclose(head_dim * expand_v, self.head_v_dim, rel_tol=1e-5):
            raise ValueError(f"head_dim * expand_v = {head_dim * expand_v} must be an integer (head_v_dim)")
        self.key_dim, self.value_dim = num_heads * head_dim, self.num_v_heads * self.head_v_dim
        self.use_gate, self.use_short_conv, self.allow_neg_eigval = use_gate, use_short_conv, allow_neg_eigval
        self.conv_size, self.conv_bias, self.layer_idx, self.norm_eps = conv_size, conv_bias, layer_idx, norm_eps
        if use_short_conv and conv_size < 1:
            raise ValueError(f"conv_size must be >= 1, got {conv_size}")

        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.a_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        # fla's initialisation: A ~ U(0, 16); dt log-uniform in [1e-3, 0.1] (floored at 1e-4), stored as
        # softplus^-1(dt). Neither gets weight decay.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.num_v_heads).uniform_(0, 16)))
        dt = torch.exp(torch.rand(self.num_v_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        if use_short_conv:
            self._make_convs("silu")
        else:
            warnings.warn(_CONV_WARNING)
        self._make_output()

    def _activate_unconvolved(self, q, k, v):
        return F.silu(q), F.silu(k), F.silu(v)

    def _mix(self, x, q, k, v, h0, cu_seqlens, use_cache, T):
        recurrent = self.mode == "fused_recurrent" or (T <= 64 and not self.training)
        fn = fused_recurrent_gated_delta_rule if recurrent else chunk_gated_delta_rule
        return fn(q, k, v, g=self.a_proj(x), beta=self.b_proj(x), A_log=self.A_log, dt_bias=self.dt_bias,
                  initial_state=h0, output_final_state=use_cache, use_qk_l2norm_in_kernel=True,
                  use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True, allow_neg_eigval=self.allow_neg_eigval,
                  cu_seqlens=cu_seqlens)
