"""Input factories shared by the tests."""
import torch
import torch.nn.functional as F


def gla_inputs(B, T, H, K, V, dtype=torch.float64, device="cpu", gate="key", strong=False, h0=False):
    """Random q, k, v and log gates; gate is 'key' [B,T,H,K], 'scalar' [B,T,H], or None.

    strong=True draws log decays down to about -20 per step."""
    q = torch.randn(B, T, H, K, dtype=dtype, device=device)
    k = torch.randn(B, T, H, K, dtype=dtype, device=device)
    v = torch.randn(B, T, H, V, dtype=dtype, device=device)
    shape = {"key": (B, T, H, K), "scalar": (B, T, H), None: None}[gate]
    g = None
    if shape is not None:
        logits = torch.randn(shape, dtype=dtype, device=device) * (8.0 if strong else 1.0)
        g = F.logsigmoid(logits + (-6.0 if strong else 2.0))
        if strong:
            g = g.clamp(min=-20.0)
    init = torch.randn(B, H, K, V, dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                       device=device) if h0 else None
    return q, k, v, g, init


def assert_close(actual, expected, atol, rtol, name=""):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
