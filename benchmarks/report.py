"""Results file: sections kept as JSON (so separate invocations, each within one device command's time limit,
add up to one report) and rendered to markdown, plus an optional PNG plot.

A section is a dict: name, title, intro (paragraphs), tables (caption, columns, rows), data (numbers other
code needs: speedups for the geomean, records for the plot), wall_s. A cell is a string or {"na": reason}."""
import datetime
import json
import math
import os
import re
import subprocess

import torch

from common import NA, is_num

ORDER = ("ceilings", "chunked", "decode", "swa", "lolcats", "liger", "mom")
GEOMEAN_PREFIX = "geomean speedup vs fla (fwd+bwd): "


def cell(x, spec: str = ".3f"):
    """Format a measurement for a table: numbers by spec, NA as a footnoted n/a, None as '-'."""
    if isinstance(x, NA):
        return {"na": x.reason}
    if x is None:
        return "-"
    if is_num(x):
        return format(x, spec)
    return str(x)


def ratio(num, den, spec: str = ".2f"):
    """num / den when both are measurements, else the first missing one's reason."""
    for x in (num, den):
        if isinstance(x, NA):
            return cell(x)
    if not (is_num(num) and is_num(den)) or den == 0:
        return "-"
    return format(num / den, spec)


def slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-") or "unknown"


def _git_commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except Exception:  # no git on the device machine, or no .git in the copied tree
        return "unknown"


def metadata(ctx, fla_version: str) -> dict:
    import linattn
    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = "not installed"
    gpu = torch.cuda.get_device_name(ctx.device) if ctx.cuda else "cpu"
    return {
        "gpu": gpu, "date": str(datetime.date.today()), "torch": torch.__version__,
        "cuda": str(torch.version.cuda), "linattn": linattn.__version__, "linattn_commit": _git_commit(),
        "linattn_cuda_kernels": bool(linattn.has_cuda_kernels()), "fla": fla_version, "triton": triton_version,
        "dtype": str(ctx.dtype).replace("torch.", ""), "dry_run": ctx.dry_run,
        "reps": f"{ctx.min_reps}-{ctx.max_reps}", "target_ms": ctx.target_ms,
        "timer": ("CUDA events, L2 flushed before each call" if ctx.cuda else "time.perf_counter on the host"),
    }


def paths(out_dir: str, meta: dict) -> dict:
    base = os.path.join(out_dir, f"{meta['date']}-{slug(meta['gpu'])}")
    return {"md": base + ".md", "json": base + ".json", "png": base + ".png"}


def load(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {"meta": {}, "sections": {}}


def geomean_line(sections: dict) -> str:
    speedups = [s for s in sections.get("chunked", {}).get("data", {}).get("speedups", []) if is_num(s) and s > 0]
    if not speedups:
        return GEOMEAN_PREFIX + "n/a"
    return GEOMEAN_PREFIX + f"{math.exp(sum(map(math.log, speedups)) / len(speedups)):.2f}"


def _render_table(t: dict, notes: list) -> list:
    def show(c):
        if isinstance(c, dict) and "na" in c:
            if c["na"] not in notes:
                notes.append(c["na"])
            return f"n/a ({notes.index(c['na']) + 1})"
        return str(c).replace("|", "\\|")  # a bare pipe would split the cell
    lines = [f"**{t['caption']}**", ""] if t.get("caption") else []
    lines.append("| " + " | ".join(show(c) for c in t["columns"]) + " |")
    lines.append("|" + "---|" * len(t["columns"]))
    lines += ["| " + " | ".join(show(c) for c in row) + " |" for row in t["rows"]]
    return lines + [""]


def render(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"# linattn benchmark: {m['gpu']}{' (dry run)' if m.get('dry_run') else ''}", "",
             f"- date {m['date']}; GPU {m['gpu']}; torch {m['torch']}; CUDA {m['cuda']}; "
             f"linattn {m['linattn']} (commit {m['linattn_commit']}, CUDA kernels built: "
             f"{m['linattn_cuda_kernels']}); fla {m['fla']}; triton {m['triton']}; dtype {m['dtype']}",
             "- timing: one warm-up call (absorbs autotuning/compilation), then the median of "
             f"{m['reps']} timed calls"
             + (f" (as many as fit in about {m['target_ms']:.0f} ms)" if m["target_ms"] > 0 else "")
             + f"; {m['timer']}; fresh random inputs per case (seeded, never zeros); peak memory = "
             "max_memory_allocated during one call minus what was allocated before it",
             "- n/a (k): not measured, reason k listed under the table; speedup = baseline ms / linattn ms "
             "(> 1: linattn faster)", ""]
    for name in ORDER:
        s = doc["sections"].get(name)
        if s is None:
            continue
        lines += [f"## {s['title']}", ""]
        for para in s.get("intro", []):
            lines += [para, ""]
        for t in s["tables"]:
            notes = []
            lines += _render_table(t, notes)
            if notes:
                lines += [f"({i + 1}) {n}" for i, n in enumerate(notes)] + [""]
        cut = " (incomplete: the run stopped inside this section)" if s.get("partial") else ""
        lines += [f"_section run {s.get('run_at', '?')}, {s.get('wall_s', 0):.0f} s{cut}_", ""]
    lines.append(geomean_line(doc["sections"]))
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: str) -> str:
    """ms vs T per chunked op (log-log), linattn vs fla vs SDPA. Returns what happened, for the log."""
    records = doc["sections"].get("chunked", {}).get("data", {}).get("records", [])
    if not records:
        return "plot skipped: no chunked results"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        return (f"plot skipped: matplotlib not importable ({type(e).__name__}); carry its wheels in "
                "$FLA_WHEELS (see benchmarks/run_gpu.sh)")
    ops = list(dict.fromkeys(r["op"] for r in records))
    cols = min(2, len(ops))
    fig, axes = plt.subplots((len(ops) + cols - 1) // cols, cols, figsize=(6 * cols, 4.5 * ((len(ops) + 1) // 2)),
                             squeeze=False)
    for ax in axes.flat[len(ops):]:
        ax.set_visible(False)
    for ax, op in zip(axes.flat, ops):
        rows = sorted((r for r in records if r["op"] == op and not r.get("varlen")), key=lambda r: (r["T"], r["label"]))
        for key, name, style in (("ours_fb", "linattn", "o-"), ("fla_fb", "fla", "s--"), ("sdpa_fb", "SDPA", "^:")):
            pts = [(r["T"], r[key]) for r in rows if is_num(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), style, label=name)
        for r in rows:  # several shapes share a T: name each point's B,H,D
            if is_num(r.get("ours_fb")):
                ax.annotate(r["label"], (r["T"], r["ours_fb"]), fontsize=6)
        ax.set(xscale="log", yscale="log", title=f"{op} fwd+bwd", xlabel="T (tokens per sequence)", ylabel="ms")
        ts = sorted({r["T"] for r in rows})
        ax.minorticks_off()  # a log axis over 1-2 decades otherwise labels every minor tick
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.legend(fontsize=7)
    fig.suptitle(f"{doc['meta']['gpu']} {doc['meta']['date']} ({doc['meta']['dtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written: {path}"
