"""fla.ops.retention names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_retention, fused_chunk_retention, fused_recurrent_retention, parallel_retention  # noqa: F401

