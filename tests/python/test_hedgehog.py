"""hedgehog_feature_map against its definition, gradients, opcheck, compile, bad input."""
import pytest
import torch

import linattn
from helpers import assert_close


def definition(x, w):
    out = []
    for h in range(x.shape[2]):
        proj = x[:, :, h] @ w[h]
        out.append(torch.cat([proj.softmax(-1), (-proj).softmax(-1)], -1))
    return torch.stack(out, 2)


def test_matches_definition_and_gradcheck():
    x = torch.randn(2, 9, 3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    phi = linattn.hedgehog_feature_map(x, w)
    assert phi.shape == (2, 9, 3, 8)
    assert_close(phi, definition(x, w), atol=1e-14, rtol=1e-14)
    assert_close(phi.sum(-1), torch.full((2, 9, 3), 2.0, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(linattn.hedgehog_feature_map, (x, w))


def test_opcheck_and_compile():
    x = torch.randn(2, 9, 3, 5, requires_grad=True)
    w = torch.randn(3, 5, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.linattn.hedgehog_feature_map.default, (x, w))
    compiled = torch.compile(linattn.hedgehog_feature_map, fullgraph=True)
    assert_close(compiled(x, w), linattn.hedgehog_feature_map(x, w), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("w_shape", [(2, 5, 4), (3, 6, 4), (3, 5)])
def test_weight_shape_mismatch(w_shape):
    with pytest.raises(RuntimeError, match=r"weight must have shape \[H, D, F\]"):
        linattn.hedgehog_feature_map(torch.randn(1, 4, 3, 5), torch.randn(*w_shape))
