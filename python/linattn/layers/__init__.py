"""nn.Module layers built on the linattn ops."""
from .gla import GatedLinearAttention, GatedRMSNorm, LightningAttention, SimpleGatedLinearAttention

__all__ = ["GatedLinearAttention", "GatedRMSNorm", "LightningAttention", "SimpleGatedLinearAttention"]
