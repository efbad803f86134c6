"""Mixture-of-memories routing: route, dispatch into per-memory varlen sequences, combine."""
from typing import Sequence, Tuple

import torch


def mom_route(router_logits: torch.Tensor, topk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """fp32 softmax, top-k (ties to the lower index), weights renormalised over the k.
    router_logits [B, T, E] -> (weights [B, T, k] in the logits' dtype, indices [B, T, k] int64)."""
    return torch.ops.linattn.mom_route(router_logits, topk)


def mom_dispatch(x: torch.Tensor, indices: torch.Tensor, num_memories: int):
    """-> (x_sorted [B*T*k, ...], cu_seqlens [E*B+1], sort_index [B*T*k]); sequence e*B + b holds the tokens
    of batch b routed to memory e, in token order."""
    return torch.ops.linattn.mom_dispatch(x, indices, num_memories)


def mom_combine(y_sorted: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, sort_index: torch.Tensor,
                num_memories: int) -> torch.Tensor:
    """y[b, t] = sum_j weights[b, t, j] * output of copy j of token (b, t)."""
    return torch.ops.linattn.mom_combine(y_sorted, weights, indices, sort_index, num_memories)


def mom_grouped_linear(x: torch.Tensor, weights: Sequence[torch.Tensor], offsets: torch.Tensor) -> torch.Tensor:
    """Per-memory projections of packed rows: x [N, D], weights G tensors [O, D] (nn.Linear weights), offsets
    int64 [G+1] -> y [N, O], y[r] = x[r] @ weights[g].T for offsets[g] <= r < offsets[g+1], 0 outside
    offsets[0] .. offsets[G]. With mom_dispatch's cu_seqlens over B batch rows, offsets = cu_seqlens[::B]
    gives memory e the rows of its B sequences. Offsets on the GPU are read to the host once per call (pass
    them on the host to avoid it); the op is opaque to torch.compile, so that read is no graph break."""
    return torch.ops.linattn.mom_grouped_linear(x, list(weights), offsets)
