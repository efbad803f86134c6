"""The training loops of the linearization workflow: attention transfer (stage 1) and next-token fine-tuning
with LoRA (stage 2)."""
import itertools
import warnings
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..layers.lolcats import LolcatsAttention
from .convert import linear_attention_layers

Data = Union[torch.Tensor, Iterable[torch.Tensor]]


def batches(data: Data, batch_size: int = 1) -> Iterator[torch.Tensor]:
    """Endless stream of token batches [B, T]: rows of a [N, T] tensor taken batch_size at a time, or the
    tensors of an iterable (a list is cycled)."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.shape[0] == 0:
            raise ValueError(f"token data must be a non-empty [N, T] tensor, got shape {tuple(data.shape)}")
        n = data.shape[0]
        for start in itertools.cycle(range(0, n, batch_size)):
            yield data[start:start + batch_size]
    else:
        items = data if isinstance(data, Sequence) else list(data)
        if not items:
            raise ValueError("token data is empty")
        yield from itertools.cycle(items)


def _progress(steps: int, desc: str, enabled: bool):
    if enabled:
        try:
            from tqdm.auto import tqdm
            return tqdm(range(steps), desc=desc)
        except ImportError:
            pass
    return range(steps)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def set_trainable(model: nn.Module, names: Sequence[str]) -> List[nn.Parameter]:
    """Freezes every parameter but those whose name contains one of `names`; returns the trainable ones."""
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(any(s in n for s in names))
        if p.requires_grad:
            params.append(p)
    if not params:
        raise ValueError(f"no parameter matches {list(names)}")
    return params


def attention_transfer(model: nn.Module, data: Data, steps: int, lr: float = 1e-2, batch_size: int = 1,
                       progress: bool = True) -> List[float]:
    """Stage 1: trains only the feature maps and window factors so that every LolcatsAttention matches the
    softmax attention it replaced. Each layer outputs the teacher's attention, so it is fed the teacher's
    inputs, and the loss is the sum over layers of the per-layer MSE. Returns the loss per step (the mean
    per-layer MSE)."""
    layers = linear_attention_layers(model, LolcatsAttention)
    if not layers:
        raise ValueError("attention_transfer needs a model converted with kind='lolcats'")
    params = set_trainable(model, ("feature_map_q", "feature_map_k", "window_factor"))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model
    was_training, dev = model.training, _device(model)
    model.train()
    history = []
    stream = batches(data, batch_size)
    try:
        for layer in layers:
            layer.attention_transfer = True
        bar = _progress(steps, "attention transfer", progress)
        for _ in bar:
            ids = next(stream).to(dev)
            body(input_ids=ids, use_cache=False)
            loss = torch.stack([layer.transfer_loss for layer in layers]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item() / len(layers))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(mse=f"{history[-1]:.4g}")
    finally:
        for layer in layers:
            layer.attention_transfer, layer.transfer_loss = False, None
        model.train(was_training)
    return history


def add_lora(model: nn.Module, r: int = 8, alpha: Optional[int] = None,
             targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"), dropout: float = 0.0):
    """Wraps the model with peft LoRA adapters on the given projections (every other parameter frozen)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("LoRA fine-tuning needs peft: pip install peft") from e
    config = LoraConfig(r=r, lora_alpha=2 * r if alpha is None else alpha, target_modules=list(targets),
                        lora_dropout=dropout, bias="none")
    with warnings.catch_warnings():
        # peft calls a transformers method that transformers has deprecated; nothing for the user to change.
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)


def finetune(model: nn.Module, data: Data, steps: int, lr: float = 1e-4, batch_size: int = 1,
             progress: bool = True, desc: str = "fine-tune") -> List[float]:
    """Next-token prediction on the token batches, training whatever parameters require grad. Returns the
    loss per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    was_training, dev = model.training, _device(model)
    model.train()
    history = []
    stream = batches(data, batch_size)
    try:
        bar = _progress(steps, desc, progress)
        for _ in bar:
            ids = next(stream).to(dev)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(loss.item())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{history[-1]:.4g}")
    finally:
        model.train(was_training)
    return history
