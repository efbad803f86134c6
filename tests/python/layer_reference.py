"""Float64 references of the fla-compatible layers (GatedLinearAttention, SimpleGatedLinearAttention,
LightningAttention, DeltaNet, GatedDeltaNet), written out token by token from a layer's weights: projections, the
short convolution as an explicit tap sum, activations, norms, gates and the recurrences of linattn.reference.
They read only parameters and configuration attributes, never the layer's forward code."""
import torch
import torch.nn.functional as F

from linattn.layers import DeltaNet, GatedDeltaNet, LightningAttention, SimpleGatedLinearAttention
from linattn.reference import delta_rule_recurrence, gla_recurrence


def silu(x):
    return x * torch.sigmoid(x)


FEATURE_MAPS = {  # fla's ACT2FN entries, written out
    "relu": lambda x: x.clamp_min(0),
    "sigmoid": torch.sigmoid,
    "logsigmoid": lambda x: -torch.log1p(torch.exp(-x)),
    "silu": silu,
    "swish": silu,
    "sqrelu": lambda x: x.clamp_min(0) ** 2,
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.79788456 * (x + 0.044715 * x ** 3))),
}


def conv_ref(x, conv, act):
    """Causal depthwise convolution, token by token: y_t = b + sum_d w[:, W-1-d] x_{t-d} (zero before the start)."""
    W = conv.weight.shape[-1]
    rows = []
    for t in range(x.shape[0]):
        acc = conv.bias if conv.bias is not None else torch.zeros_like(x[0])
        for d in range(min(W, t + 1)):
            acc = acc + conv.weight[:, 0, W - 1 - d] * x[t - d]
        rows.append(acc)
    y = torch.stack(rows)
    return silu(y) if act else y


def rms(o, weight, eps):
    y = o / torch.sqrt(o.square().mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def lin(x, layer):
    y = x @ layer.weight.t()
    return y if layer.bias is None else y + layer.bias


def gla_family_ref(layer, x, m=None):
    """One sequence x [L, hidden] -> [L, hidden] for GatedLinearAttention / SimpleGatedLinearAttention /
    LightningAttention. m [L]: simple GLA's padding mask (zeroes projections before the convolutions and v)."""
    L, H, G = x.shape[0], layer.num_heads, layer.num_kv_groups
    Dk, Dv = layer.head_k_dim, layer.head_v_dim
    simple = isinstance(layer, SimpleGatedLinearAttention)
    q, k, v = lin(x, layer.q_proj), lin(x, layer.k_proj), lin(x, layer.v_proj)
    if layer.use_short_conv:
        if m is not None:
            q, k, v = q * m[:, None], k * m[:, None], v * m[:, None]
        q, k, v = (conv_ref(t, c, True) for t, c in zip((q, k, v), (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)))
    if layer.feature_map is not None:
        q, k = FEATURE_MAPS[layer.feature_map](q), FEATURE_MAPS[layer.feature_map](k)
    if m is not None:
        v = v * m[:, None]
    kv_head = [h // G for h in range(H)]
    q = q.view(L, H, Dk)
    k = k.view(L, H // G, Dk)[:, kv_head]
    v = v.view(L, H // G, Dv)[:, kv_head]
    if isinstance(layer, LightningAttention):
        g, g_gamma = None, layer.g_gamma
    elif simple:
        g, g_gamma = F.logsigmoid(lin(x, layer.gk_proj)) / layer.gate_logit_normalizer, None
    else:
        g = F.logsigmoid(lin(lin(x, layer.gk_proj[0]), layer.gk_proj[1])) / layer.gate_logit_normalizer
        if layer.clamp_min is not None:
            g = g.clamp_min(layer.clamp_min)
        g, g_gamma = g.view(L, H // G, Dk)[:, kv_head], None
    o, _ = gla_recurrence(q[None], k[None], v[None], None if g is None else g[None], g_gamma)
    o = o[0]
    gated = simple or layer.use_output_gate
    if layer.fuse_norm_and_gate:
        gate = lin(x, layer.g_proj).view(L, H, Dv)
        y = (rms(o, layer.g_norm_swish_gate.weight, layer.norm_eps) * silu(gate)).reshape(L, -1)
    else:
        y = rms(o, layer.g_norm.weight, layer.norm_eps).reshape(L, -1)
        if gated:
            y = y * FEATURE_MAPS[layer.gate_fn_name](lin(x, layer.g_proj))
    return lin(y, layer.o_proj)


def delta_family_ref(layer, x, m=None):
    """One sequence x [L, hidden] -> [L, hidden] for DeltaNet / GatedDeltaNet."""
    L, H, HV = x.shape[0], layer.num_heads, layer.num_v_heads
    gated = isinstance(layer, GatedDeltaNet)
    qk_act = "silu" if gated else layer.qk_activation
    q, k, v = lin(x, layer.q_proj), lin(x, layer.k_proj), lin(x, layer.v_proj)
    if layer.use_short_conv:
        q, k = conv_ref(q, layer.q_conv1d, qk_act == "silu"), conv_ref(k, layer.k_conv1d, qk_act == "silu")
        v = conv_ref(v, layer.v_conv1d, True)
    else:
        if qk_act == "silu":
            q, k = silu(q), silu(k)
        v = silu(v)
    q, k, v = q.view(L, H, -1), k.view(L, H, -1), v.view(L, HV, -1)
    if qk_act == "relu":
        q, k = q.clamp_min(0), k.clamp_min(0)
    elif qk_act == "elu":
        q, k = (torch.where(t > 0, t + 1, torch.exp(t)) for t in (q, k))
    l2 = gated or layer.qk_norm == "l2"
    if not l2:
        q, k = q / q.sum(-1, keepdim=True), k / k.sum(-1, keepdim=True)
    beta = torch.sigmoid(lin(x, layer.b_proj)) if gated or layer.use_beta else torch.ones(L, H, dtype=x.dtype)
    if layer.allow_neg_eigval:
        beta = 2 * beta
    g = -torch.exp(layer.A_log) * F.softplus(lin(x, layer.a_proj) + layer.dt_bias) if gated else None
    o, _ = delta_rule_recurrence(q[None], k[None], v[None], beta[None], None if g is None else g[None],
                                 use_qk_l2norm_in_kernel=l2)
    o = rms(o[0], layer.o_norm.weight, layer.norm_eps)
    if layer.use_gate:
        o = o * silu(lin(x, layer.g_proj).view(L, HV, -1))
    return lin(o.reshape(L, -1), layer.o_proj)


def reference(layer, x, attention_mask=None, cu_seqlens=None):
    """The layer's output by the reference: per batch row, per cu_seqlens span, and with padding removed (GLA,
    DeltaNet, GatedDeltaNet: zeros at padded positions) or applied as simple GLA applies it."""
    ref = delta_family_ref if isinstance(layer, (DeltaNet, GatedDeltaNet)) else gla_family_ref
    if cu_seqlens is not None:
        cu = cu_seqlens.tolist()
        return torch.cat([ref(layer, x[0, a:b]) for a, b in zip(cu, cu[1:])])[None]
    rows = []
    for b in range(x.shape[0]):
        if attention_mask is None:
            rows.append(ref(layer, x[b]))
            continue
        m = attention_mask[b, -x.shape[1]:].to(x.dtype)
        if isinstance(layer, SimpleGatedLinearAttention):
            rows.append(ref(layer, x[b], m))
        else:
            keep = m.nonzero().squeeze(1)
            row = torch.zeros_like(x[b])
            row = row.index_copy(0, keep, ref(layer, x[b, keep]))
            rows.append(row)
    return torch.stack(rows)


def randomize(layer):
    """Larger-than-default random weights so every part of the layer shows in the comparisons."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "conv1d" in name:
                p.normal_(0, 0.5)
            elif "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name in ("A_log", "dt_bias"):
                p.normal_(0, 0.5)
            elif p.dim() == 2:
                p.normal_(0, 0.3)
            else:
                p.normal_(0, 0.5)
    return layer
