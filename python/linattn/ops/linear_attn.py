"""Linear attention without decay (fla's chunk_linear_attn / fused_recurrent_linear_attn), optionally normalised.

o_t = S_t^T (scale q_t) with S_t = S_{t-1} + k_t v_t^T: simple GLA without a gate. With normalize=True each output
row is divided by scale <q_t, z_t> + 1e-10, z_t = z_init + sum of k_s over the sequence's tokens s <= t (s >= t
with reverse), and the state becomes the pair (kv_state [N, H, K, V], z_state [N, 1, H, K]); initial_state may then
be such a pair. As in fla, the pair is returned whenever normalize=True (its kv_state is None unless
output_final_state). The normaliser is PyTorch (cumsums, no host sync, autograd differentiates it); the kv part
runs on linattn's simple GLA kernels.
"""
from typing import Optional

import torch

from ._varlen import resolve_cu_seqlens
from .gla import chunk_simple_gla, fused_recurrent_simple_gla


def _running_key_sum(k: torch.Tensor, reverse: bool, cu_seqlens: Optional[torch.Tensor]):
    """Per-sequence inclusive cumsum of k over time (suffix sums with reverse), and each token's sequence index
    (None without varlen). Accumulated in float32 at least."""
    acc = torch.float64 if k.dtype == torch.float64 else torch.float32
    kf = k.to(acc)
    cs = kf.cumsum(1)
    if cu_seqlens is None:
        return (cs[:, -1:] - cs + kf if reverse else cs), None
    cu = cu_seqlens.to(device=k.device, dtype=torch.long)
    pos = torch.arange(k.shape[1], device=k.device)
    seq = torch.searchsorted(cu[1:], pos, right=True).clamp_max(cu.numel() - 2)
    padded = torch.cat([cs.new_zeros(cs.shape[0], 1, *cs.shape[2:]), cs], 1)  # padded[:, t] = sum of k_s, s < t
    before = padded[:, cu[seq]]
    prefix = cs - before
    if not reverse:
        return prefix, seq
    return padded[:, cu[seq + 1]] - before - prefix + kf, seq


def _normalize(o, q, k, scale: float, z_init, reverse: bool, cu_seqlens):
    z, seq = _running_key_sum(k, reverse, cu_seqlens)
    if z_init is not None:  # [N, 1, H, K]
        z = z + (z_init.to(z.dtype) if seq is None else z_init.to(z.dtype)[:, 0][seq].unsqueeze(0))
    denom = (q.to(z.dtype) * scale * z).sum(-1, keepdim=True) + 1e-10
    if cu_seqlens is None:
        z_state = z[:, :1] if reverse else z[:, -1:]
    else:
        cu = cu_seqlens.to(device=k.device, dtype=torch.long)
        edge = cu[:-1] if reverse else cu[1:] - 1
        rows = z[0, edge.clamp(0, max(k.shape[1] - 1, 0))]
        empty = (cu[1:] == cu[:-1]).view(-1, 1, 1)  # an empty sequence keeps its initial z (or 0)
        start = z_init.to(z.dtype)[:, 0] if z_init is not None else torch.zeros_like(rows)
        z_state = torch.where(empty, start, rows).unsqueeze(1)
    return (o.to(z.dtype) / denom).to(o.dtype), z_state.contiguous()


def _split_state(initial_state, normalize: bool):
    if normalize and isinstance(initial_state, (tuple, list)):
        return initial_state[0], initial_state[1]
    return initial_state, None


def chunk_linear_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                      initial_state=None, output_final_state: bool = False, normalize: bool = True,
                      cu_seqlens: Optional[torch.LongTensor] = None, cu_seqlens_cpu: Optional[torch.LongTensor] = None,
                      **kwargs):
    """Chunked linear attention (fla's chunk_linear_attn, same positional order; normalize defaults to True)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "chunk_linear_attn")
    kv_init, z_init = _split_state(initial_state, normalize)
    o, ht = chunk_simple_gla(q, k, v, None, None, scale, kv_init, output_final_state, cu_seqlens, **kwargs)
    if not normalize:
        return o, ht
    o, z_state = _normalize(o, q, k, scale, z_init, False, cu_seqlens)
    return o, (ht, z_state)


def fused_recurrent_linear_attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                                initial_state=None, output_final_state: bool = False, reverse: bool = False,
                                normalize: bool = False, cu_seqlens: Optional[torch.LongTensor] = None,
                                cu_seqlens_cpu: Optional[torch.LongTensor] = None, **kwargs):
    """Linear attention step by step (fla's fused_recurrent_linear_attn, same positional order; normalize defaults
    to False there)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cu_seqlens = resolve_cu_seqlens(q, cu_seqlens, cu_seqlens_cpu, "fused_recurrent_linear_attn")
    kv_init, z_init = _split_state(initial_state, normalize)
    o, ht = fused_recurrent_simple_gla(q, k, v, None, None, scale, kv_init, output_final_state, cu_seqlens,
                                       reverse=reverse, **kwargs)
    if not normalize:
        return o, ht
    o, z_state = _normalize(o, q, k, scale, z_init, reverse, cu_seqlens)
    return o, (ht, z_state)
