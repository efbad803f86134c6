"""The keyword arguments flash-linear-attention (fla) 0.5.x accepts beyond linattn's own, so that fla call sites
run unchanged: the state layout (`state_v_first`), reversed recurrences (`reverse`), gate and beta activations
applied before the op (`use_gate_in_kernel`, `use_beta_sigmoid_in_kernel`, `allow_neg_eigval`), and the knobs
that do not change the result (`chunk_size`, which only picks fla's tiling). Arguments that linattn cannot honour
raise instead of being ignored: a silently dropped `gv` or `cp_context` would give other numbers than fla.

Everything here is PyTorch on the op's inputs and outputs (no sync, torch.compile friendly); the ops themselves
keep linattn's signatures.
"""
from typing import Any, Dict, Iterable, Optional

import torch
import torch.nn.functional as F

_CHUNK_SIZES = (16, 32, 64)


def check_extra_kwargs(op: str, kwargs: Dict[str, Any], chunked: bool) -> None:
    """fla's **kwargs: head_first (removed there too), chunk_size (chunked ops; the result does not depend on it,
    linattn always uses 64); anything else is an error naming it."""
    kwargs = dict(kwargs)
    if kwargs.pop("head_first", False):
        raise ValueError(f"{op}: head_first=True is not supported; pass [B, T, H, D] tensors (as fla 0.5 does)")
    if chunked and "chunk_size" in kwargs:
        size = kwargs.pop("chunk_size")
        if size not in _CHUNK_SIZES:
            raise ValueError(f"{op}: chunk_size must be one of {_CHUNK_SIZES}, got {size!r} (it only selects the "
                             "tiling; linattn's result is the same for every valid value)")
    if kwargs:
        raise TypeError(f"{op}: unexpected keyword argument(s) {sorted(kwargs)}")


def refuse(op: str, **given: Any) -> None:
    """fla arguments linattn does not implement: an error when one is set, never a silent difference."""
    for name, value in given.items():
        if value is not None and value is not False:
            raise NotImplementedError(f"{op}: {name} is not supported by linattn (fla-only argument); "
                                      f"leave it at its default")


def state_in(state: Optional[torch.Tensor], state_v_first: bool) -> Optional[torch.Tensor]:
    """[N, H, V, K] (fla's state_v_first layout) -> linattn's [N, H, K, V], as a view."""
    return state.transpose(-1, -2) if state_v_first and state is not None else state


def state_out(state: Optional[torch.Tensor], state_v_first: bool) -> Optional[torch.Tensor]:
    return state.transpose(-1, -2) if state_v_first and state is not None else state


def reversed_tokens(cu_seqlens: Optional[torch.Tensor], total: int, device: torch.device) -> torch.Tensor:
    """Token index map that reverses every sequence in place: with varlen, token p of sequence [bos, eos) goes to
    bos + eos - 1 - p; without, t goes to T - 1 - t. Its own inverse."""
    pos = torch.arange(total, device=device)
    if cu_seqlens is None:
        return pos.flip(0)
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    seq = torch.searchsorted(cu[1:], pos, right=True).clamp_max(cu.numel() - 2)
    return cu[seq] + cu[seq + 1] - 1 - pos


def reverse_time(tensors: Iterable[Optional[torch.Tensor]], index: torch.Tensor):
    return [None if t is None else t.index_select(1, index) for t in tensors]


def gate_from_raw(g: torch.Tensor, A_log: Optional[torch.Tensor], dt_bias: Optional[torch.Tensor],
                  op: str) -> torch.Tensor:
    """use_gate_in_kernel: g is the raw gate input; the log decay is -exp(A_log) * softplus(g + dt_bias), in
    float32 (float64 for float64 inputs), per value head."""
    if A_log is None:
        raise ValueError(f"{op}: use_gate_in_kernel=True needs A_log ([HV])")
    dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
    x = g.to(dtype)
    if dt_bias is not None:
        x = x + dt_bias.to(dtype)
    return -A_log.to(dtype).exp() * F.softplus(x)


def beta_from_logits(beta: torch.Tensor, use_beta_sigmoid_in_kernel: bool, allow_neg_eigval: bool,
                     op: str) -> torch.Tensor:
    """use_beta_sigmoid_in_kernel: beta holds logits, the op gets sigmoid(beta), or 2 sigmoid(beta) with
    allow_neg_eigval (eigenvalues of the transition in (-1, 1])."""
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError(f"{op}: allow_neg_eigval=True needs use_beta_sigmoid_in_kernel=True")
    if not use_beta_sigmoid_in_kernel:
        return beta
    b = torch.sigmoid(beta)
    return 2 * b if allow_neg_eigval else b


def lightning_decay(q: torch.Tensor, layer_idx: int, num_layers: int) -> torch.Tensor:
    """Lightning attention's per-head log decay (fla 0.5's chunk_lightning_attn) for q [B, T, H, K]: head h decays
    by -8 h / H * (1 - layer_idx / num_layers); head 0 does not decay, and deeper layers decay less. float32
    (float64 for float64 q), like the states."""
    if num_layers < 1 or not 0 <= layer_idx <= num_layers:
        raise ValueError(f"layer_idx must be in [0, num_layers] with num_layers >= 1, got layer_idx={layer_idx}, "
                         f"num_layers={num_layers}")
    num_heads = q.shape[2]
    rate = 8.0 / num_heads * (1.0 - layer_idx / num_layers)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return -rate * torch.arange(num_heads, device=q.device, dtype=dtype)


def retention_decay(q: torch.Tensor) -> torch.Tensor:
    """Retention's per-head log decay (RetNet; fla 0.5's chunk_retention) for q [B, T, H, K]: head h keeps
    1 - 2^(-5 - h) of its state per token. float32 (float64 for float64 q), like the states."""
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    heads = torch.arange(q.shape[2], device=q.device, dtype=dtype)
    return torch.log1p(-torch.exp2(-5.0 - heads))
