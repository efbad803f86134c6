"""nn.Module layers built on the linattn ops."""
from .delta_net import DeltaNet, GatedDeltaNet
from .gla import GatedLinearAttention, GatedRMSNorm, LightningAttention, SimpleGatedLinearAttention

__all__ = ["DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "GatedRMSNorm", "LightningAttention",
           "SimpleGatedLinearAttention"]
