"""Building blocks shared by the layers: the causal short convolution, RMS norms (plain and output-gated) and
the activations fla's layers name by string. Parameter names and shapes follow fla 0.5 (ShortConvolution is an
nn.Conv1d with weight [C, 1, W]; the norms hold `weight` [D] only when elementwise_affine), so fla state dicts
load unchanged. Everything is plain PyTorch."""
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # Norms and gates are computed in fp32 for half-precision inputs (and keep float64 for float64 inputs).
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sqrelu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(_at_least_fp32(x)).square().to(x.dtype)


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    # fla's "gelu" is the tanh approximation with sqrt(2/pi) rounded to 0.79788456.
    y = _at_least_fp32(x)
    return (0.5 * y * (1.0 + torch.tanh(0.79788456 * (y + 0.044715 * y * y * y)))).to(x.dtype)


def logsigmoid(x: torch.Tensor) -> torch.Tensor:
    """F.logsigmoid, except under torch.compile: there the same function as min(x, 0) - log1p(e^-|x|) (exact;
    inductor fuses it), because torch's log_sigmoid_backward decomposition guards on a buffer's numel, which fails
    on CPU when unpadding a padding mask has made the row count data-dependent."""
    if torch.compiler.is_compiling():
        return 0.5 * (x - x.abs()) - torch.log1p(torch.exp(-x.abs()))  # min(x, 0) with slope 1/2 at 0, like F
    return F.logsigmoid(x)


# The names fla's layers accept for `feature_map` and `gate_fn` (its ACT2FN table), as unary functions.
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "logsigmoid": logsigmoid,
    "silu": F.silu,
    "swish": F.silu,
    "sqrelu": _sqrelu,
    "gelu": _tanh_gelu,
}


def activation(name: str, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function fla's ACT2FN[name] computes; `what` names the argument in the error."""
    if name == "bias_gelu":
        # In fla this entry takes (input, bias); called with one tensor as a feature map or gate it fails.
        raise ValueError(f"{what}='bias_gelu' needs a bias argument and cannot be used here; "
                         f"choose one of {sorted(ACTIVATIONS)}")
    if name not in ACTIVATIONS:
        raise ValueError(f"{what} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class ShortConvolution(nn.Conv1d):
    """Causal depthwise convolution over time followed by an activation (SiLU by default, None for identity);
    weight [channels, 1, kernel] (+ bias [channels]) as fla's ShortConvolution. Works on packed sequences: every
    sequence starts from its own initial state (zeros when none), so nothing leaks from one sequence into the
    next. States hold the last W-1 inputs (before the convolution), [N, C, W-1], oldest first."""

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False, activation: Optional[str] = "silu"):
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, bias=bias,
                         padding=kernel_size - 1)
        if activation not in ("silu", "swish", None):
            raise ValueError(f"ShortConvolution activation must be 'silu', 'swish' or None, got {activation!r}")
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C], every batch row from a zero state (nn.Conv1d's own forward is not causal)."""
        B, T, C = x.shape
        y, _ = self.packed(x.reshape(B * T, C), torch.arange(B + 1, device=x.device) * T)
        return y.view(B, T, C)

    def packed(self, x: torch.Tensor, cu_seqlens: torch.Tensor, initial_state: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x [R, C] rows of N packed sequences; initial_state [N, C, W-1] -> (y [R, C], final state [N, C, W-1])."""
        R, C = x.shape
        W = self.kernel_size[0]
        N = cu_seqlens.numel() - 1
        if initial_state is None:
            initial_state = x.new_zeros(N, C, W - 1)
        # One gather reads every tap from either the packed rows or the sequence's own initial state, so the
        # sequences are independent without a Python loop over them.
        buf = torch.cat([x, initial_state.to(x.dtype).transpose(1, 2).reshape(N * (W - 1), C)], 0)
        starts, lengths = cu_seqlens[:-1], cu_seqlens.diff()
        seq = torch.repeat_interleave(torch.arange(N, device=x.device), lengths, output_size=R)
        row = torch.arange(R, device=x.device)
        pos = row - starts[seq]
        lag = torch.arange(W, device=x.device)

        def source(r, p, n, d):
            # Input d steps before the position p of sequence n (row r): a packed row, or initial state column.
            return torch.where(p >= d, r - d, R + n * (W - 1) + (W - 1) - (d - p))

        taps = buf[source(row[:, None], pos[:, None], seq[:, None], lag)]  # [R, W, C], lag-major
        w = self.weight[:, 0, :].flip(-1).t().to(x.dtype)  # [W, C]; conv1d correlates, so lag d uses w[W-1-d]
        y = (taps * w).sum(1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        col = torch.arange(W - 1, device=x.device)
        ends, n = cu_seqlens[1:, None], torch.arange(N, device=x.device)[:, None]
        final = buf[source(ends, lengths[:, None], n, (W - 1) - col)].transpose(1, 2)  # [N, C, W-1]
        return (y if self.activation is None else F.silu(y)), final


def _rms(x32: torch.Tensor, eps: float) -> torch.Tensor:
    return x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) (* weight when elementwise_affine), in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _rms(_at_least_fp32(x), self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y.to(x.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim times an output gate: rms(x) * weight * act(gate), act = swish (default) or
    sigmoid; fla's FusedRMSNormGated (weight only when elementwise_affine)."""

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, activation: str = "swish"):
        super().__init__()
        if activation not in ("swish", "silu", "sigmoid"):
            raise ValueError(f"GatedRMSNorm activation must be 'swish', 'silu' or 'sigmoid', got {activation!r}")
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None
        self.eps, self.activation = eps, activation

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        x32, gate32 = _at_least_fp32(x), _at_least_fp32(gate)
        y = _rms(x32, self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        y = y * (torch.sigmoid(gate32) if self.activation == "sigmoid" else F.silu(gate32))
        return y.to(x.dtype)
