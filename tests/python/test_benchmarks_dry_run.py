"""The GPU benchmark harness (benchmarks/bench_gpu.py) dry-run on CPU: every section runs at tiny shapes and
writes a report whose tables have rows, whose linattn columns hold real measurements and whose last line is the
geomean line; separate invocations add up to one report; the dense MoM baseline equals the layer where it
should. The GPU session has one shot at the real run, so the harness is checked here."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")
GEOMEAN = re.compile(r"^geomean speedup vs fla \(fwd\+bwd\): (n/a|\d+\.\d\d)$")
TITLES = {"ceilings": "## Ceilings", "chunked": "## Chunked ops", "decode": "## Decoding kernels",
          "swa": "## Sliding-window attention", "lolcats": "## LoLCATs", "liger": "## Liger attention",
          "mom": "## MomAttention layer"}


def _bench_modules():
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    import bench_gpu
    return bench_gpu


def tables(md: str):
    """{section heading: [(header cells, [row cells])]} of a rendered report."""
    out, heading, block = {}, None, []

    def flush():
        if heading and len(block) >= 2:
            cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in block]
            out.setdefault(heading, []).append((cells[0], cells[2:]))
        block.clear()
    for line in md.splitlines():
        if line.startswith("## "):
            flush()
            heading = line
        elif line.startswith("|"):
            block.append(line)
        else:
            flush()
    flush()
    return out


def section(tabs, name):
    found = [v for k, v in tabs.items() if k.startswith(TITLES[name])]
    assert len(found) == 1, f"section {name} missing or repeated: {list(tabs)}"
    return found[0]


def column(header, rows, name):
    i = header.index(name)
    return [r[i] for r in rows]


def numbers(cells):
    return [float(c) for c in cells]  # raises on "n/a (k)" or "-": those must not appear here


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    import linattn  # the subprocess imports the same linattn as this process (source tree or installed)
    where = os.path.dirname(os.path.dirname(os.path.abspath(linattn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [where, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "bench_gpu.py"), "--dry-run", "--device", "cpu",
                           "--out-dir", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mds = [f for f in os.listdir(out) if f.endswith(".md")]
    assert len(mds) == 1, os.listdir(out)
    with open(os.path.join(out, mds[0])) as f:
        md = f.read()
    with open(os.path.join(out, mds[0][:-3] + ".json")) as f:
        doc = json.load(f)
    return md, doc, proc.stdout, out


def test_report_structure(dry_run):
    md, doc, stdout, out = dry_run
    lines = md.rstrip("\n").splitlines()
    assert GEOMEAN.match(lines[-1]), lines[-1]
    assert lines[-1].endswith("n/a")  # no fla on CPU: no speedup to average, and no made-up number
    assert "(dry run)" in lines[0] and f"torch {torch.__version__}" in md and "fla " in md and "triton " in md
    assert "section failed" not in md
    assert set(doc["sections"]) == set(TITLES)
    tabs = tables(md)
    for name in TITLES:
        for header, rows in section(tabs, name):
            assert rows, f"{name}: empty table"
            assert all(len(r) == len(header) for r in rows), name
    # The plot is made when matplotlib is importable and explained when it is not.
    png = os.path.join(out, doc["meta"]["date"] + "-cpu.png")
    assert os.path.exists(png) or "plot skipped: matplotlib not importable" in stdout


def test_chunked_measures_every_op_and_case(dry_run):
    md = dry_run[0]
    (header, rows), (eff_header, eff_rows) = section(tables(md), "chunked")
    ops = {"chunk_gla", "chunk_simple_gla", "chunk_delta_rule", "chunk_gated_delta_rule"}
    assert set(column(header, rows, "op")) == ops
    assert len(rows) == 4 * 3 and any(c.startswith("varlen") for c in column(header, rows, "B,T,H,D"))
    for name in ("linattn fwd", "linattn fwd+bwd", "SDPA fwd", "SDPA fwd+bwd"):
        assert all(x > 0 for x in numbers(column(header, rows, name))), name
    assert all(c.startswith("n/a") for c in column(header, rows, "fla fwd+bwd"))  # fla: CUDA only
    assert all(x > 0 for x in numbers(column(eff_header, eff_rows, "linattn % matmul")))


def test_decode_and_ceilings(dry_run):
    md, doc = dry_run[0], dry_run[1]
    assert doc["sections"]["ceilings"]["data"]["matmul_tflops"] > 0
    assert doc["sections"]["ceilings"]["data"]["copy_gbs"] > 0
    [(header, rows)] = section(tables(md), "decode")
    assert len(rows) == 4 * 2
    assert all(x > 0 for x in numbers(column(header, rows, "linattn eager")))
    assert all(x > 0 for x in numbers(column(header, rows, "floor ms")))
    assert all(x > 0 for x in numbers(column(header, rows, "linattn fraction of floor")))


@pytest.mark.parametrize("name,ours,diff_col", [("swa", "linattn fwd+bwd", "max abs diff vs flex"),
                                                ("lolcats", "linattn fwd+bwd", "max abs diff"),
                                                ("liger", "op fwd+bwd", "max abs diff")])
def test_comparisons_agree_with_their_baselines(dry_run, name, ours, diff_col):
    """The baselines compute the same function (fp32 on CPU), so timing them against linattn means something."""
    [(header, rows)] = section(tables(dry_run[0]), name)
    assert all(x > 0 for x in numbers(column(header, rows, ours)))
    diffs = column(header, rows, diff_col)
    if name == "swa" and all(c.startswith("n/a") for c in column(header, rows, "flex fwd")):
        pytest.skip("this torch has no CPU flex_attention forward")  # torch 2.13 has one
    assert all(d < 1e-4 for d in numbers(diffs))


def test_mom_row(dry_run):
    [(header, rows)] = section(tables(dry_run[0]), "mom")
    for name in ("layer fwd", "dense fwd", "layer fwd+bwd", "dense fwd+bwd"):
        assert all(x > 0 for x in numbers(column(header, rows, name))), name


def test_mom_dense_loop_equals_layer_without_convolutions():
    _bench_modules()
    from sections.mom import mom_dense

    import linattn
    layer = linattn.layers.MomAttention(hidden_size=24, head_dim=8, num_heads=2, expand_v=2, num_memories=4,
                                        topk=2, shared_mem=True, use_short_conv=False).double().train()
    with torch.no_grad():  # weights large enough that routing, gates and every memory matter
        for n, p in layer.named_parameters():
            if n.endswith("weight") and p.dim() == 2:
                p.normal_(0, 0.3)
    x = torch.randn(2, 40, 24, dtype=torch.float64)
    torch.testing.assert_close(mom_dense(layer, x), layer(x)[0], atol=1e-10, rtol=1e-9)


def test_invocations_add_up_to_one_report(tmp_path, capsys):
    bench_gpu = _bench_modules()
    common = ["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path)]
    assert bench_gpu.main(common + ["--sections", "lolcats"]) == 0
    assert bench_gpu.main(common + ["--sections", "liger", "--budget", "liger=0"]) == 0
    [md_name] = [f for f in os.listdir(tmp_path) if f.endswith(".md")]
    md = (tmp_path / md_name).read_text()
    tabs = tables(md)
    section(tabs, "lolcats")
    [(header, rows)] = section(tabs, "liger")
    # A zero budget skips every case with the reason in the report instead of running it.
    assert all(c.startswith("n/a") for c in column(header, rows, "op fwd")) and "time budget" in md
    assert GEOMEAN.match(md.rstrip("\n").splitlines()[-1])
    capsys.readouterr()


def test_a_failing_section_keeps_its_finished_cases(tmp_path, monkeypatch, capsys):
    bench_gpu = _bench_modules()
    import sections.lolcats as lolcats
    real, calls = lolcats.make_inputs, []

    def second_call_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("harness bug")
        return real(*args)
    monkeypatch.setattr(lolcats, "DRY_SHAPES", [(1, 64, 2, 16), (1, 96, 2, 16)])
    monkeypatch.setattr(lolcats, "make_inputs", second_call_fails)
    rc = bench_gpu.main(["--dry-run", "--device", "cpu", "--out-dir", str(tmp_path), "--sections", "lolcats,liger"])
    assert rc == 1  # the failure is reported, and the next section still ran
    [md_name] = [f for f in os.listdir(tmp_path) if f.endswith(".md")]
    md = (tmp_path / md_name).read_text()
    assert "(section failed)" in md and "Stopped by an error: ValueError: harness bug" in md
    [(header, rows)] = [v for k, v in tables(md).items() if k.startswith("## LoLCATs")][0]
    assert [r[0] for r in rows] == ["1,64,2,16"]
    section(tables(md), "liger")
    assert GEOMEAN.match(md.rstrip("\n").splitlines()[-1])
    capsys.readouterr()


def test_chunked_cases_split_across_runs_keep_each_others_rows(tmp_path):
    # One device call cannot time every shape: --cases runs a subset and keeps the day's other rows.
    import linattn
    where = os.path.dirname(os.path.dirname(os.path.abspath(linattn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [where, os.environ.get("PYTHONPATH")])))
    base = [sys.executable, os.path.join(BENCH, "bench_gpu.py"), "--dry-run", "--device", "cpu", "--out-dir",
            str(tmp_path), "--sections", "chunked"]
    for subset in ("2", "0"):
        proc = subprocess.run(base + ["--cases", subset], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    md = [f for f in os.listdir(tmp_path) if f.endswith(".md")]
    with open(os.path.join(tmp_path, md[0])) as f:
        (header, rows), _ = section(tables(f.read()), "chunked")
    labels = column(header, rows, "B,T,H,D")
    assert len(rows) == 8, labels  # 4 ops x (case 0 and the varlen case 2), case 1 never ran
    assert labels[0] == "1,128,2,32" and all(c.startswith("varlen") for c in labels[4:]), labels
