"""fla.ops.lightning_attn names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_lightning_attn, fused_recurrent_lightning_attn  # noqa: F401

