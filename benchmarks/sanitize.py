"""Small CUDA workload for compute-sanitizer (memcheck / racecheck / synccheck): every GLA, delta-rule,
sliding-window, LoLCATs and MoM dispatch / combine op forward and backward at odd sizes, varlen with empty
sequences, initial states, grouped value heads, windows shorter and longer than a tile, fp32/fp16/bf16, and the
tensor-core chunk_simple_gla forward and backward, chunk_gla forward (per-key gates), sliding-window forward and
chunk_(gated_)delta_rule forward and backward states pass (fp16/bf16), and liger_attention's fused path."""
import torch
import torch.nn.functional as F

import linattn


def delta_rule_workload(dev, dtype):
    cases = (((1, 70, 2, 4, 60, 100), None), ((2, 33, 1, 1, 256, 32), None), ((1, 1, 3, 3, 7, 5), None),
             ((1, 130, 2, 2, 100, 60), torch.tensor([0, 0, 65, 66, 130], device=dev)))
    for (B, T, H, HV, K, V), cu in cases:
        q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
        v = torch.randn(B, T, HV, V, device=dev, dtype=dtype).requires_grad_()
        beta = torch.rand(B, T, HV, device=dev, dtype=dtype).requires_grad_()
        g = F.logsigmoid(torch.randn(B, T, HV, device=dev)).to(dtype).requires_grad_()
        N = B if cu is None else cu.numel() - 1
        h0 = torch.randn(N, HV, K, V, device=dev).requires_grad_()
        kw = dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)
        for out in (linattn.chunk_delta_rule(q, k, v, beta, **kw),
                    linattn.fused_recurrent_delta_rule(q, k, v, beta, **kw),
                    linattn.chunk_gated_delta_rule(q, k, v, g, beta, **kw),
                    linattn.fused_recurrent_gated_delta_rule(q, k, v, g, beta, **kw)):
            (out[0].float().sum() + out[1].sum()).backward()
        with torch.no_grad():  # decoding with one state buffer: the kernel reads and overwrites it
            state = h0.detach().clone()
            torch.ops.linattn.fused_recurrent_delta_rule_inplace(q, k, v, g, beta, state, None, True, cu)


def window_workload(dev, dtype):
    for (B, T, H, D, V, Fd), w in (((1, 70, 2, 60, 100, 7), 17), ((2, 33, 1, 256, 32, 256), 64),
                                   ((1, 1, 3, 7, 5, 3), 4), ((1, 200, 1, 32, 48, 16), 1), ((1, 150, 2, 16, 8, 4), 300)):
        q, k = (torch.randn(B, T, H, D, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
        v = torch.randn(B, T, H, V, device=dev, dtype=dtype).requires_grad_()
        fq, fk = (F.softmax(torch.randn(B, T, H, Fd, device=dev), -1).to(dtype).requires_grad_() for _ in range(2))
        wf = torch.randn(H, device=dev, dtype=dtype).requires_grad_()
        linattn.sliding_window_attention(q, k, v, w).float().sum().backward()
        linattn.lolcats_attention(q, k, v, fq, fk, wf, w).float().sum().backward()
    cu = torch.tensor([0, 0, 65, 66, 130], device=dev)
    q, k = (torch.randn(1, 130, 2, 40, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
    v = torch.randn(1, 130, 2, 24, device=dev, dtype=dtype).requires_grad_()
    linattn.sliding_window_attention(q, k, v, 33, cu_seqlens=cu).float().sum().backward()


def tensor_core_gla_workload(dev, dtype):
    """chunk_simple_gla in half precision takes the tensor-core forward and backward."""
    if dtype == torch.float32:
        return
    cu = torch.tensor([0, 65, 66, 196, 196, 213], device=dev)
    cases = (((1, 213, 2, 100, 60), cu, True), ((1, 70, 1, 256, 256), None, False), ((2, 1, 1, 7, 7), None, True),
             ((1, 130, 1, 128, 33), None, True))
    for (B, T, H, K, V), cu_seqlens, gated in cases:
        q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype) / K ** 0.25 for _ in range(2))
        v = torch.randn(B, T, H, V, device=dev, dtype=dtype)
        g = F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dtype) if gated else None
        gamma = torch.full((H,), -0.05, device=dev) if gated else None
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        h0 = torch.randn(N, H, K, V, device=dev)
        leaves = [t.requires_grad_() for t in (q, k, v, h0) + ((g, gamma) if gated else ())]
        o, ht = linattn.chunk_simple_gla(q, k, v, g, gamma, initial_state=h0, output_final_state=True,
                                         cu_seqlens=cu_seqlens)
        # backward with dg (K > 64: per-K-tile partials and their reduction), dh0 and empty sequences
        (o.float().sum() + ht.sum()).backward()
        assert all(t.grad is not None for t in leaves)


def tensor_core_gla_vector_workload(dev, dtype):
    """chunk_gla (per-key gates) in half precision takes the tensor-core forward and backward:
    odd K / V, K and V of 256 (four key slabs, four V tiles), varlen with empty sequences, strong decay."""
    if dtype == torch.float32:
        return
    cu = torch.tensor([0, 0, 65, 66, 196, 196, 213], device=dev)
    cases = (((1, 213, 2, 100, 60), cu, False), ((1, 70, 1, 256, 256), None, False), ((2, 1, 1, 3, 3), None, False),
             ((1, 200, 1, 60, 33), None, True))
    for (B, T, H, K, V), cu_seqlens, strong in cases:
        q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype) / K ** 0.25 for _ in range(2))
        v = torch.randn(B, T, H, V, device=dev, dtype=dtype)
        g = (-20 * torch.rand(B, T, H, K, device=dev)) if strong else F.logsigmoid(torch.randn(B, T, H, K, device=dev))
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        h0 = torch.randn(N, H, K, V, device=dev)
        leaves = [t.requires_grad_() for t in (q, k, v, g.to(dtype), h0)]
        o, ht = linattn.chunk_gla(*leaves[:4], initial_state=leaves[4], output_final_state=True,
                                  cu_seqlens=cu_seqlens)
        assert torch.isfinite(o).all() and torch.isfinite(ht).all()
        (o.float().sum() + ht.sum()).backward()
        assert all(torch.isfinite(t.grad).all() for t in leaves)


def tensor_core_delta_workload(dev, dtype):
    """chunk_(gated_)delta_rule in half precision takes the tensor-core forward and, in the backward, the
    tensor-core states pass (passes 2 and 3 stay SIMT): varlen with empty sequences, grouped value heads, odd and
    the largest head dims, T = 1, strong decay, initial and final states with their gradients."""
    if dtype == torch.float32:
        return
    cu = torch.tensor([0, 65, 66, 196, 196, 213], device=dev)
    cases = (((1, 213, 1, 2, 100, 60), cu), ((1, 70, 1, 1, 256, 256), None), ((2, 1, 1, 2, 7, 7), None),
             ((1, 130, 2, 4, 3, 33), None))
    for (B, T, H, HV, K, V), cu_seqlens in cases:
        q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype) for _ in range(2))
        v = torch.randn(B, T, HV, V, device=dev, dtype=dtype)
        beta = torch.rand(B, T, HV, device=dev, dtype=dtype)
        g = (-20 * torch.rand(B, T, HV, device=dev) ** 4).to(dtype)
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        h0 = torch.randn(N, HV, K, V, device=dev)
        for t in (q, k, v, g, beta, h0):
            t.requires_grad_()
        kw = dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu_seqlens)
        for o, ht in (linattn.chunk_delta_rule(q, k, v, beta, **kw),
                      linattn.chunk_gated_delta_rule(q, k, v, g, beta, **kw)):
            (o.float().sum() + ht.sum()).backward()


def tensor_core_swa_workload(dev, dtype):
    """sliding_window_attention in half precision takes the tensor-core forward and backward: 64- and 32-row tiles
    (the backward's 64-row tiles need padded K + V <= 80), odd head dims, windows 1 / around the tile / >= T,
    varlen with empty sequences."""
    if dtype == torch.float32:
        return
    cu = torch.tensor([0, 65, 66, 196, 196, 213], device=dev)
    cases = (((1, 213, 2, 100, 60), cu, 64), ((1, 130, 1, 256, 256), None, 65), ((2, 1, 1, 3, 7), None, 1),
             ((1, 200, 2, 128, 128), None, 17), ((1, 70, 1, 64, 64), None, 1000), ((2, 200, 2, 16, 33), None, 50))
    for (B, T, H, K, V), cu_seqlens, w in cases:
        q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
        v = torch.randn(B, T, H, V, device=dev, dtype=dtype).requires_grad_()
        linattn.sliding_window_attention(q, k, v, w, cu_seqlens=cu_seqlens).float().sum().backward()


def liger_workload(dev, dtype):
    """liger_attention's fused CUDA path (feature-map softmax pair kernels, the GLA forward mixing the window
    output into its output write, do_scale in the GLA and window backwards): per-key and per-head gates, odd and
    the largest head dims, T = 1, initial and final states with their gradients, weights other than 0.5."""
    for (B, T, H, D, V), gate, w in (((1, 130, 2, 60, 100), "key", 17), ((2, 70, 1, 256, 256), "scalar", 64),
                                     ((3, 1, 2, 5, 3), "key", 1), ((1, 65, 3, 33, 7), "scalar", 1000)):
        q, k, q_rot, k_rot = (torch.randn(B, T, H, D, device=dev, dtype=dtype) for _ in range(4))
        v = torch.randn(B, T, H, V, device=dev, dtype=dtype)
        g = (F.logsigmoid(torch.randn((B, T, H, D) if gate == "key" else (B, T, H), device=dev)) / 16).to(dtype)
        h0 = torch.randn(B, H, D, V, device=dev)
        leaves = [t.requires_grad_() for t in (q, k, v, g, q_rot, k_rot, h0)]
        o, ht = linattn.liger_attention(*leaves[:6], window_size=w, initial_state=h0, output_final_state=True,
                                        softmax_weight=0.3, linear_weight=0.8)
        (o.float().sum() + ht.sum()).backward()
        assert all(torch.isfinite(t.grad).all() for t in leaves)


def mom_workload(dev, dtype):
    """MoM dispatch / combine forward and backward: several CTAs with several chunks, batch boundaries inside a
    chunk, empty memories, a memory listed twice by one token, T = 1, bf16 weights."""
    for B, T, k, E, rows in ((3, 700, 2, 5, (37,)), (2, 40, 8, 64, (2, 3)), (5, 1, 3, 4, (6,)), (1, 9, 40, 40, (4,))):
        idx = torch.randint(0, max(E - 1, 1), (B, T, k), device=dev)
        if k > 1:
            idx[..., 1] = idx[..., 0]
        x = torch.randn(B, T, *rows, device=dev, dtype=dtype).requires_grad_()
        w = torch.rand(B, T, k, device=dev, dtype=torch.bfloat16).requires_grad_()
        xs, cu, si = linattn.mom_dispatch(x, idx, E)
        linattn.mom_combine(xs * 2, w, idx, si, E).float().sum().backward()


def main():
    dev = "cuda"
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for (B, T, H, K, V) in ((1, 70, 2, 60, 100), (2, 33, 1, 256, 32), (1, 1, 3, 7, 5)):
            q, k = (torch.randn(B, T, H, K, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
            v = torch.randn(B, T, H, V, device=dev, dtype=dtype).requires_grad_()
            g = F.logsigmoid(torch.randn(B, T, H, K, device=dev)).to(dtype).requires_grad_()
            gs = F.logsigmoid(torch.randn(B, T, H, device=dev)).to(dtype).requires_grad_()
            h0 = torch.randn(B, H, K, V, device=dev).requires_grad_()
            for out in (linattn.chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True),
                        linattn.fused_recurrent_gla(q, k, v, g, initial_state=h0, output_final_state=True),
                        linattn.chunk_simple_gla(q, k, v, gs, torch.full((H,), -0.1, device=dev),
                                                 initial_state=h0, output_final_state=True),
                        linattn.fused_recurrent_simple_gla(q, k, v, gs, initial_state=h0, output_final_state=True)):
                (out[0].float().sum() + out[1].sum()).backward()
        cu = torch.tensor([0, 0, 65, 66, 130], device=dev)
        q, k = (torch.randn(1, 130, 2, 100, device=dev, dtype=dtype).requires_grad_() for _ in range(2))
        v = torch.randn(1, 130, 2, 60, device=dev, dtype=dtype).requires_grad_()
        g = F.logsigmoid(torch.randn(1, 130, 2, 100, device=dev)).to(dtype).requires_grad_()
        o, ht = linattn.chunk_gla(q, k, v, g, output_final_state=True, cu_seqlens=cu)
        (o.float().sum() + ht.sum()).backward()
        delta_rule_workload(dev, dtype)
        window_workload(dev, dtype)
        tensor_core_gla_workload(dev, dtype)
        tensor_core_gla_vector_workload(dev, dtype)
        tensor_core_delta_workload(dev, dtype)
        tensor_core_swa_workload(dev, dtype)
        liger_workload(dev, dtype)
        mom_workload(dev, dtype)
    torch.cuda.synchronize()
    print("sanitize workload done")


if __name__ == "__main__":
    main()
