"""fla's import paths and positional argument orders over linattn's ops.

Moving a flash-linear-attention 0.5 code base over is an import change: `from fla.ops.gla import chunk_gla` becomes
`from linattn.fla.ops.gla import chunk_gla`, and calls that pass arguments by position keep their meaning (fla puts
`state_v_first` before `cu_seqlens`, and `gk`, `gv` before `beta` in the recurrent gated delta rule, where linattn's
own functions differ). Every function forwards by keyword to the linattn op of the same name, so the semantics,
the supported keywords and the errors for what linattn does not implement are those documented there.
`linattn.fla.layers` holds the layers that load fla's state dicts; `linattn.fla.models` (imported on use: it needs
transformers) fla's GLA / DeltaNet / GatedDeltaNet causal LMs.
"""
from . import layers, ops

__all__ = ["layers", "ops"]
