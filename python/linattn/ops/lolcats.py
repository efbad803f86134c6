"""LoLCATs building blocks."""
import torch


def hedgehog_feature_map(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]: x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F]."""
    return torch.ops.linattn.hedgehog_feature_map(x, weight)


def lolcats_attention(q, k, v, fq, fk, window_factor, window_size: int = 64, scale=None) -> torch.Tensor:
    """LoLCATs hybrid attention: a softmax window of window_size keys (weights sigmoid(window_factor[h]) *
    e^{s - m}) plus linear attention phi(q).phi(k) over the keys before the window, under one normaliser.
    q, k [B, T, H, D]; v [B, T, H, V]; fq, fk [B, T, H, F]; window_factor [H]. O(T) memory."""
    return torch.ops.linattn.lolcats_attention(q, k, v, fq, fk, window_factor, window_size, scale)


def attention_transfer_loss(q, k, v, fq, fk, window_factor, window_size: int = 64, scale=None) -> torch.Tensor:
    """MSE between lolcats_attention(...) and causal softmax attention on the same q, k, v (teacher without
    gradient, via scaled_dot_product_attention)."""
    return torch.ops.linattn.attention_transfer_loss(q, k, v, fq, fk, window_factor, window_size, scale)
