"""Hardware ceilings measured in the same run: dense bf16 matmul throughput (tensor cores) and device-to-device
copy bandwidth. Chunked-op efficiency and the decoding floor are expressed against these, not datasheet
numbers, so clocks, power limits and the exact SKU are accounted for."""
import torch

from common import NA, is_num, show
from report import cell

TITLE = "Ceilings (measured)"


def matmul_tflops(ctx, n: int) -> float:
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype)
    ms = ctx.time(lambda: torch.matmul(a, b))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_gbs(ctx, nbytes: int) -> float:
    src = torch.randn(nbytes // 4, device=ctx.device)
    dst = torch.empty_like(src)
    ms = ctx.time(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9  # read + write


def run(ctx) -> dict:
    n = 256 if ctx.dry_run else 8192  # 8192^3 bf16: ~1.1 TFLOP, long enough to reach steady clocks
    nbytes = (8 if ctx.dry_run else 2048) * 2**20  # far above L2, so this is HBM, not cache
    tflops = ctx.attempt(matmul_tflops, ctx, n)
    gbs = ctx.attempt(copy_gbs, ctx, nbytes)
    if is_num(tflops):
        ctx.ceilings["matmul_tflops"] = tflops
    if is_num(gbs):
        ctx.ceilings["copy_gbs"] = gbs
    dtype = str(ctx.dtype).replace("torch.", "")
    rows = [[f"{dtype} matmul {n}x{n}x{n}", cell(tflops, ".4g"), "TFLOP/s"],
            [f"device-to-device copy of {nbytes >> 20} MiB (read + write counted)", cell(gbs, ".4g"), "GB/s"]]
    ctx.log(f"ceilings: matmul {show(tflops, '.4g')} TFLOP/s, copy {show(gbs, '.4g')} GB/s")
    return {"name": "ceilings", "title": TITLE,
            "intro": ["Chunked-op efficiency and decoding floors below use these two numbers."],
            "tables": [{"caption": "", "columns": ["measurement", "value", "unit"], "rows": rows}],
            "data": {k: (v if not isinstance(v, NA) else None) for k, v in
                     (("matmul_tflops", tflops), ("copy_gbs", gbs))}}
