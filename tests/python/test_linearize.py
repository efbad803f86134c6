"""LolcatsAttention / LigerAttention as drop-in Llama-family attentions and the linattn.linearize workflow, on
small randomly initialised Llama, Mistral and Qwen2 models on the CPU."""
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

import linattn.linearize as L  # noqa: E402
from linattn.layers import LigerAttention, LolcatsAttention, StateCache  # noqa: E402
from linattn.linearize.__main__ import main as cli_main  # noqa: E402
from helpers import assert_close  # noqa: E402

VOCAB = 96


def tiny(family="llama", dtype=torch.float64, heads=4, kv_heads=2):
    cfg_cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
               "qwen2": transformers.Qwen2Config}[family]
    cfg = cfg_cls(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    # Llama's init draws weights with std 0.02; larger weights make attention peaked enough to test.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "proj" in n:
                p.mul_(6.0)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def clone(model):
    twin = transformers.AutoModelForCausalLM.from_config(model.config).to(model.dtype).eval()
    twin.load_state_dict(model.state_dict())
    twin.generation_config.eos_token_id, twin.generation_config.pad_token_id = None, 0
    return twin


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_window_covering_the_sequence_gives_the_pretrained_model(family):
    # With w >= T the hybrid has no linear part, so it is exactly the softmax attention it replaced; this
    # checks projections, rotary, grouped heads and scale against the transformers implementation.
    model = tiny(family)
    ids = torch.randint(0, VOCAB, (2, 19))
    ref = model(ids).logits
    lol = L.convert(clone(model), "lolcats", window_size=32)
    assert_close(lol(ids).logits, ref, atol=1e-10, rtol=1e-10, name="lolcats")
    lig = L.convert(clone(model), "liger", window_size=32)
    for layer in L.linear_attention_layers(lig):
        layer.softmax_weight, layer.linear_weight = 1.0, 0.0
    assert_close(lig(ids).logits, ref, atol=1e-10, rtol=1e-10, name="liger")


def test_feature_maps_start_from_the_identity_slice_and_liger_adds_no_parameters():
    model = tiny()
    n = sum(p.numel() for p in model.parameters())
    lol = L.convert(clone(model), "lolcats", feature_dim=5, window_size=4)
    layer = lol.model.layers[0].self_attn
    assert isinstance(layer, LolcatsAttention)
    assert sum(p.numel() for p in lol.parameters()) == n + 2 * (2 * 4 * 12 * 5 + 4)
    x = torch.randn(2, 3, 4, 12, dtype=torch.float64)
    phi = torch.ops.linattn.hedgehog_feature_map(x, layer.feature_map_q)
    assert_close(phi, torch.cat([x[..., :5].softmax(-1), (-x[..., :5]).softmax(-1)], -1), atol=1e-14, rtol=0)
    lig = L.convert(clone(model), "liger")
    assert sum(p.numel() for p in lig.parameters()) == n
    assert lig.model.layers[1].self_attn.q_proj is not None and lig.config.linattn["kind"] == "liger"


KINDS = [("lolcats", dict(window_size=5, feature_dim=6)), ("liger", dict(window_size=5)),
         ("liger", dict(window_size=3, variant="pooled"))]


@pytest.mark.parametrize("kind,kwargs", KINDS)
def test_model_decode_step_by_step_equals_full_forward(kind, kwargs):
    model = L.convert(tiny(), kind, **kwargs)
    ids = torch.randint(0, VOCAB, (2, 21))
    full = model(ids).logits
    out = model(ids[:, :8], use_cache=True)
    pkv, logits = out.past_key_values, [out.logits]
    step = 3 if kind == "liger" else 1
    for t in range(8, 21, step):
        out = model(ids[:, t:t + step], past_key_values=pkv, use_cache=True)
        pkv = out.past_key_values
        logits.append(out.logits)
    assert_close(torch.cat(logits, 1), full, atol=1e-10, rtol=1e-10)
    assert pkv.get_seq_length() == 21
    # Constant-size cache: the window keeps w-1 tokens whatever the length.
    assert pkv.layers[0].linattn_state[0].shape[1] == kwargs["window_size"] - 1


@pytest.mark.parametrize("kind,kwargs", KINDS)
def test_layer_with_state_cache_decodes_like_the_full_forward(kind, kwargs):
    model = tiny()
    attn = L.ATTENTION_CLASSES[kind](model.model.layers[0].self_attn, **kwargs)
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    pos = torch.arange(17).unsqueeze(0)
    cos, sin = model.model.rotary_emb(x, pos)
    full, _ = attn(x, (cos, sin))
    cache = StateCache()
    outs = [attn(x[:, :6], (cos[:, :6], sin[:, :6]), past_key_values=cache)[0]]
    for t in range(6, 17):
        outs.append(attn(x[:, t:t + 1], (cos[:, t:t + 1], sin[:, t:t + 1]), past_key_values=cache)[0])
    assert_close(torch.cat(outs, 1), full, atol=1e-10, rtol=1e-10)
    assert cache.get_seq_length(0) == 17
    beam = torch.tensor([1, 1])
    cache.reorder_cache(beam)
    assert torch.equal(cache.states[0][0][0][0], cache.states[0][0][0][1])


@pytest.mark.parametrize("kind", ["lolcats", "liger"])
def test_generate_equals_greedy_recompute(kind):
    model = L.convert(tiny(), kind, window_size=4)
    ids = torch.randint(0, VOCAB, (2, 6))
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=9, do_sample=False)
    x = ids
    for _ in range(9):
        x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, x)


def test_lolcats_workflow_reduces_transfer_loss_trains_only_lora_in_stage2_and_reloads(tmp_path):
    torch.manual_seed(1)
    model = tiny(dtype=torch.float32)
    data = torch.randint(0, VOCAB, (6, 40))
    model, hist = L.lolcats(model, data, window_size=8, feature_dim=8, stage1_steps=40, stage1_lr=2e-2,
                            stage2_steps=6, stage2_lr=1e-3, batch_size=2, save_dir=str(tmp_path), progress=False)
    mse = hist["attention_transfer"]
    assert len(mse) == 40 and sum(mse[-5:]) < 0.7 * sum(mse[:5]), mse
    assert len(hist["finetune"]) == 6 and all(torch.isfinite(torch.tensor(hist["finetune"])))
    # Stage 2 leaves the feature maps as stage 1 checkpointed them, and LoRA (merged) moved the projections.
    saved = dict(model.named_parameters())
    fresh = L.convert(tiny(dtype=torch.float32), "lolcats", window_size=8, feature_dim=8)
    L.load_feature_maps(fresh, str(tmp_path / L.FEATURE_MAPS))
    for n, p in fresh.named_parameters():
        if "feature_map" in n or "window_factor" in n:
            assert torch.equal(p, saved[n]), n
    assert not any("lora" in n for n in saved)
    reloaded = L.load(str(tmp_path)).eval()
    model.eval()
    assert isinstance(reloaded.model.layers[0].self_attn, LolcatsAttention)
    assert_close(reloaded(data[:2]).logits, model(data[:2]).logits, atol=0, rtol=0)


def test_liger_workflow_keeps_parameter_count_and_fine_tunes(tmp_path):
    torch.manual_seed(2)
    model = tiny(dtype=torch.float32)
    n = sum(p.numel() for p in model.parameters())
    data = torch.randint(0, VOCAB, (1, 32)).repeat(2, 1)
    model, hist = L.liger(model, data, window_size=8, steps=12, lr=1e-2, batch_size=2, save_dir=str(tmp_path),
                          progress=False)
    assert sum(p.numel() for p in model.parameters()) == n
    assert hist["finetune"][-1] < hist["finetune"][0]
    reloaded = L.load(str(tmp_path)).eval()
    assert isinstance(reloaded.model.layers[1].self_attn, LigerAttention)
    assert_close(reloaded(data[:1]).logits, model.eval()(data[:1]).logits, atol=0, rtol=0)
    # No added parameters: the folder is a plain checkpoint of the original architecture.
    plain, info = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    half = L.load(str(tmp_path), dtype=torch.bfloat16)
    assert half.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_command_line(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = [f"w{i}" for i in range(VOCAB - 1)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    src = tmp_path / "model"
    model = tiny(dtype=torch.float32)
    model.save_pretrained(src)
    fast.save_pretrained(src)
    g = torch.Generator().manual_seed(3)
    text = tmp_path / "train.txt"
    text.write_text(" ".join(words[i] for i in torch.randint(0, len(words), (200,), generator=g).tolist()))
    out = tmp_path / "out"
    assert cli_main(["lolcats", str(src), str(text), "--out", str(out), "--seq-len", "24", "--window-size", "4",
                     "--feature-dim", "4", "--stage1-steps", "3", "--steps", "2", "--no-progress"]) == 0
    assert os.path.exists(out / "tokenizer.json")
    lin = L.load(str(out))
    assert isinstance(lin.model.layers[0].self_attn, LolcatsAttention)
    with pytest.raises(SystemExit):
        cli_main(["liger", str(src), str(text), "--out", str(out), "--seq-len", "100000"])


def test_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match="kind must be one of"):
        L.convert(model, "performer")
    with pytest.raises(ValueError, match="window_size must be >= 1"):
        L.convert(clone(model), "lolcats", window_size=0)
    lol = L.convert(clone(model), "lolcats")
    with pytest.raises(ValueError, match="already converted"):
        L.convert(lol, "liger")
    with pytest.raises(ValueError, match="no Llama-family attention"):
        L.convert(torch.nn.Sequential(torch.nn.Linear(2, 2)), "liger")
    with pytest.raises(ValueError, match="needs a model converted with kind='lolcats'"):
        L.attention_transfer(L.convert(clone(model), "liger"), torch.zeros(1, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="variant must be"):
        LigerAttention(model.model.layers[0].self_attn, variant="mamba")
    with pytest.raises(ValueError, match=r"non-empty \[N, T\] tensor"):
        next(L.batches(torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="needs position_embeddings"):
        lol.model.layers[0].self_attn(torch.randn(1, 3, 48, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["lolcats", "liger"])
def test_layer_compiles_without_graph_breaks(kind):
    model = tiny(dtype=torch.float32)
    attn = L.ATTENTION_CLASSES[kind](model.model.layers[0].self_attn, window_size=8)
    x = torch.randn(2, 37, 48)
    cos, sin = model.model.rotary_emb(x, torch.arange(37).unsqueeze(0))

    def f(x):
        return attn(x, (cos, sin))[0]

    xs = [x.clone().requires_grad_() for _ in range(2)]
    eager = f(xs[0])
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(xs[1])
    assert_close(compiled, eager, atol=1e-6, rtol=1e-6)
    w = torch.randn_like(eager)
    (eager * w).sum().backward()
    (compiled * w).sum().backward()
    assert_close(xs[1].grad, xs[0].grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager"])
def test_left_padding_is_refused_and_right_padding_is_harmless(attn_impl):
    model = tiny()
    model.config._attn_implementation = attn_impl
    model = L.convert(model, "lolcats", window_size=4)
    ids = torch.randint(1, VOCAB, (2, 9))
    right = torch.ones_like(ids)
    right[0, 6:] = 0
    out = model(ids, attention_mask=right).logits
    assert_close(out[0, :6], model(ids[:1, :6]).logits[0], atol=1e-10, rtol=1e-10)
    left = torch.ones_like(ids)
    left[1, :2] = 0
    with pytest.raises(ValueError, match="left padding"):
        model(ids, attention_mask=left)


@pytest.mark.parametrize("kind", ["lolcats", "liger"])
def test_half_precision_model_on_cpu_computes_attention_in_float32(kind):
    model = tiny(dtype=torch.float32)
    ids = torch.randint(0, VOCAB, (2, 15))
    ref = L.convert(clone(model), kind, window_size=4)(ids).logits
    half = L.convert(clone(model).to(torch.bfloat16), kind, window_size=4)
    out = half(ids).logits
    assert out.dtype == torch.bfloat16
    # bf16 weights and activations elsewhere in the model: compare at bf16 resolution.
    assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    pre = half(ids[:, :9], use_cache=True)
    step = half(ids[:, 9:], past_key_values=pre.past_key_values, use_cache=True).logits
    assert_close(step.float(), out[:, 9:].float(), atol=2e-2, rtol=2e-2)
