"""linattn.fla.models: fla 0.5.2's GLA / DeltaNet / GatedDeltaNet / MoM causal LMs over linattn's layers.

* module names and shapes are fla's (block layout and GatedMLP sizing read off fla 0.5.2's modeling files; the
  token mixers' own names are checked against fla in test_layers_fla.py);
* the forward equals the block recipe spelled out here in float64 (pre-norm residual blocks, RMSNorm, SwiGLU);
* the loss is fla's (labels shifted inside forward; MoM adds aux_loss_scale times the Mixtral load-balancing loss
  over all layers' routing, written out here); greedy generation with the cache equals greedy decoding by
  full recomputation, also for a left-padded batch; save / from_pretrained and the Auto classes round-trip;
* configs take fla's config.json fields; what is not supported raises.
"""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from linattn.fla.models import (DeltaNetConfig, DeltaNetForCausalLM, GatedDeltaNetConfig, GatedDeltaNetForCausalLM,
                                GLAConfig, GLAForCausalLM, MomConfig, MomForCausalLM)

VOCAB = 61
SMALL = dict(hidden_size=32, num_hidden_layers=2, vocab_size=VOCAB, num_heads=2, pad_token_id=0)
FAMILIES = {
    "gla": (GLAConfig, GLAForCausalLM, dict(use_short_conv=True)),
    "delta_net": (DeltaNetConfig, DeltaNetForCausalLM, dict()),
    "gated_deltanet": (GatedDeltaNetConfig, GatedDeltaNetForCausalLM, dict(head_dim=8)),
    "mom": (MomConfig, MomForCausalLM, dict(head_dim=8, num_memories=3, topk=2)),
}


def build(name, **kw):
    config_cls, lm_cls, extra = FAMILIES[name]
    torch.manual_seed(0)
    model = lm_cls(config_cls(**{**SMALL, **extra, **kw})).double().eval()
    with torch.no_grad():  # larger than the 0.02 init, so every part of the block shapes the output
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            elif n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.generation_config.eos_token_id = None
    return model


FLA_DUMP = json.loads((Path(__file__).parent / "data" / "fla_0.5.2_models.json").read_text())


@pytest.mark.parametrize("case", list(FLA_DUMP["cases"]))
def test_fla_configs_build_fla_state_dicts(case):
    """Configs and state dicts written by fla 0.5.2 itself (data/fla_0.5.2_models.json says how): the config
    loads through the Auto classes and the model has fla's keys, in fla's order, with fla's shapes."""
    dump = FLA_DUMP["cases"][case]
    config = transformers.AutoConfig.for_model(**dump["config"])
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert type(model).__module__.startswith("linattn.")
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == dump["state_dict"]


def test_fla_config_defaults_and_mlp_size():
    # fla 0.5.2: GatedMLP intermediate = 256 * ceil(int(hidden * ratio * 2 / 3) / 256); 2048 -> 5632, 32 -> 256.
    assert build("gla").model.layers[0].mlp.gate_proj.weight.shape == (256, 32)
    from linattn.fla.models.modeling import GatedMLP
    assert GatedMLP(2048).intermediate_size == 5632
    assert GatedMLP(32, intermediate_size=40).down_proj.weight.shape == (32, 40)
    c = GatedDeltaNetConfig()
    assert (c.hidden_size, c.head_dim, c.num_heads, c.expand_v, c.num_hidden_layers, c.norm_eps) == \
        (2048, 256, 6, 2.0, 21, 1e-6)
    assert (c.bos_token_id, c.eos_token_id, c.tie_word_embeddings, c.use_cache) == (1, 2, False, True)
    c = GLAConfig()
    assert (c.expand_k, c.expand_v, c.num_heads, c.num_hidden_layers, c.use_short_conv) == (0.5, 1.0, 4, 24, False)
    c = DeltaNetConfig()
    assert (c.num_heads, c.qk_norm, c.qk_activation, c.use_beta, c.use_short_conv) == (16, "l2", "silu", True, True)
    c = MomConfig()
    assert (c.num_memories, c.topk, c.aux_loss_scale, c.shared_mem, c.head_dim, c.num_heads, c.expand_v) == \
        (4, 2, 0.01, True, 256, 4, 1.0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_module_names_follow_fla(name):
    model = build(name)
    keys = list(model.state_dict())
    attn = [f"model.layers.0.attn.{k}" for k in model.model.layers[0].attn.state_dict()]
    want = (["model.embeddings.weight", "model.layers.0.attn_norm.weight"] + attn +
            ["model.layers.0.mlp_norm.weight"] +
            [f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")])
    assert keys[:len(want)] == want
    assert keys[-2:] == ["model.norm.weight", "lm_head.weight"]
    assert sum(k.startswith("model.layers.") and k.endswith(".attn_norm.weight") for k in keys) == 2


def rms(x, w, eps):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w


@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_and_loss_follow_the_block_recipe(name):
    model = build(name)
    ids = torch.randint(1, VOCAB, (2, 70))
    out = model(ids, labels=ids)
    eps = model.config.norm_eps
    h = model.model.embeddings.weight[ids]
    routing = []
    for block in model.model.layers:
        mixed = block.attn(rms(h, block.attn_norm.weight, eps))
        h = h + mixed[0]
        routing += [mixed[3]] if name == "mom" else []
        mlp = block.mlp
        x = rms(h, block.mlp_norm.weight, eps)
        h = h + (F.silu(x @ mlp.gate_proj.weight.t()) * (x @ mlp.up_proj.weight.t())) @ mlp.down_proj.weight.t()
    logits = rms(h, model.model.norm.weight, eps) @ model.lm_head.weight.t()
    torch.testing.assert_close(out.logits, logits, atol=1e-10, rtol=1e-10)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    if name == "mom":  # E * sum_e (fraction of tokens with e in their top-k) * (mean probability of e)
        probs = torch.cat(routing).softmax(-1)
        E = model.config.num_memories
        chosen = F.one_hot(probs.topk(model.config.topk, -1).indices, E).sum(1).double()
        aux = E * (chosen.mean(0) * probs.mean(0)).sum()
        torch.testing.assert_close(out.aux_loss, aux, atol=1e-12, rtol=1e-12)
        loss = loss + model.config.aux_loss_scale * aux
    torch.testing.assert_close(out.loss, loss, atol=1e-12, rtol=1e-12)
    assert model(ids, logits_to_keep=1).logits.shape == (2, 1, VOCAB)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def greedy_by_recompute(model, ids, steps):
    for _ in range(steps):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


@pytest.mark.parametrize("name", list(FAMILIES))
def test_generate_with_cache_equals_recompute(name):
    model = build(name)
    prompt = torch.randint(1, VOCAB, (2, 9))
    got = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert torch.equal(got, greedy_by_recompute(model, prompt, 8))


def test_left_padded_generation_equals_each_row_alone():
    model = build("gated_deltanet")
    rows = [torch.randint(1, VOCAB, (1, n)) for n in (9, 6)]
    prompt = torch.cat([rows[0], torch.cat([torch.zeros(1, 3, dtype=torch.long), rows[1]], 1)])
    mask = (torch.arange(9) >= torch.tensor([[0], [3]])).long()
    got = model.generate(prompt, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for b, row in enumerate(rows):
        assert torch.equal(got[b, -6:], greedy_by_recompute(model, row, 6)[0, -6:])


def test_save_and_auto_class_roundtrip(tmp_path):
    model = build("gla", tie_word_embeddings=True)
    assert model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gla"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float64)
    assert isinstance(loaded, GLAForCausalLM)
    ids = torch.randint(1, VOCAB, (1, 20))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_fla_config_json_loads(tmp_path):
    # the fields fla 0.5.2 writes, fused-kernel switches included (they select kernels, not math)
    fields = {"model_type": "gated_deltanet", "architectures": ["GatedDeltaNetForCausalLM"], "attn": None,
              "attn_mode": "chunk", "conv_size": 4, "expand_v": 2, "fuse_cross_entropy": True, "fuse_norm": True,
              "fuse_swiglu": True, "head_dim": 8, "hidden_act": "swish", "hidden_ratio": 4, "hidden_size": 32,
              "initializer_range": 0.02, "intermediate_size": None, "max_position_embeddings": 2048,
              "norm_eps": 1e-6, "num_heads": 2, "num_hidden_layers": 1, "use_cache": True, "use_gate": True,
              "use_short_conv": True, "vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, GatedDeltaNetConfig) and config.head_dim == 8 and config.fuse_swiglu
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert isinstance(model, GatedDeltaNetForCausalLM)
    assert torch.isfinite(model(torch.randint(0, VOCAB, (1, 5))).logits).all()


def test_unsupported_configurations_raise():
    with pytest.raises(NotImplementedError, match="attn"):
        GLAForCausalLM(GLAConfig(**SMALL, attn={"layers": [1], "num_heads": 2}))
    with pytest.raises(NotImplementedError, match="hidden_act"):
        DeltaNetForCausalLM(DeltaNetConfig(**SMALL, hidden_act="powlu"))
    with pytest.raises(NotImplementedError, match="mom_backend"):
        MomForCausalLM(MomConfig(**SMALL, head_dim=8, mom_backend="gla"))
    with pytest.raises(ValueError, match="cannot be True at the same time"):
        GLAConfig(fuse_cross_entropy=True, fuse_linear_cross_entropy=True)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model = build("gated_deltanet").train()
    ids = torch.randint(1, VOCAB, (2, 70))

    def loss_and_grads():
        model.zero_grad()
        loss = model(ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    plain = loss_and_grads()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.model.gradient_checkpointing
    checkpointed = loss_and_grads()
    assert torch.equal(plain[0], checkpointed[0])
    for a, b in zip(plain[1], checkpointed[1]):
        assert torch.equal(a, b)
