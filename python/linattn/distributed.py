"""Sequence parallelism for the chunked ops on torch.distributed (LASP-2 style).

Each rank holds a contiguous slice of the sequence. The state recurrence of every chunked op is affine in its
initial state: the state after a slice is S_out = M S_in + S_local, with S_local the slice's final state from a
zero start and M (K x K) the slice's transition (a diagonal of decay products for GLA, a dense product of
(I - beta k k^T) factors and decays for the delta rule). Every rank computes (S_local, M) for its slice,
one all-gather exchanges them, each rank folds the prefix to get its true initial state, and reruns its slice
from it. M is obtained generically by running the op with zero values and the identity as initial state.
Gradients flow through the all-gather (its backward sums the state gradients of all ranks), so the backward
mirrors the forward with one collective of state-sized tensors. Communication per rank and step:
N * H * K * (K + V) elements, independent of T.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist

from .ops.delta_rule import chunk_delta_rule, chunk_gated_delta_rule
from .ops.gla import chunk_gla, chunk_simple_gla

SUPPORTED = (chunk_gla, chunk_simple_gla, chunk_delta_rule, chunk_gated_delta_rule)


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums each piece's gradient over ranks (all_reduce, which gloo supports)."""

    @staticmethod
    def forward(ctx, group, tensor):
        ctx.group = group
        pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(pieces, tensor.contiguous(), group=group)
        return torch.stack(pieces, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return None, grad[dist.get_rank(ctx.group)]


def sequence_parallel(op: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args,
                      initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
                      group=None, **kwargs) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run a chunked op over a sequence split across the ranks of `group` (contiguous slices in rank order).

    op is one of chunk_gla, chunk_simple_gla, chunk_delta_rule, chunk_gated_delta_rule; q, k, v and the gate /
    beta arguments are this rank's slice [B, T_rank, ...]; initial_state (the state before rank 0's slice) is
    passed on every rank. Returns this rank's output slice and, when output_final_state, the true state at the
    end of this rank's slice (the last rank holds the final state of the whole sequence)."""
    if op not in SUPPORTED:
        raise ValueError(f"sequence_parallel supports {[f.__name__ for f in SUPPORTED]}, got {op}")
    if kwargs.get("cu_seqlens") is not None:
        # Sequences do not cross rank boundaries: every rank's packed sequences are complete.
        return op(q, k, v, *args, initial_state=initial_state, output_final_state=output_final_state, **kwargs)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    _, local = op(q, k, v, *args, output_final_state=True, **kwargs)
    K = q.shape[-1]
    N, Hs = local.shape[0], local.shape[1]
    eye = torch.eye(K, dtype=local.dtype, device=local.device).expand(N, Hs, K, K)
    zeros_v = v.new_zeros(*v.shape[:-1], K)
    _, transition = op(q, k, zeros_v, *args, initial_state=eye, output_final_state=True, **kwargs)
    states = _AllGather.apply(group, local)            # [W, N, H, K, V]
    transitions = _AllGather.apply(group, transition)  # [W, N, H, K, K]
    # The true initial state of every rank (S_0 = initial_state, S_{j+1} = M_j S_j + S_local_j); each rank
    # selects its own, so every rank's backward reaches the all-gather and the collectives stay matched.
    S = initial_state.to(local.dtype) if initial_state is not None else torch.zeros_like(local)
    prefix = [S]
    for j in range(world - 1):
        S = transitions[j] @ S + states[j]
        prefix.append(S)
    return op(q, k, v, *args, initial_state=torch.stack(prefix, 0)[rank], output_final_state=output_final_state,
              **kwargs)
