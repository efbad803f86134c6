"""python -m linattn.demo: runs every available linattn op through a layer and reports what it did.

For each layer: a training step (forward + backward) on a random batch, a varlen batch, and step-by-step
decoding with the recurrent state checked against the full forward. Runs on CUDA when a GPU and the CUDA
kernels are available, else on the CPU."""
import argparse
import time

import torch

import linattn
from linattn.layers import DeltaNet, GatedDeltaNet, GatedLinearAttention, LightningAttention, SimpleGatedLinearAttention


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_layer(name, layer, device, dtype, B, T, hidden):
    layer = layer.to(device=device, dtype=dtype)
    x = torch.randn(B, T, hidden, device=device, dtype=dtype, requires_grad=True)
    layer.train()
    _sync(device)
    t0 = time.perf_counter()
    y, _, _ = layer(x)  # fla's (output, attentions, cache) tuple
    y.float().square().mean().backward()
    _sync(device)
    train_ms = (time.perf_counter() - t0) * 1e3
    grad_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())

    # Varlen: two sequences packed into one row give the same outputs as run separately.
    layer.eval()
    with torch.no_grad():
        lens = [T // 3, T - T // 3]
        cu = torch.tensor([0, lens[0], T], device=device)
        packed = layer(x[:1].detach(), cu_seqlens=cu)[0]
        parts = [layer(x[:1, :lens[0]].detach())[0], layer(x[:1, lens[0]:].detach())[0]]
        varlen_err = (packed - torch.cat(parts, 1)).abs().max().item()

        # Decoding: prefill half, then one token at a time through the cache (a StateCache made by the first call).
        full = layer(x.detach())[0]
        half = T // 2
        out, _, cache = layer(x[:, :half].detach(), use_cache=True)
        steps = [out]
        for t in range(half, T):
            o, _, cache = layer(x[:, t:t + 1].detach(), past_key_values=cache, use_cache=True)
            steps.append(o)
        decode_err = (torch.cat(steps, 1) - full).abs().max().item()
    print(f"  {name:<28} train step {train_ms:8.1f} ms  grads finite: {grad_ok}  "
          f"varlen err {varlen_err:.1e}  decode==prefill err {decode_err:.1e}")
    return grad_ok


def run_mom(device, dtype, B, T, hidden, heads):
    """MomAttention: a training step with the load-balancing loss, then prefill + step-by-step decoding."""
    from linattn.layers import MomAttention
    layer = MomAttention(hidden, head_dim=hidden // heads, num_heads=heads, num_memories=4, topk=2,
                         shared_mem=True).to(device=device, dtype=dtype)
    x = torch.randn(B, T, hidden, device=device, dtype=dtype)
    layer.train()
    t0 = time.perf_counter()
    y, _, _, logits = layer(x)
    (y.float().square().mean() + 0.01 * layer.load_balancing_loss(logits)).backward()
    _sync(device)
    train_ms = (time.perf_counter() - t0) * 1e3
    grad_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    layer.eval()
    with torch.no_grad():
        full = layer(x)[0]
        half = T // 2
        out, _, cache, _ = layer(x[:, :half], use_cache=True)
        steps = [out]
        for t in range(half, T):
            o, _, cache, _ = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(o)
        decode_err = (torch.cat(steps, 1) - full).abs().max().item()
    print(f"  {'MomAttention':<28} train step {train_ms:8.1f} ms  grads finite: {grad_ok}  "
          f"decode==prefill err {decode_err:.1e}")
    return grad_ok


def run_linearize(device, steps):
    """Linearizes a small randomly initialised Llama with both methods, then checks cached generation against
    greedy decoding by full recomputation."""
    try:
        import transformers
        import linattn.linearize as L
    except ImportError as e:
        print(f"linearize: skipped ({e}; pip install transformers peft)")
        return True
    if device.type == "cuda" and not torch._C._dispatch_has_kernel_for_dispatch_key(
            "linattn::_lolcats_attention_forward", "CUDA"):
        print("  (sliding-window and LoLCATs CUDA kernels are not written yet: linearizing on the CPU)")
        device = torch.device("cpu")
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    data = torch.randint(0, 256, (8, 128))
    ok = True
    for kind in ("lolcats", "liger"):
        model = transformers.LlamaForCausalLM(cfg).to(device)
        model.generation_config.eos_token_id = None
        t0 = time.perf_counter()
        if kind == "lolcats":
            model, hist = L.lolcats(model, data, window_size=16, stage1_steps=steps, stage2_steps=steps // 4,
                                    batch_size=2, progress=False)
            mse = hist["attention_transfer"]
            what = f"attention-transfer MSE {mse[0]:.3g} -> {mse[-1]:.3g}, "
        else:
            model, hist = L.liger(model, data, window_size=16, steps=steps // 4, batch_size=2, progress=False)
            what = ""
        loss = hist["finetune"]
        secs = time.perf_counter() - t0
        model.eval()
        prompt = data[:2, :20].to(device)
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                                 pad_token_id=0)
            x = prompt
            for _ in range(12):
                x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
        same = torch.equal(out, x)
        ok &= same
        print(f"  linearize.{kind:<8} {secs:6.1f} s  {what}LoRA loss {loss[0]:.3g} -> {loss[-1]:.3g}  "
              f"cached generate == recompute: {same}")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--linearize-steps", type=int, default=40, help="attention-transfer steps (0: skip)")
    args = parser.parse_args(argv)

    use_cuda = torch.cuda.is_available() and linattn.has_cuda_kernels()
    device = torch.device(args.device or ("cuda" if use_cuda else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    print(f"linattn {linattn.__version__} | torch {torch.__version__} | device {device} | dtype {dtype} | "
          f"CUDA kernels built: {linattn.has_cuda_kernels()}")
    print(f"B={args.batch} T={args.seqlen} hidden={args.hidden} heads={args.heads}")
    H, hid = args.heads, args.hidden
    # The layers take fla 0.5.2's constructor keywords (fla checkpoints load into them).
    layers = [
        ("GatedLinearAttention (chunk_gla / fused_recurrent_gla)",
         GatedLinearAttention(hidden_size=hid, num_heads=H)),
        ("SimpleGLA data gate, short convs (chunk_simple_gla)",
         SimpleGatedLinearAttention(hidden_size=hid, num_heads=H)),
        ("Lightning fixed decay (g_gamma)", LightningAttention(hidden_size=hid, num_heads=H)),
        ("DeltaNet (chunk_delta_rule / fused_recurrent_delta_rule)", DeltaNet(hidden_size=hid, num_heads=H)),
        ("GatedDeltaNet, 2x value heads (chunk_gated_delta_rule)",
         GatedDeltaNet(hidden_size=hid, num_heads=H, head_dim=hid // H // 2, num_v_heads=2 * H, expand_v=1)),
    ]
    ok = True
    for name, layer in layers:
        if device.type == "cuda" and "Delta" in name and not torch._C._dispatch_has_kernel_for_dispatch_key(
                "linattn::chunk_gated_delta_rule", "CUDA"):
            print(f"{name}: skipped (delta-rule CUDA kernels not built)")
            continue
        print(name)
        ok &= run_layer(name.split(" ")[0], layer, device, dtype, args.batch, args.seqlen, args.hidden)
    if device.type == "cuda" and not torch._C._dispatch_has_kernel_for_dispatch_key(
            "linattn::chunk_gated_delta_rule", "CUDA"):
        print("MomAttention: skipped (delta-rule CUDA kernels not built)")
    else:
        print("MomAttention (4 memories, top-2, shared memory; mom_route / mom_dispatch / mom_combine)")
        ok &= run_mom(device, dtype, args.batch, args.seqlen, args.hidden, args.heads)
    if args.linearize_steps > 0:
        print("Linearizing a small random Llama (LolcatsAttention, LigerAttention, linattn.linearize)")
        ok &= run_linearize(device, args.linearize_steps)
    print("done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
