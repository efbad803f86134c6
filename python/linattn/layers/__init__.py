"""nn.Module layers built on the linattn ops.

GatedLinearAttention, SimpleGatedLinearAttention, DeltaNet, GatedDeltaNet and MomAttention take fla 0.5.2's
constructor keywords, parameter names and forward signature (fla state dicts load); LightningAttention is a
linattn variant of simple GLA with a constant decay; LolcatsAttention / LigerAttention replace the attention of
Hugging Face Llama-family models."""
from .cache import LinearAttentionState, StateCache
from .delta_net import DeltaNet, GatedDeltaNet
from .gla import GatedLinearAttention, LightningAttention, SimpleGatedLinearAttention
from .liger import LigerAttention
from .lolcats import LolcatsAttention
from .modules import GatedRMSNorm, RMSNorm, ShortConvolution
from .mom import MomAttention

__all__ = ["DeltaNet", "GatedDeltaNet", "GatedLinearAttention", "GatedRMSNorm", "LightningAttention",
           "LigerAttention", "LinearAttentionState", "LolcatsAttention", "MomAttention", "RMSNorm",
           "ShortConvolution", "SimpleGatedLinearAttention", "StateCache"]
