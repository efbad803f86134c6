"""fla 0.5.2's causal LMs (GLA, DeltaNet, GatedDeltaNet, MoM) over linattn's layers: <Name>Model (embeddings,
blocks, final norm) and <Name>ForCausalLM (+ lm_head) with fla's module names, so fla checkpoints (state dicts,
`save_pretrained` folders) load as they are.

A block is pre-norm: h = h + attn(attn_norm(h)), h = h + mlp(mlp_norm(h)), the MLP a SwiGLU (gate_proj, up_proj,
down_proj; intermediate size from hidden_ratio as in fla). MoM adds fla's auxiliary load-balancing loss over all
layers' routing (aux_loss_scale) to the loss. fla's fused norms and fused losses compute the same
functions; here they are the plain forms. The loss is fla's: labels shifted left by one inside forward, the last
position ignored, mean cross entropy. Generation goes through transformers' GenerationMixin with its default cache,
which the layers read and write (their states, not fla's Cache contents)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast

from ...layers import DeltaNet, GatedDeltaNet, GatedLinearAttention, MomAttention
from ...layers.modules import RMSNorm
from ...layers.mom import load_balancing_loss
from .configs import DeltaNetConfig, GatedDeltaNetConfig, GLAConfig, MomConfig


def _check_supported(config) -> None:
    unsupported = {"attn": config.attn is not None, "attnres_block_size": config.attnres_block_size is not None,
                   "use_l2warp": bool(config.use_l2warp), "hidden_act": config.hidden_act != "swish",
                   "mom_backend": getattr(config, "mom_backend", "gated_deltanet") != "gated_deltanet"}
    names = [name for name, bad in unsupported.items() if bad]
    if names:
        raise NotImplementedError(f"{type(config).__name__}: {', '.join(names)} (hybrid softmax-attention layers, "
                                  "attention residuals, l2warp, powlu MLPs, MoM backends other than gated_deltanet) "
                                  "are not supported by linattn's models")


class GatedMLP(nn.Module):
    """fla's GatedMLP with hidden_act='swish': down_proj(silu(gate_proj x) * up_proj x)."""

    def __init__(self, hidden_size: int, hidden_ratio: Optional[int] = 4, intermediate_size: Optional[int] = None):
        super().__init__()
        if intermediate_size is None:  # fla: 2/3 of hidden_ratio * hidden, rounded up to a multiple of 256
            intermediate_size = int(hidden_size * (hidden_ratio or 4) * 2 / 3)
            intermediate_size = 256 * ((intermediate_size + 255) // 256)
        self.intermediate_size = intermediate_size
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _mixer(config, layer_idx: int) -> nn.Module:
    """The token mixer fla's block builds from the config (same keywords)."""
    common = dict(mode=config.attn_mode, hidden_size=config.hidden_size, num_heads=config.num_heads,
                  use_short_conv=config.use_short_conv, conv_size=config.conv_size, norm_eps=config.norm_eps,
                  layer_idx=layer_idx)
    if isinstance(config, GLAConfig):
        return GatedLinearAttention(expand_k=config.expand_k, expand_v=config.expand_v,
                                    num_kv_heads=config.num_kv_heads, feature_map=config.feature_map,
                                    use_output_gate=config.use_output_gate, gate_fn=config.hidden_act,
                                    elementwise_affine=config.elementwise_affine, clamp_min=config.clamp_min,
                                    fuse_norm=config.fuse_norm, **common)
    if isinstance(config, DeltaNetConfig):
        return DeltaNet(expand_k=config.expand_k, expand_v=config.expand_v, use_gate=config.use_gate,
                        use_beta=config.use_beta, allow_neg_eigval=config.allow_neg_eigval,
                        use_output_norm=config.use_output_norm, qk_norm=config.qk_norm,
                        qk_activation=config.qk_activation, **common)
    if isinstance(config, MomConfig):
        return MomAttention(expand_v=config.expand_v, head_dim=config.head_dim, use_output_gate=config.use_output_gate,
                            num_memories=config.num_memories, topk=config.topk, capacity=config.capacity,
                            shared_mem=config.shared_mem, single_kv_proj=config.single_kv_proj, **common)
    return GatedDeltaNet(expand_v=config.expand_v, head_dim=config.head_dim, num_v_heads=config.num_v_heads,
                         use_gate=config.use_gate, allow_neg_eigval=config.allow_neg_eigval, **common)


class FlaBlock(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = _mixer(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.hidden_ratio, config.intermediate_size)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs):
        """-> (hidden_states, cache, router logits of a MoM mixer or None)."""
        out = self.attn(self.attn_norm(hidden_states), attention_mask=attention_mask,
                        past_key_values=past_key_values, use_cache=use_cache, **kwargs)
        hidden_states = hidden_states + out[0]
        router_logits = out[3] if len(out) > 3 else None
        return hidden_states + self.mlp(self.mlp_norm(hidden_states)), out[2], router_logits


class FlaPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FlaBlock"]


class FlaModel(FlaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        _check_supported(config)
        self.padding_idx = config.pad_token_id
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(FlaBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, past_key_values=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        # What the layers take from the keywords generation and training loops pass (fla's varlen input).
        mixer_kwargs = {"cu_seqlens": kwargs["cu_seqlens"]} if kwargs.get("cu_seqlens") is not None else {}
        hidden_states = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        all_hidden = () if output_hidden_states else None
        routers = ()
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if self.gradient_checkpointing and self.training:
                hidden_states, past_key_values, router_logits = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, attention_mask, past_key_values, use_cache, **mixer_kwargs)
            else:
                hidden_states, past_key_values, router_logits = layer(hidden_states, attention_mask,
                                                                      past_key_values, use_cache, **mixer_kwargs)
            if router_logits is not None:
                routers += (router_logits,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        routers = routers or None
        if not return_dict:
            return tuple(t for t in (hidden_states, past_key_values, all_hidden, routers) if t is not None)
        return MoeModelOutputWithPast(last_hidden_state=hidden_states, past_key_values=past_key_values,
                                      hidden_states=all_hidden, router_logits=routers)


# transformers 5 names the tied pair; 4.x lists the tied output weight.
_TIED = ({"lm_head.weight": "model.embeddings.weight"} if int(transformers.__version__.split(".")[0]) >= 5
         else ["lm_head.weight"])


class FlaForCausalLM(FlaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = _TIED
    model_class = FlaModel

    def __init__(self, config):
        super().__init__(config)
        self.model = self.model_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, value):
        self.model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, past_key_values=None, labels=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                logits_to_keep: Optional[int] = 0, **kwargs):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                             past_key_values=past_key_values, use_cache=use_cache,
                             output_hidden_states=output_hidden_states, return_dict=True, **kwargs)
        hidden_states = outputs.last_hidden_state
        # fla slices with hidden_states[:, -logits_to_keep:], so 0 keeps every position.
        logits = self.lm_head(hidden_states if logits_to_keep is None else hidden_states[:, -logits_to_keep:])
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            labels = torch.cat([labels[..., 1:], torch.full_like(labels[:, :1], -100)], 1)
            scores = logits.to(torch.promote_types(logits.dtype, torch.float32)).reshape(labels.numel(), -1)
            loss = F.cross_entropy(scores, labels.reshape(-1), ignore_index=-100)
        aux_loss = None
        if labels is not None and outputs.router_logits is not None:
            # fla's MoM: the Mixtral load-balancing loss over every layer's routing, scaled by aux_loss_scale
            aux_loss = load_balancing_loss(outputs.router_logits, self.config.num_memories, self.config.topk,
                                           attention_mask)
            loss = loss + self.config.aux_loss_scale * aux_loss.to(loss.device)
        if not return_dict:
            out = (logits, outputs.past_key_values, outputs.hidden_states, outputs.router_logits)
            out = tuple(t for t in out if t is not None)
            return (loss,) + out if loss is not None else out
        return MoeCausalLMOutputWithPast(loss=loss, aux_loss=aux_loss, logits=logits,
                                         past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states,
                                         router_logits=outputs.router_logits)


def _family(name: str, config_class):
    """<name>Model and <name>ForCausalLM bound to config_class (fla's class names)."""
    model = type(f"{name}Model", (FlaModel,), {"config_class": config_class})
    lm = type(f"{name}ForCausalLM", (FlaForCausalLM,), {"config_class": config_class, "model_class": model})
    return model, lm


GLAModel, GLAForCausalLM = _family("GLA", GLAConfig)
DeltaNetModel, DeltaNetForCausalLM = _family("DeltaNet", DeltaNetConfig)
GatedDeltaNetModel, GatedDeltaNetForCausalLM = _family("GatedDeltaNet", GatedDeltaNetConfig)
MomModel, MomForCausalLM = _family("Mom", MomConfig)
