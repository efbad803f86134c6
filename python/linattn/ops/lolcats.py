"""LoLCATs building blocks."""
import torch


def hedgehog_feature_map(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]: x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F]."""
    return torch.ops.linattn.hedgehog_feature_map(x, weight)
