"""Saving and reloading linearized models.

`save` writes an ordinary Hugging Face checkpoint (save_pretrained: config, sharded safetensors) whose
config.json records the conversion under `linattn`. `load` lets transformers load it as the original
architecture (so dtype, device_map, meta-device loading and sharding all come from from_pretrained), converts
the attentions again, and fills the parameters the conversion adds (LoLCATs feature maps and window factors)
from the same files. A Liger model adds none, so its checkpoint is a plain one plus the config entry."""
import glob
import os
from typing import Optional

import torch
import torch.nn as nn

from .convert import convert

FEATURE_MAPS = "feature_maps.safetensors"
ADDED = ("feature_map_q", "feature_map_k", "window_factor")


def _plain(model: nn.Module) -> nn.Module:
    # A peft wrapper is merged so that the saved weights are those of a plain model.
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def _added(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ADDED


def save(model: nn.Module, path: str, **save_pretrained_kwargs) -> nn.Module:
    """save_pretrained to the folder `path`, LoRA adapters merged first; returns the (merged) model."""
    model = _plain(model)
    if not hasattr(getattr(model, "config", None), "linattn"):
        raise ValueError("the model was not converted by linattn.linearize (config.linattn is missing)")
    model.save_pretrained(path, **save_pretrained_kwargs)
    return model


def _read_added(path: str) -> dict:
    from safetensors import safe_open
    found = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        if os.path.basename(f) == FEATURE_MAPS:
            continue
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                if _added(key):
                    found[key] = st.get_tensor(key)
    return found


def _fill(model: nn.Module, state: dict, what: str) -> None:
    params = {n: p for n, p in model.named_parameters() if _added(n)}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"{what}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[n])


def load(path: str, dtype: Optional[torch.dtype] = None, **from_pretrained_kwargs) -> nn.Module:
    """Rebuilds a model saved by `save`. Extra keyword arguments go to from_pretrained (device_map, ...)."""
    import transformers
    config = transformers.AutoConfig.from_pretrained(path)
    spec = dict(getattr(config, "linattn", None) or {})
    if "kind" not in spec:
        raise ValueError(f"{path}/config.json has no 'linattn' entry; it was not saved by linattn.linearize.save")
    if dtype is not None:
        from_pretrained_kwargs["dtype"] = dtype
    # The added parameters are unknown to the original architecture; they are read below, so transformers'
    # report of unused weights says nothing useful here.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    convert(model, spec.pop("kind"), **spec)
    _fill(model, _read_added(path), path)
    return model


def save_feature_maps(model: nn.Module, path: str) -> None:
    """Checkpoint of what attention transfer trains (feature maps and window factors)."""
    from safetensors.torch import save_file
    save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if _added(n)}, path)


def load_feature_maps(model: nn.Module, path: str) -> None:
    from safetensors.torch import load_file
    _fill(model, load_file(path), path)
