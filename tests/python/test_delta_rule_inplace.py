"""fused_recurrent_delta_rule_inplace and inplace_final_state=True: the kernel reads the initial state from the
caller's buffer and writes the final state over it (no separate state, no copy). Checked against the float64
recurrence: step-by-step decoding, varlen with grouped value heads, l2norm; the buffer really is the one
written (same storage, version bumped); autograd is refused; opcheck and torch.compile; bad state arguments."""
import pytest
import torch
import torch.nn.functional as F

import linattn
from linattn.reference import delta_rule_recurrence
from helpers import assert_close

ops = torch.ops.linattn


def make(B, T, H, HV, K, V, dtype=torch.float64, device="cpu"):
    q = torch.randn(B, T, H, K, dtype=dtype, device=device)
    k = F.normalize(torch.randn(B, T, H, K, dtype=dtype, device=device), dim=-1)
    v = torch.randn(B, T, HV, V, dtype=dtype, device=device)
    beta = torch.rand(B, T, HV, dtype=dtype, device=device)
    g = F.logsigmoid(torch.randn(B, T, HV, dtype=dtype, device=device) + 2)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    h0 = torch.randn(B, HV, K, V, dtype=state_dtype, device=device)
    return q, k, v, g, beta, h0


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_decoding_loop_writes_the_callers_buffer(gated, dtype, tol):
    q, k, v, g, beta, h0 = make(2, 9, 2, 4, 7, 5, dtype=dtype)
    state = h0.clone()
    ptr, outs = state.data_ptr(), []
    for t in range(q.shape[1]):
        step = [x[:, t:t + 1] for x in (q, k, v, g, beta)]
        version = state._version
        o = ops.fused_recurrent_delta_rule_inplace(step[0], step[1], step[2], step[3] if gated else None, step[4],
                                                   state)
        assert state.data_ptr() == ptr and state._version > version
        outs.append(o)
    ro, rh = delta_rule_recurrence(q.double(), k.double(), v.double(), beta.double(),
                                   g.double() if gated else None, initial_state=h0.double(),
                                   output_final_state=True)
    assert_close(torch.cat(outs, 1), ro, atol=tol, rtol=tol, name="o")
    assert_close(state, rh, atol=tol, rtol=tol, name="state")


def test_varlen_grouped_heads_l2norm_whole_prompt():
    q, k, v, g, beta, _ = make(1, 23, 2, 4, 6, 3)
    k = torch.randn_like(k) * 3  # unnormalised: the in-kernel L2 norm matters
    cu = torch.tensor([0, 5, 5, 17, 23])
    state = torch.randn(4, 4, 6, 3, dtype=torch.float64)
    h0 = state.clone()
    o = ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, state, 0.7, True, cu)
    eo, eh = linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale=0.7, initial_state=h0,
                                                      output_final_state=True, use_qk_l2norm_in_kernel=True,
                                                      cu_seqlens=cu)
    assert_close(o, eo, atol=1e-12, rtol=1e-12, name="o")
    assert_close(state, eh, atol=1e-12, rtol=1e-12, name="state")
    # the empty sequence keeps its state bit for bit
    assert torch.equal(state[1], h0[1])


def test_wrapper_uses_the_inplace_kernel_without_autograd_and_copies_with_it():
    q, k, v, g, beta, h0 = make(1, 4, 1, 1, 5, 6)
    expected_o, expected_h = delta_rule_recurrence(q, k, v, beta, g, initial_state=h0, output_final_state=True)
    # no autograd: the kernel writes the buffer (the version moves once, by the op itself)
    state = h0.clone()
    version = state._version
    o, s = linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state, inplace_final_state=True)
    assert s is state and state._version == version + 1
    assert_close(o, expected_o, atol=1e-12, rtol=1e-12)
    assert_close(state, expected_h, atol=1e-12, rtol=1e-12)
    # with autograd: the differentiable op runs, the state is copied in, and gradients flow to q
    state = h0.clone()
    qg = q.clone().requires_grad_()
    o, s = linattn.fused_recurrent_gated_delta_rule(qg, k, v, g, beta, initial_state=state, inplace_final_state=True)
    assert s is state
    assert_close(state, expected_h, atol=1e-12, rtol=1e-12)
    (dq,) = torch.autograd.grad(o.sum(), qg)
    assert dq.abs().sum() > 0
    # a state of another dtype is refused by the kernel path, so the wrapper converts through the copy path
    state32 = h0.float()
    linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=state32, inplace_final_state=True)
    assert_close(state32, expected_h, atol=1e-5, rtol=1e-5)


def test_autograd_is_refused():
    q, k, v, g, beta, h0 = make(1, 3, 1, 1, 4, 4)
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.fused_recurrent_delta_rule_inplace(q.requires_grad_(), k, v, g, beta, h0)
    with torch.no_grad():
        ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0)


def test_bad_state():
    q, k, v, g, beta, h0 = make(1, 3, 1, 2, 4, 5)
    with pytest.raises(RuntimeError, match="state must be Double for Double inputs"):
        ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0.float())
    with pytest.raises(RuntimeError, match="state must be contiguous"):
        ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0.transpose(2, 3).contiguous().transpose(2, 3))
    with pytest.raises(RuntimeError, match="initial_state must have shape"):
        ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, h0[:, :1].contiguous())


def test_opcheck_and_compile():
    q, k, v, g, beta, h0 = make(1, 5, 1, 2, 4, 3)
    torch.library.opcheck(ops.fused_recurrent_delta_rule_inplace.default, (q, k, v, g, beta, h0.clone()),
                          dict(use_qk_l2norm_in_kernel=True))
    torch.library.opcheck(ops.fused_recurrent_delta_rule_inplace.default, (q, k, v, None, beta, h0.clone()))

    def step(q, k, v, g, beta, state):
        o = ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, state)
        return o * 2

    eager_state, compiled_state = h0.clone(), h0.clone()
    expected = step(q, k, v, g, beta, eager_state)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(q, k, v, g, beta, compiled_state)
    assert_close(got, expected, atol=0, rtol=0, name="o")
    assert_close(compiled_state, eager_state, atol=0, rtol=0, name="state")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_inplace_matches_reference(dtype):
    q, k, v, g, beta, h0 = make(3, 1, 2, 4, 100, 60, dtype=dtype, device="cuda")
    state = h0.clone()
    o = ops.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, state)
    ro, rh = delta_rule_recurrence(q.double(), k.double(), v.double(), beta.double(), g.double(),
                                   initial_state=h0.double(), output_final_state=True)
    eo, eh = linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    # in place and out of place run the same kernel: identical results
    assert torch.equal(o, eo) and torch.equal(state, eh)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert_close(o, ro, atol=tol, rtol=tol, name="o")
    assert_close(state, rh, atol=1e-4, rtol=1e-4, name="state")
