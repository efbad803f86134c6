"""fla.ops.linear_attn names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_linear_attn, fused_chunk_linear_attn, fused_recurrent_linear_attn  # noqa: F401
