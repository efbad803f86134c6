"""One module per results section; each exposes run(ctx) -> section dict (see report.py)."""
