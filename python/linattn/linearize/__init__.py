"""Linearizing a pretrained Hugging Face Llama-family model (Llama, Mistral, Qwen2):

* `lolcats(model, data, ...)`: swap every attention for LolcatsAttention, stage 1 attention transfer (only
  feature maps and window factors train), stage 2 LoRA fine-tuning of q/k/v/o, optional save;
* `liger(model, data, ...)`: swap every attention for LigerAttention (no new parameters), LoRA r=8 on q/k/v,
  next-token fine-tuning, optional save;
* `convert`, `attention_transfer`, `add_lora`, `finetune`, `save`, `load` for custom pipelines.

`data` is a [N, T] LongTensor of token ids (taken batch_size rows at a time) or an iterable of [B, T] batches.
Command line: `python -m linattn.linearize --help`.
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn

from .convert import ATTENTION_CLASSES, attention_modules, convert, linear_attention_layers
from .saving import FEATURE_MAPS, load, load_feature_maps, save, save_feature_maps
from .training import Data, add_lora, attention_transfer, batches, finetune


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lolcats(model: nn.Module, data: Data, *, feature_dim: Optional[int] = None, window_size: int = 64,
            init_window_factor: float = 0.0, stage1_steps: int = 100, stage1_lr: float = 1e-2,
            stage2_steps: int = 100, stage2_lr: float = 1e-4, lora_r: int = 8, lora_alpha: Optional[int] = None,
            lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"), batch_size: int = 1,
            save_dir: Optional[str] = None, progress: bool = True) -> Tuple[nn.Module, Dict[str, List[float]]]:
    """LoLCATs linearization. Returns (model with LoRA merged, {"attention_transfer": per-step mean layer
    MSE, "finetune": per-step next-token loss}). With save_dir, the trained feature maps are checkpointed
    after stage 1 (feature_maps.safetensors) and the final model is saved there (linattn.linearize.load)."""
    convert(model, "lolcats", feature_dim=feature_dim, window_size=window_size,
            init_window_factor=init_window_factor)
    history = {"attention_transfer": attention_transfer(model, data, stage1_steps, stage1_lr, batch_size, progress)}
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
        save_feature_maps(model, os.path.join(save_dir, FEATURE_MAPS))
    history["finetune"] = []
    if stage2_steps > 0:
        peft_model = add_lora(model, lora_r, lora_alpha, lora_targets)
        history["finetune"] = finetune(peft_model, data, stage2_steps, stage2_lr, batch_size, progress,
                                       desc="LoRA fine-tune")
        model = peft_model.merge_and_unload()
    if save_dir is not None:
        model = save(model, save_dir)
    return model, history


def liger(model: nn.Module, data: Data, *, window_size: int = 64, variant: str = "gla", steps: int = 100,
          lr: float = 1e-4, lora_r: int = 8, lora_alpha: Optional[int] = None,
          lora_targets: Sequence[str] = ("q_proj", "k_proj", "v_proj"), batch_size: int = 1,
          save_dir: Optional[str] = None, progress: bool = True) -> Tuple[nn.Module, Dict[str, List[float]]]:
    """Liger linearization: the attention swap adds no parameter (checked), then LoRA (r=8 on q/k/v by
    default) and next-token fine-tuning. Returns (model with LoRA merged, {"finetune": per-step loss})."""
    before = _count(model)
    convert(model, "liger", window_size=window_size, variant=variant)
    after = _count(model)
    if after != before:
        raise AssertionError(f"Liger conversion changed the parameter count: {before} -> {after}")
    history = {"finetune": []}
    if steps > 0:
        peft_model = add_lora(model, lora_r, lora_alpha, lora_targets)
        history["finetune"] = finetune(peft_model, data, steps, lr, batch_size, progress, desc="LoRA fine-tune")
        model = peft_model.merge_and_unload()
    if save_dir is not None:
        model = save(model, save_dir)
    return model, history


__all__ = ["add_lora", "attention_modules", "attention_transfer", "batches", "convert", "finetune", "liger",
           "linear_attention_layers", "load", "load_feature_maps", "lolcats", "save", "save_feature_maps"]
