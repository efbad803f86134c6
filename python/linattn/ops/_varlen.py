"""cu_seqlens_cpu: the packed-sequence offsets on the host, next to (or instead of) cu_seqlens on the device.

The ops never copy cu_seqlens back to the host: on CUDA its values are checked by a device-side assertion.
A host copy given as cu_seqlens_cpu is checked here at once, so bad offsets raise a ValueError naming them
instead of a device-side assertion (which leaves the CUDA context unusable); given alone, it is moved to the
inputs' device. Nothing here synchronises with the GPU.
"""
from typing import Optional

import torch


def _check_host_offsets(cu_seqlens_cpu: torch.Tensor, total_len: int, op: str) -> None:
    if cu_seqlens_cpu.device.type != "cpu":
        raise ValueError(f"{op}: cu_seqlens_cpu must be a CPU tensor (the host copy of cu_seqlens), "
                         f"got device {cu_seqlens_cpu.device}")
    if cu_seqlens_cpu.dtype != torch.int64 or cu_seqlens_cpu.dim() != 1 or cu_seqlens_cpu.numel() < 2:
        raise ValueError(f"{op}: cu_seqlens_cpu must be int64 of shape [N+1] with N >= 1, got dtype "
                         f"{cu_seqlens_cpu.dtype} and shape {tuple(cu_seqlens_cpu.shape)}")
    if torch.compiler.is_compiling():  # reading values would be a data-dependent graph break
        return
    offsets = cu_seqlens_cpu.tolist()
    if offsets[0] != 0 or offsets[-1] != total_len:
        raise ValueError(f"{op}: cu_seqlens_cpu must start at 0 and end at T={total_len}, "
                         f"got {offsets[0]} ... {offsets[-1]}")
    for i in range(1, len(offsets)):
        if offsets[i] < offsets[i - 1]:
            raise ValueError(f"{op}: cu_seqlens_cpu must be non-decreasing, got {offsets[i - 1]} then "
                             f"{offsets[i]} at index {i}")


def resolve_cu_seqlens(q: torch.Tensor, cu_seqlens: Optional[torch.Tensor],
                       cu_seqlens_cpu: Optional[torch.Tensor], op: str) -> Optional[torch.Tensor]:
    """The cu_seqlens to pass to the op, after checking cu_seqlens_cpu when one is given."""
    if cu_seqlens_cpu is None:
        return cu_seqlens
    _check_host_offsets(cu_seqlens_cpu, q.shape[1], op)
    if cu_seqlens is None:
        return cu_seqlens_cpu.to(q.device, non_blocking=True)
    if cu_seqlens.shape != cu_seqlens_cpu.shape:
        raise ValueError(f"{op}: cu_seqlens_cpu must be the host copy of cu_seqlens, got shapes "
                         f"{tuple(cu_seqlens_cpu.shape)} and {tuple(cu_seqlens.shape)}")
    return cu_seqlens
