"""linattn: C++/CUDA operators for linear attention and for linearizing pretrained LLMs.

Ops live in torch.ops.linattn and are re-exported here with flash-linear-attention compatible signatures.
"""
import os as _os

from . import _library
from ._library import has_cuda_kernels
from .ops.delta_rule import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
)
from .ops.gla import (
    chunk_gla,
    chunk_lightning_attn,
    chunk_retention,
    chunk_simple_gla,
    fused_recurrent_gla,
    fused_recurrent_lightning_attn,
    fused_recurrent_retention,
    fused_recurrent_simple_gla,
)
from .ops.linear_attn import chunk_linear_attn, fused_recurrent_linear_attn
from .ops.liger import liger_attention, liger_gate
from .ops.lolcats import attention_transfer_loss, hedgehog_feature_map, lolcats_attention
from .ops.mom import mom_combine, mom_dispatch, mom_grouped_linear, mom_route
from .ops.swa import sliding_window_attention
from . import layers
from .version import __version__

#: Pass as CMAKE_PREFIX_PATH so that a C++ project's find_package(linattn) finds linattn::linattn.
cmake_prefix_path = _library.PACKAGE_DIR

__all__ = [
    "attention_transfer_loss",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "fused_recurrent_delta_rule",
    "fused_recurrent_gated_delta_rule",
    "chunk_gla",
    "chunk_lightning_attn",
    "chunk_linear_attn",
    "chunk_retention",
    "chunk_simple_gla",
    "fused_recurrent_gla",
    "fused_recurrent_lightning_attn",
    "fused_recurrent_linear_attn",
    "fused_recurrent_retention",
    "fused_recurrent_simple_gla",
    "has_cuda_kernels",
    "hedgehog_feature_map",
    "liger_attention",
    "liger_gate",
    "lolcats_attention",
    "mom_combine",
    "mom_dispatch",
    "mom_grouped_linear",
    "mom_route",
    "sliding_window_attention",
    "cmake_prefix_path",
    "__version__",
]
