"""fla.ops.delta_rule names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_delta_rule, fused_recurrent_delta_rule  # noqa: F401

