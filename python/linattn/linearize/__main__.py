"""python -m linattn.linearize {lolcats,liger} MODEL TEXT --out DIR: linearize a Hugging Face causal LM on the
text of a file and save it (reload with linattn.linearize.load(DIR))."""
import argparse
import sys

import torch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m linattn.linearize", description=__doc__)
    p.add_argument("method", choices=["lolcats", "liger"])
    p.add_argument("model", help="model name or folder for transformers' from_pretrained (Llama, Mistral, Qwen2)")
    p.add_argument("text", help="a UTF-8 text file to train on")
    p.add_argument("--out", required=True, help="folder to save the linearized model and tokenizer to")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--window-size", type=int, default=64)
    p.add_argument("--feature-dim", type=int, default=None, help="lolcats: Hedgehog feature size (default head dim)")
    p.add_argument("--stage1-steps", type=int, default=100, help="lolcats: attention-transfer steps")
    p.add_argument("--stage1-lr", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=100, help="LoRA fine-tuning steps (lolcats stage 2, liger)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--variant", choices=["gla", "pooled"], default="gla", help="liger gate variant")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--no-progress", action="store_true")
    return p


def tokenize_file(tokenizer, path: str, seq_len: int) -> torch.Tensor:
    """The file's tokens cut into [N, seq_len] rows (the tail shorter than seq_len is dropped)."""
    with open(path, encoding="utf-8") as f:
        ids = tokenizer(f.read(), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    n = ids.numel() // seq_len
    if n == 0:
        raise SystemExit(f"{path} has {ids.numel()} tokens, fewer than --seq-len {seq_len}")
    return ids[:n * seq_len].view(n, seq_len)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import liger, lolcats
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = tokenize_file(tokenizer, args.text, args.seq_len)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(args.device)
    print(f"linearize: {args.method} on {data.shape[0]} sequences of {args.seq_len} tokens, device {args.device}")
    common = dict(window_size=args.window_size, lora_r=args.lora_r, batch_size=args.batch_size,
                  save_dir=args.out, progress=not args.no_progress)
    if args.method == "lolcats":
        _, history = lolcats(model, data, feature_dim=args.feature_dim, stage1_steps=args.stage1_steps,
                             stage1_lr=args.stage1_lr, stage2_steps=args.steps, stage2_lr=args.lr, **common)
    else:
        _, history = liger(model, data, variant=args.variant, steps=args.steps, lr=args.lr, **common)
    tokenizer.save_pretrained(args.out)
    for stage, losses in history.items():
        if losses:
            print(f"{stage}: loss {losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} steps")
    print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
