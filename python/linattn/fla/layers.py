"""fla.layers names: the linattn layers that take fla 0.5.2's constructor keywords and load its state dicts
(`from linattn.fla.layers import GatedDeltaNet` for `from fla.layers import GatedDeltaNet`). Recurrent caches use
linattn's layout; see linattn.layers for what differs."""
from ..layers import DeltaNet, GatedDeltaNet, GatedLinearAttention, MomAttention, SimpleGatedLinearAttention

__all__ = ["DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "MomAttention", "SimpleGatedLinearAttention"]
