"""The MoM dispatch / combine CUDA kernels (ops/mom/cuda) on the CPU emulator of tests/emulator, compared bit for
bit with the CPU kernels' definition: packed rows, cu_seqlens, sort_index, the combine, the backward of dispatch
and dy_sorted exactly; dweights (a dot product whose summation order differs) within float tolerance. Cases:
ties (many tokens on one memory), empty memories, topk = E, a memory listed twice by one token, B > 1 with batch
boundaries inside a chunk, several CTAs with several chunks each, odd and multi-dim rows, T = 1, fp32 / fp16 /
bf16 rows and weights. Shares the worker machinery of test_cuda_emulated.py; a pass means "validated on the
CPU emulator", never "validated on GPU"."""
import os
import re
import subprocess
import sys

import pytest
import torch

from test_cuda_emulated import ASAN, EMULATOR, ROOT, _asan_env, _seed, _unavailable

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16

# (id, spec): B, T, k, E, row shape, max_blocks (stands in for 2 * SMs), indices pattern, dtypes.
CASES = [
    ("mom-b2t7-k2-d5", dict(B=2, T=7, k=2, E=4, rows=(5,), blocks=3)),
    ("mom-b3t50-k3-d37", dict(B=3, T=50, k=3, E=5, rows=(37,), blocks=2)),
    ("mom-t300-k2-chunks", dict(B=1, T=300, k=2, E=3, rows=(3,), blocks=2)),
    ("mom-b4t100-chunks-batches", dict(B=4, T=100, k=2, E=8, rows=(5,), blocks=2)),
    ("mom-b2t40-k8-e64", dict(B=2, T=40, k=8, E=64, rows=(2, 3), blocks=4)),
    ("mom-topk-eq-e40", dict(B=1, T=9, k=40, E=40, rows=(4,), blocks=2, pattern="perm")),
    ("mom-dup-slots", dict(B=2, T=20, k=4, E=3, rows=(33,), blocks=3, pattern="dup")),
    ("mom-one-memory", dict(B=2, T=33, k=1, E=6, rows=(7,), blocks=2, pattern="one")),
    ("mom-t1-b5", dict(B=5, T=1, k=3, E=4, rows=(6,), blocks=2)),
    ("mom-rowless", dict(B=2, T=3, k=2, E=3, rows=(), blocks=1)),
    ("mom-fp16", dict(B=2, T=45, k=2, E=5, rows=(35,), blocks=3, dtype=F16, wdtype=F32)),
    ("mom-bf16", dict(B=1, T=70, k=3, E=7, rows=(9,), blocks=2, dtype=BF16, wdtype=BF16)),
    ("mom-fp16-w16-dup", dict(B=3, T=11, k=5, E=4, rows=(40,), blocks=4, dtype=F16, wdtype=F16, pattern="dup")),
]


def _indices(s):
    B, T, k, E = s["B"], s["T"], s["k"], s["E"]
    pattern = s.get("pattern", "random")
    if pattern == "perm":  # every token lists every memory once, in its own order
        return torch.stack([torch.randperm(E)[:k] for _ in range(B * T)]).view(B, T, k)
    if pattern == "one":  # ties: every token on memory 2, the others empty
        return torch.full((B, T, k), 2, dtype=torch.long)
    idx = torch.randint(0, E, (B, T, k))
    if pattern == "dup":  # slots 0 and 1 name the same memory, and memory E-1 stays empty
        idx = torch.randint(0, E - 1, (B, T, k))
        idx[..., 1] = idx[..., 0]
    return idx


def _make(s):
    dtype, wdtype = s.get("dtype", F32), s.get("wdtype", F32)
    B, T, k = s["B"], s["T"], s["k"]
    rows = tuple(s["rows"])
    return dict(x=torch.randn(B, T, *rows).to(dtype), indices=_indices(s), E=s["E"], max_blocks=s["blocks"],
                y_sorted=torch.randn(B * T * k, *rows).to(dtype), dx_sorted=torch.randn(B * T * k, *rows).to(dtype),
                weights=torch.rand(B, T, k).to(wdtype), dy=torch.randn(B, T, *rows).to(dtype))


# ----------------------------------------------------------------- the CPU kernels' definition (ops/mom/mom_cpu.cpp)

def _order(idx):
    key = (idx * idx.shape[0] + torch.arange(idx.shape[0]).view(-1, 1, 1)).reshape(-1)
    return torch.sort(key, stable=True).indices


def _acc(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _sum_rows(rows, w, si, tokens):
    flat = rows.reshape(rows.shape[0], -1).to(_acc(rows))
    if w is not None:
        flat = flat * w.to(_acc(rows)).unsqueeze(1)
    return torch.zeros(tokens, flat.shape[1], dtype=flat.dtype).index_add_(0, si, flat)


def reference(x):
    idx, E = x["indices"], x["E"]
    B, T, k = idx.shape
    order = _order(idx)
    si = order // k
    key = (idx * B + torch.arange(B).view(-1, 1, 1)).reshape(-1)
    counts = torch.zeros(B * E, dtype=torch.long).index_add(0, key, torch.ones_like(key))
    cu = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    xs = x["x"].reshape(B * T, -1).index_select(0, si).view(B * T * k, *x["x"].shape[2:])
    w = x["weights"].reshape(-1)[order]
    tok = (B, T) + tuple(x["y_sorted"].shape[1:])
    y = _sum_rows(x["y_sorted"], w, si, B * T).to(x["y_sorted"].dtype).view(tok)
    dx = _sum_rows(x["dx_sorted"], None, si, B * T).to(x["dx_sorted"].dtype).view(tok)
    acc = _acc(x["y_sorted"])
    g = x["dy"].reshape(B * T, -1)[si].to(acc)
    dys = (g * w.to(acc).unsqueeze(1)).to(x["y_sorted"].dtype).view(x["y_sorted"].shape)
    dots = (g.double() * x["y_sorted"].reshape(B * T * k, -1).double()).sum(1)
    dw = torch.empty(B * T * k, dtype=torch.float64).index_copy_(0, order, dots).view(B, T, k)
    return dict(x_sorted=xs, cu_seqlens=cu, sort_index=si, y=y, dx=dx, dy_sorted=dys, dweights=dw)


# ----------------------------------------------------------------------------------------------- worker

@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    if not (ROOT / "ops" / "mom" / "cuda").is_dir():
        pytest.skip("ops/mom/cuda is not in this tree")
    work = tmp_path_factory.mktemp("emulator_mom")
    cases = []
    for cid, spec in CASES:
        with torch.random.fork_rng():
            torch.manual_seed(_seed(cid, "LINATTN_TEST_SEED"))
            cases.append(dict(id=cid, driver="mom", seed=_seed(cid, "LINATTN_EMU_SEED"), inputs=_make(spec)))
    torch.save(cases, work / "cases.pt")
    cmd = [sys.executable, str(EMULATOR / "worker.py"), str(work / "cases.pt"), str(work / "out")]
    env = dict(os.environ)
    if ASAN:
        cmd.append("--asan")
        env = _asan_env(env)
    try:
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
        log, status = proc.stdout + proc.stderr, f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        log = b"".join(v or b"" for v in (e.stdout, e.stderr)).decode(errors="replace")
        status = "timed out"
    started = re.findall(r"^case (\d+) ", log, re.M)
    last = int(started[-1]) if started else -1

    def get(cid):
        i = next(n for n, c in enumerate(cases) if c["id"] == cid)
        path = work / "out" / f"{i}.pt"
        if path.exists():
            return cases[i]["inputs"], torch.load(path, weights_only=False)
        where = "in this case" if i == last else "before this case"
        pytest.fail(f"the emulator worker stopped {where} ({status}):\n{log[-6000:]}")

    return get


def _bits(t):
    return t.contiguous().view(torch.uint8) if t.is_floating_point() else t


@pytest.mark.parametrize("cid", [c for c, _ in CASES])
def test_mom_kernels_match_cpu_bit_for_bit(emulated, cid):
    x, out = emulated(cid)
    assert "error" not in out, out.get("error")
    launches, blocks, _, _ = out["counters"].tolist()
    assert launches == 4 and blocks > 0, "one launch each: dispatch, combine, dispatch backward, combine backward"
    assert not out["racy"], f"outputs differ between two thread interleavings (a race): {out['racy']}"
    want = reference(x)
    for name in ("x_sorted", "cu_seqlens", "sort_index", "y", "dx", "dy_sorted"):
        got = out[name]
        assert got.shape == want[name].shape and got.dtype == want[name].dtype, name
        assert torch.equal(_bits(got), _bits(want[name])), f"{name} differs from the CPU kernel"
    dw = out["dweights"]
    assert dw.dtype == x["weights"].dtype and dw.shape == x["weights"].shape
    # fp32 dot products in another order, rounded to the weights' dtype.
    eps = torch.finfo(dw.dtype).eps
    dy_sums = x["dy"].double().abs().reshape(*dw.shape[:2], -1).sum(-1)
    scale = (dy_sums.max() * x["y_sorted"].double().abs().max()).item()
    assert (dw.double() - want["dweights"]).abs().max().item() <= 4 * eps * max(scale, 1.0)


def test_mom_cpu_ops_are_the_definition():
    """The tree's CPU kernels (when the loaded linattn has them) give the bits the emulated kernels are held to."""
    linattn = pytest.importorskip("linattn")
    if not hasattr(torch.ops.linattn, "_mom_combine_backward"):
        pytest.skip("the loaded linattn predates the MoM backward ops")
    for cid, spec in CASES:
        torch.manual_seed(_seed(cid, "LINATTN_TEST_SEED"))
        x = _make(spec)
        want = reference(x)
        idx, E = x["indices"], x["E"]
        xs, cu, si = linattn.mom_dispatch(x["x"], idx, E)
        y = linattn.mom_combine(x["y_sorted"], x["weights"], idx, si, E)
        dx = torch.ops.linattn._mom_dispatch_backward(x["dx_sorted"], idx, si, E)
        dys, _ = torch.ops.linattn._mom_combine_backward(x["dy"], x["y_sorted"], x["weights"], idx, si, E)
        for name, got in dict(x_sorted=xs, cu_seqlens=cu, sort_index=si, y=y, dx=dx, dy_sorted=dys).items():
            assert torch.equal(_bits(got), _bits(want[name])), f"{cid}: {name}"
