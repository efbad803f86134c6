"""Python entry points of the torch.ops.linattn operators (fla-compatible signatures)."""
