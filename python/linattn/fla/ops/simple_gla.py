"""fla.ops.simple_gla names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_simple_gla, fused_chunk_simple_gla, fused_recurrent_simple_gla, parallel_simple_gla  # noqa: F401

