"""nn.Module layers built on the linattn ops."""
