"""fla.ops.gated_delta_rule names, fla's positional orders (see linattn.fla)."""
from ._signatures import chunk_gated_delta_rule, chunk_gdn, fused_recurrent_gated_delta_rule, fused_recurrent_gdn  # noqa: F401

