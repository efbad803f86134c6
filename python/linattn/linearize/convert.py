"""Swapping the attention modules of a Hugging Face causal LM for linattn's linearized attentions."""
from typing import Iterator, Tuple

import torch.nn as nn

from ..layers.liger import LigerAttention
from ..layers.lolcats import LolcatsAttention

ATTENTION_CLASSES = {"lolcats": LolcatsAttention, "liger": LigerAttention}


def attention_modules(model: nn.Module) -> Iterator[Tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute name, module) for every Llama-family attention: a child named `self_attn` with
    q/k/v/o projections."""
    for parent in list(model.modules()):
        attn = getattr(parent, "self_attn", None)
        if isinstance(attn, nn.Module) and all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")):
            yield parent, "self_attn", attn


def convert(model: nn.Module, kind: str, **layer_kwargs) -> nn.Module:
    """Replaces every attention module in place by ATTENTION_CLASSES[kind](module, **layer_kwargs); the
    projections are kept. Records the conversion in model.config.linattn so that linattn.linearize.load
    rebuilds the same model. Returns the model."""
    if kind not in ATTENTION_CLASSES:
        raise ValueError(f"kind must be one of {sorted(ATTENTION_CLASSES)}, got {kind!r}")
    cls = ATTENTION_CLASSES[kind]
    found = 0
    for parent, name, attn in attention_modules(model):
        if isinstance(attn, tuple(ATTENTION_CLASSES.values())):
            raise ValueError(f"the model is already converted ({type(attn).__name__} found)")
        setattr(parent, name, cls(attn, **layer_kwargs))
        found += 1
    if not found:
        raise ValueError(f"no Llama-family attention (self_attn with q/k/v/o_proj) found in {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is not None:
        config.linattn = {"kind": kind, **layer_kwargs}
    return model


def linear_attention_layers(model: nn.Module, cls=None):
    cls = cls or tuple(ATTENTION_CLASSES.values())
    return [m for m in model.modules() if isinstance(m, cls)]
