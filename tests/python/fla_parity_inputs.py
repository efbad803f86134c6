"""Inputs, loss weights and fingerprints shared by the fla 0.5.2 parity recording and test_fla_parity.py."""
import torch


def det(*shape, seed):
    """Deterministic values in [-1, 1) from integer hashing (no RNG: identical on every torch version)."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 2654435761 + (seed + 1) * 40503 + 12345) % (1 << 32)
    h = (h * 1103515245 + 12345) % (1 << 31)
    h = (h ^ (h >> 13)) * 1274126177 % (1 << 31)
    return (h.double() / (1 << 30) - 1.0).view(*shape)


B, T, H, K, V = 2, 67, 2, 8, 8
CU = [0, 30, 31, 67]


def cases():
    """(name, fla module, function, tensors (float64), keyword arguments)."""
    def qkv(b=B, hv=H, seed=0):
        return dict(q=det(b, T, H, K, seed=seed), k=det(b, T, H, K, seed=seed + 1), v=det(b, T, hv, V, seed=seed + 2))

    def gate(*shape, seed, scale=1.0):
        return -det(*shape, seed=seed).abs() * scale

    def unit(*shape, seed):
        return det(*shape, seed=seed) * 0.5 + 0.5
    cu = torch.tensor(CU)
    return [
        ("chunk_gla", "gla", "chunk_gla", {**qkv(), "g": gate(B, T, H, K, seed=5, scale=0.5),
                                            "initial_state": det(B, H, K, V, seed=6)}, dict(output_final_state=True)),
        ("chunk_gla_varlen", "gla", "chunk_gla", {**qkv(1, seed=10), "g": gate(1, T, H, K, seed=15),
                                                   "initial_state": det(3, H, K, V, seed=16), "cu_seqlens": cu},
         dict(output_final_state=True, scale=0.3)),
        ("fused_recurrent_gla", "gla", "fused_recurrent_gla", {**qkv(seed=20), "gk": gate(B, T, H, K, seed=25),
                                                               "initial_state": det(B, H, K, V, seed=26)},
         dict(output_final_state=True)),
        ("chunk_simple_gla", "simple_gla", "chunk_simple_gla", {**qkv(seed=30), "g": gate(B, T, H, seed=35),
                                                                "initial_state": det(B, H, K, V, seed=36)},
         dict(output_final_state=True)),
        ("chunk_simple_gla_gamma", "simple_gla", "chunk_simple_gla", {**qkv(seed=40), "g_gamma": gate(H, seed=45)},
         dict(output_final_state=True)),
        ("fused_recurrent_simple_gla", "simple_gla", "fused_recurrent_simple_gla",
         {**qkv(seed=50), "g": gate(B, T, H, seed=55)}, dict(output_final_state=True)),
        ("fused_recurrent_delta_rule_l2", "delta_rule", "fused_recurrent_delta_rule",
         {**qkv(seed=60), "beta": unit(B, T, H, seed=65), "initial_state": det(B, H, K, V, seed=66) * 0.1},
         dict(output_final_state=True, use_qk_l2norm_in_kernel=True)),
        ("fused_recurrent_gated_delta_rule", "gated_delta_rule", "fused_recurrent_gated_delta_rule",
         {**qkv(hv=2 * H, seed=70), "g": gate(B, T, 2 * H, seed=75), "beta": unit(B, T, 2 * H, seed=76),
          "initial_state": det(B, 2 * H, K, V, seed=77) * 0.1},
         dict(output_final_state=True, use_qk_l2norm_in_kernel=True)),
        ("chunk_retention", "retention", "chunk_retention", qkv(seed=80), dict(output_final_state=True)),
        # positive features, as the normaliser assumes (q . z far from 0)
        ("chunk_linear_attn_normalize", "linear_attn", "chunk_linear_attn",
         {n: (t.abs() if n in "qk" else t) for n, t in qkv(seed=90).items()}, dict(normalize=True)),
    ]


def weights(t, j):
    """The loss weights of output j (deterministic)."""
    return det(*t.shape, seed=500 + j)


def probe(shape, name, j):
    """The j-th fixed deterministic tensor that fingerprints the tensor called name."""
    return det(*shape, seed=1000 + sum(ord(c) for c in name) + j)


def probes(t, name):
    """Four projections of t onto fixed deterministic tensors: a compact, version-independent fingerprint."""
    return [float((t.double() * probe(t.shape, name, j)).sum()) for j in range(4)]


# Layers and models: (name, fla class path, linattn class path, constructor keywords, train mode, T). T <= 64 in
# eval mode puts the delta-rule layers on fla's recurrent kernels (its chunked delta kernels do not run on the
# Triton interpreter); the GLA layers run fla's chunked kernels.
LAYER_CASES = [
    ("gla_layer", "fla.layers.GatedLinearAttention", "linattn.fla.layers.GatedLinearAttention",
     dict(hidden_size=32, num_heads=2), True, 67),
    ("gla_layer_gqa_conv_relu", "fla.layers.GatedLinearAttention", "linattn.fla.layers.GatedLinearAttention",
     dict(hidden_size=32, num_heads=4, num_kv_heads=2, use_short_conv=True, feature_map="relu", fuse_norm=False),
     True, 67),
    ("simple_gla_layer", "fla.layers.simple_gla.SimpleGatedLinearAttention",
     "linattn.fla.layers.SimpleGatedLinearAttention", dict(hidden_size=32, num_heads=2), True, 67),
    ("delta_net_layer", "fla.layers.DeltaNet", "linattn.fla.layers.DeltaNet",
     dict(hidden_size=32, num_heads=2, use_gate=True), False, 45),
    ("gated_deltanet_layer_gva", "fla.layers.GatedDeltaNet", "linattn.fla.layers.GatedDeltaNet",
     dict(hidden_size=32, num_heads=2, head_dim=8, num_v_heads=4), False, 45),
    ("mom_layer", "fla.layers.MomAttention", "linattn.fla.layers.MomAttention",
     dict(hidden_size=32, head_dim=8, num_heads=2, num_memories=3, topk=2), False, 45),
]
# fla 0.5.2's MomAttention orders each memory's tokens with a non-stable argsort (fla/layers/mom.py, transform), so
# its recurrence may see them out of time order (it does on the CPU); the recording makes that sort stable for the
# MoM cases, which is the token order the layer means (and linattn's).
STABLE_SORT_CASES = ("mom_layer", "mom_model")


def fill_parameters(module):
    """Deterministic parameters by name (norm weights around 1), the same in fla's and linattn's modules."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            seed = 2000 + sum((i + 1) * ord(c) for i, c in enumerate(name)) % 100000
            value = det(*p.shape, seed=seed)
            if p.dim() == 1 and "norm" in name:
                value = 1.0 + 0.2 * value
            elif p.dim() == 1:
                value = 0.2 * value
            else:
                value = 0.3 * value
            p.copy_(value.to(p.dtype))


def import_path(path):
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


# Causal LMs: (name, config class name, constructor keywords, train mode, T), built from fla.models /
# linattn.fla.models with the config below. fla's fused norm / SwiGLU / cross-entropy kernels assert CUDA tensors, so
# the recording runs with them off (they select kernels for the same functions).
MODEL_COMMON = dict(hidden_size=32, num_hidden_layers=2, vocab_size=61, fuse_norm=False, fuse_swiglu=False,
                    fuse_cross_entropy=False)
MODEL_CASES = [
    ("gla_model", "GLA", dict(num_heads=2), True, 67),
    ("delta_net_model", "DeltaNet", dict(num_heads=2), False, 45),
    ("gated_deltanet_model", "GatedDeltaNet", dict(num_heads=2, head_dim=8), False, 45),
    ("mom_model", "Mom", dict(num_heads=2, head_dim=8, num_memories=3, topk=2), False, 45),
]


def token_ids(T):
    return ((det(2, T, seed=4000) + 1) * 30).long().clamp(0, 60)
