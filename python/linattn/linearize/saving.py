"""Saving and reloading linearized models: the Hugging Face config (which records the conversion under
`linattn`) plus every weight, feature maps included, in one safetensors file."""
import os
from typing import Optional

import torch
import torch.nn as nn

from .convert import convert

WEIGHTS = "linattn_model.safetensors"
FEATURE_MAPS = "feature_maps.safetensors"


def _plain(model: nn.Module) -> nn.Module:
    # A peft wrapper is merged so that the saved weights are those of a plain model.
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save(model: nn.Module, path: str) -> nn.Module:
    """Writes config.json and the weights to the folder `path`. LoRA adapters are merged first; returns the
    (merged) model."""
    from safetensors.torch import save_model
    model = _plain(model)
    if not hasattr(getattr(model, "config", None), "linattn"):
        raise ValueError("the model was not converted by linattn.linearize (config.linattn is missing)")
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    save_model(model, os.path.join(path, WEIGHTS))
    return model


def load(path: str, dtype: Optional[torch.dtype] = None, device: Optional[str] = None) -> nn.Module:
    """Rebuilds a model saved by `save`: the architecture from config.json, the conversion from its
    `linattn` entry, then the weights (strict)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(path)
    spec = dict(getattr(config, "linattn", None) or {})
    if "kind" not in spec:
        raise ValueError(f"{path}/config.json has no 'linattn' entry; it was not saved by linattn.linearize.save")
    model = AutoModelForCausalLM.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    convert(model, spec.pop("kind"), **spec)
    load_model(model, os.path.join(path, WEIGHTS), strict=True, device=str(device or "cpu"))
    return model.to(device) if device is not None else model


def save_feature_maps(model: nn.Module, path: str) -> None:
    """Checkpoint of what attention transfer trains (feature maps and window factors)."""
    from safetensors.torch import save_file
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
             if any(s in n for s in ("feature_map_q", "feature_map_k", "window_factor"))}
    save_file(state, path)


def load_feature_maps(model: nn.Module, path: str) -> None:
    from safetensors.torch import load_file
    state = load_file(path)
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise KeyError(f"feature-map checkpoint has parameters this model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
