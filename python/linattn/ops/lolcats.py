"""LoLCATs building blocks and the hybrid attention's decoding state."""
from typing import NamedTuple, Tuple

import torch


def hedgehog_feature_map(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]: x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F]."""
    return torch.ops.linattn.hedgehog_feature_map(x, weight)


def lolcats_attention(q, k, v, fq, fk, window_factor, window_size: int = 64, scale=None) -> torch.Tensor:
    """LoLCATs hybrid attention: a softmax window of window_size keys (weights sigmoid(window_factor[h]) *
    e^{s - m}) plus linear attention phi(q).phi(k) over the keys before the window, under one normaliser.
    q, k [B, T, H, D]; v [B, T, H, V]; fq, fk [B, T, H, F]; window_factor [H]. O(T) memory."""
    return torch.ops.linattn.lolcats_attention(q, k, v, fq, fk, window_factor, window_size, scale)


def attention_transfer_loss(q, k, v, fq, fk, window_factor, window_size: int = 64, scale=None) -> torch.Tensor:
    """MSE between lolcats_attention(...) and causal softmax attention on the same q, k, v (teacher without
    gradient, via scaled_dot_product_attention)."""
    return torch.ops.linattn.attention_transfer_loss(q, k, v, fq, fk, window_factor, window_size, scale)


class LolcatsState(NamedTuple):
    """Decoding state of the hybrid attention after n tokens: the last min(w-1, n) keys (as the window
    softmax sees them), values and key features, plus the linear-attention sums over every earlier token.
    Every field has the batch first, so beam search can index_select them all."""
    k: torch.Tensor      # [B, W, H, D]
    v: torch.Tensor      # [B, W, H, V]
    fk: torch.Tensor     # [B, W, H, F]
    kv: torch.Tensor     # [B, H, F, V]  sum of fk v^T over the tokens that left the window (fp32 or fp64)
    ksum: torch.Tensor   # [B, H, F]     sum of fk over the same tokens


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fold(kv, ksum, fk, v):
    sd = kv.dtype
    return (kv + torch.einsum("bthf,bthv->bhfv", fk.to(sd), v.to(sd)), ksum + fk.to(sd).sum(1))


def lolcats_prefill_state(k, v, fk, window_size: int = 64) -> LolcatsState:
    """The state after the T tokens of k [B,T,H,D], v [B,T,H,V], fk [B,T,H,F]: the next query (position T) sees
    keys T-w+1..T in its window, so tokens 0..T-w are folded into the sums and T-w+1..T-1 stay in the window."""
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    B, T, H, _ = k.shape
    sd = _state_dtype(k.dtype)
    keep = min(window_size - 1, T)
    kv = torch.zeros(B, H, fk.shape[-1], v.shape[-1], dtype=sd, device=k.device)
    ksum = torch.zeros(B, H, fk.shape[-1], dtype=sd, device=k.device)
    kv, ksum = _fold(kv, ksum, fk[:, :T - keep], v[:, :T - keep])
    return LolcatsState(k[:, T - keep:], v[:, T - keep:], fk[:, T - keep:], kv, ksum)


def lolcats_empty_state(B, H, D, V, Fd, dtype, device) -> LolcatsState:
    sd = _state_dtype(dtype)
    return LolcatsState(torch.empty(B, 0, H, D, dtype=dtype, device=device),
                        torch.empty(B, 0, H, V, dtype=dtype, device=device),
                        torch.empty(B, 0, H, Fd, dtype=dtype, device=device),
                        torch.zeros(B, H, Fd, V, dtype=sd, device=device),
                        torch.zeros(B, H, Fd, dtype=sd, device=device))


def lolcats_decode(q, k, v, fq, fk, window_factor, state: LolcatsState, window_size: int = 64, scale=None
                   ) -> Tuple[torch.Tensor, LolcatsState]:
    """Continues the hybrid attention from `state` over the new tokens (one at a time; decoding feeds one):
    outputs equal those of lolcats_attention on the whole sequence. Returns (o [B,T,H,V], new state)."""
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sd = state.kv.dtype
    gamma = torch.sigmoid(window_factor.to(sd)).view(1, -1, 1)
    kw, vw, fkw, kv, ksum = state
    outs = []
    for t in range(q.shape[1]):
        kw = torch.cat([kw, k[:, t:t + 1]], 1)
        vw = torch.cat([vw, v[:, t:t + 1]], 1)
        fkw = torch.cat([fkw, fk[:, t:t + 1]], 1)
        s = torch.einsum("bhd,bjhd->bhj", q[:, t].to(sd), kw.to(sd)) * scale
        e = gamma * (s - s.amax(-1, keepdim=True)).exp()
        f = fq[:, t].to(sd)
        num = torch.einsum("bhj,bjhv->bhv", e, vw.to(sd)) + torch.einsum("bhf,bhfv->bhv", f, kv)
        den = e.sum(-1) + torch.einsum("bhf,bhf->bh", f, ksum)
        outs.append((num / den.unsqueeze(-1)).to(q.dtype))
        drop = kw.shape[1] - (window_size - 1)
        if drop > 0:
            kv, ksum = _fold(kv, ksum, fkw[:, :drop], vw[:, :drop])
            kw, vw, fkw = kw[:, drop:], vw[:, drop:], fkw[:, drop:]
    return torch.stack(outs, 1), LolcatsState(kw, vw, fkw, kv, ksum)
