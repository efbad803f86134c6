"""flash-linear-attention (fla) as an optional baseline.

fla 0.5.x takes the same [B, T, H, D] layout, `cu_seqlens`, fp32 [N, H, K, V] states and the same keyword
names as linattn, so one keyword dict drives both libraries. Calls must stay keyword-only: the positional
orders differ (fla's fused_recurrent_gated_delta_rule has gk, gv before beta; chunk_gla has state_v_first
before cu_seqlens)."""
import importlib

MODULE = {
    "chunk_gla": "fla.ops.gla", "fused_recurrent_gla": "fla.ops.gla",
    "chunk_simple_gla": "fla.ops.simple_gla", "fused_recurrent_simple_gla": "fla.ops.simple_gla",
    "chunk_delta_rule": "fla.ops.delta_rule", "fused_recurrent_delta_rule": "fla.ops.delta_rule",
    "chunk_gated_delta_rule": "fla.ops.gated_delta_rule",
    "fused_recurrent_gated_delta_rule": "fla.ops.gated_delta_rule",
}


def version() -> str:
    try:
        import fla
        return getattr(fla, "__version__", "unknown version")
    except Exception as e:  # absent, or present without a dependency (einops, triton)
        return f"not available ({type(e).__name__}: {str(e)[:80]})"


def get(op: str, device_type: str):
    """(function, None) or (None, reason the column is empty)."""
    if device_type != "cuda":
        return None, "fla runs on CUDA only"
    try:
        return getattr(importlib.import_module(MODULE[op]), op), None
    except Exception as e:
        return None, f"fla unavailable: {type(e).__name__}: {str(e)[:60]}"
