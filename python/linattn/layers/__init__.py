"""nn.Module layers built on the linattn ops."""
from .delta_net import DeltaNet, GatedDeltaNet
from .cache import StateCache
from .gla import GatedLinearAttention, GatedRMSNorm, LightningAttention, SimpleGatedLinearAttention
from .liger import LigerAttention
from .lolcats import LolcatsAttention
from .mom import MomAttention

__all__ = ["LigerAttention", "LolcatsAttention", "StateCache", "DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "GatedRMSNorm", "LightningAttention",
           "SimpleGatedLinearAttention", "MomAttention"]
