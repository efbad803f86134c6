"""Configurations with the model_type, field names and defaults of fla 0.5.2's GLAConfig, DeltaNetConfig,
GatedDeltaNetConfig and MomConfig, so their config.json files load (`from_pretrained`) and keyword constructions
carry over.

Fields that change no result here (fuse_norm, fuse_swiglu, fuse_cross_entropy, fuse_linear_cross_entropy: fla's
kernel choices for the same math) are kept and ignored. Hybrid softmax-attention layers (`attn`), attention
residuals (`attnres_block_size`), `use_l2warp` and `hidden_act='powlu'` are refused with NotImplementedError
when a model is built, not when a config is read."""
from typing import Any, Dict

from transformers import PretrainedConfig

# Every fla 0.5.2 model config has these (the token-mixer fields are per model below).
_COMMON: Dict[str, Any] = dict(
    hidden_size=2048, hidden_ratio=4, intermediate_size=None, hidden_act="swish", max_position_embeddings=2048,
    norm_eps=1e-6, attn=None, use_cache=True, initializer_range=0.02, fuse_norm=True, fuse_swiglu=True,
    fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False, vocab_size=32000,
    attnres_block_size=None, attn_mode="chunk",
)
# Passed on to PretrainedConfig, with fla's defaults.
_TOKENS: Dict[str, Any] = dict(pad_token_id=None, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


class _FlaConfig(PretrainedConfig):
    defaults = {}  # the model's own fields and its overrides of _COMMON (no annotation: not a dataclass field)

    def __init_subclass__(cls, **kwargs):
        # transformers turns every config class into a dataclass and generates an __init__ for one that has none;
        # the subclasses keep this shared constructor instead.
        if "__init__" not in cls.__dict__:
            cls.__init__ = _FlaConfig.__init__
        super().__init_subclass__(**kwargs)

    def __init__(self, **kwargs):
        for name, default in {**_COMMON, **self.defaults}.items():
            setattr(self, name, kwargs.pop(name, default))
        if self.fuse_cross_entropy and self.fuse_linear_cross_entropy:
            raise ValueError("`fuse_cross_entropy` and `fuse_linear_cross_entropy` cannot be True at the same time.")
        for name, default in _TOKENS.items():
            kwargs.setdefault(name, default)
        super().__init__(**kwargs)


class GLAConfig(_FlaConfig):
    model_type = "gla"
    keys_to_ignore_at_inference = ["past_key_values"]
    defaults = dict(expand_k=0.5, expand_v=1.0, num_hidden_layers=24, num_heads=4, num_kv_heads=None,
                    feature_map=None, use_short_conv=False, conv_size=4, use_output_gate=True, clamp_min=None,
                    elementwise_affine=True, use_gk=True, use_gv=False)


class DeltaNetConfig(_FlaConfig):
    model_type = "delta_net"
    keys_to_ignore_at_inference = ["past_key_values"]
    defaults = dict(expand_k=1.0, expand_v=1.0, use_gate=False, use_short_conv=True, allow_neg_eigval=False,
                    conv_size=4, use_beta=True, use_output_norm=True, num_heads=16, qk_norm="l2",
                    qk_activation="silu", num_hidden_layers=24)


class GatedDeltaNetConfig(_FlaConfig):
    model_type = "gated_deltanet"
    keys_to_ignore_at_inference = ["past_key_values"]
    defaults = dict(expand_v=2.0, use_gate=True, use_short_conv=True, allow_neg_eigval=False, conv_size=4,
                    head_dim=256, num_heads=6, num_v_heads=None, num_hidden_layers=21)


class MomConfig(_FlaConfig):
    model_type = "mom"
    keys_to_ignore_at_inference = ["past_key_values"]
    defaults = dict(conv_size=4, num_heads=4, head_dim=256, expand_v=1.0, use_output_gate=True, use_short_conv=True,
                    num_hidden_layers=24, num_memories=4, topk=2, capacity=1.0, use_layer_wise_balance=True,
                    aux_loss_scale=0.01, shared_mem=True, single_kv_proj=False, mom_backend="gated_deltanet")
