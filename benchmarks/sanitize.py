"""Small CUDA workload for compute-sanitizer (memcheck / racecheck / synccheck): every GLA op forward and
backward at odd sizes, varlen with empty sequences, initial states, fp32/fp16/bf16."""
import torch
import torch.nn.functional as F

import linattn


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
    torch.cuda.synchronize()
    print("sanitize workload done")


if __name__ == "__main__":
    main()
