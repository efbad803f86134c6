"""fla.ops: the ops linattn implements, under fla 0.5.2's module paths and positional argument orders."""
from . import delta_rule, gated_delta_rule, gla, lightning_attn, retention, simple_gla
from ._signatures import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gdn,
    chunk_gla,
    chunk_lightning_attn,
    chunk_retention,
    chunk_simple_gla,
    fused_chunk_retention,
    fused_chunk_simple_gla,
    fused_recurrent_delta_rule,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_gdn,
    fused_recurrent_gla,
    fused_recurrent_lightning_attn,
    fused_recurrent_retention,
    fused_recurrent_simple_gla,
)

__all__ = [
    "chunk_delta_rule", "chunk_gated_delta_rule", "chunk_gdn", "chunk_gla", "chunk_lightning_attn", "chunk_retention",
    "chunk_simple_gla", "fused_chunk_retention", "fused_chunk_simple_gla", "fused_recurrent_delta_rule",
    "fused_recurrent_gated_delta_rule", "fused_recurrent_gdn", "fused_recurrent_gla", "fused_recurrent_lightning_attn",
    "fused_recurrent_retention", "fused_recurrent_simple_gla",
    "delta_rule", "gated_delta_rule", "gla", "lightning_attn", "retention", "simple_gla",
]
