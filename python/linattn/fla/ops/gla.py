"""fla.ops.gla names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_gla, fused_recurrent_gla  # noqa: F401

