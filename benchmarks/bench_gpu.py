"""GPU benchmark of linattn: chunked ops vs fla and FlashAttention, decoding vs fla and the bandwidth floor,
hardware ceilings, and per-op comparisons (sliding window vs flex_attention, LoLCATs vs PyTorch, Liger op vs
its composition, MomAttention vs a dense loop over memories).

    python benchmarks/bench_gpu.py                              # every section (up to ~15 min on a fresh H100)
    python benchmarks/bench_gpu.py --sections chunked           # <= ~8.5 min: one device command
    python benchmarks/bench_gpu.py --sections decode,swa,lolcats,liger,mom   # <= ~6.5 min: another
    python benchmarks/bench_gpu.py --dry-run                    # tiny shapes on whatever device exists

Results go to <out-dir>/<date>-<gpu>.md (and .json, .png when matplotlib is importable). Sections of one day
and GPU accumulate in the JSON, so separate invocations give one report; --fresh starts it over. The last
line of the markdown is `geomean speedup vs fla (fwd+bwd): X.XX` over the chunked cases (n/a without fla).
A dry run writes to a temporary directory unless --out-dir is given."""
import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the helpers and sections/ live next to this file
    sys.path.insert(0, HERE)

import torch  # noqa: E402

import fla_compat  # noqa: E402
import report  # noqa: E402
from common import Budget, Ctx  # noqa: E402

SECTIONS = report.ORDER
# Seconds per section on an H100. One invocation must fit a device command's 10 minutes with the process
# start, so run_gpu.sh runs chunked alone (fla's first call per op and head dim autotunes Triton kernels,
# counted here) and the other sections together (~6.5 min at most). A section past its budget marks its
# remaining cases "skipped" instead of running them.
BUDGET_S = {"ceilings": 30, "chunked": 480, "decode": 45, "swa": 150, "lolcats": 45, "liger": 45, "mom": 60}
NEEDS_CEILINGS = ("chunked", "decode")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, 2 reps: checks the harness, not speed")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--reps", type=int, default=30, help="most timed calls per measurement")
    p.add_argument("--min-reps", type=int, default=5, help="fewest timed calls per measurement")
    p.add_argument("--target-ms", type=float, default=150.0, help="timed calls per measurement fill about this")
    p.add_argument("--budget", default="", help="per-section seconds, e.g. chunked=300,swa=60")
    p.add_argument("--fresh", action="store_true", help="start the day's JSON over instead of adding to it")
    p.add_argument("--cases", default="", help="chunked: comma-separated case indices (0-based, in SHAPES order) "
                   "to run; the day's earlier rows of the other cases are kept, so one device call's 10 minutes "
                   "need not cover every shape")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    if any(s in wanted for s in NEEDS_CEILINGS) and "ceilings" not in wanted:
        wanted.append("ceilings")  # fractions of peak need the ceilings of this run
    args.sections = [s for s in SECTIONS if s in wanted]
    args.budget_s = dict(BUDGET_S)
    for item in filter(None, args.budget.split(",")):
        name, _, seconds = item.partition("=")
        args.budget_s[name.strip()] = float(seconds)
    return args


def make_ctx(args) -> Ctx:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the CPU kernels take fp32/fp64
    if args.dry_run:
        return Ctx(device, dtype, True, max_reps=2, min_reps=1, target_ms=0.0)
    return Ctx(device, dtype, False, max_reps=args.reps, min_reps=min(args.min_reps, args.reps),
               target_ms=args.target_ms)


def write(doc, files):
    os.makedirs(os.path.dirname(files["md"]), exist_ok=True)
    with open(files["json"], "w") as f:
        json.dump(doc, f, indent=1)
    with open(files["md"], "w") as f:
        f.write(report.render(doc))


def run_section(ctx, name, seconds, save):
    ctx.budget = Budget(seconds)
    ctx.log(f"section {name} (budget {seconds:.0f} s)")
    start = time.time()
    last = {}

    def stamp(result, **extra):
        return dict(result, wall_s=time.time() - start, run_at=time.strftime("%Y-%m-%d %H:%M:%S"), **extra)

    def save_partial(partial):
        last["partial"] = partial
        save(stamp(partial, partial=True))
    ctx.on_progress = save_partial
    try:
        return stamp(importlib.import_module(f"sections.{name}").run(ctx)), True
    except Exception as e:  # a harness bug in one section must not cost the other sections' device time
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"[:300]
        if "partial" in last:  # keep the cases measured before the error
            kept = last["partial"]
            return stamp(kept, title=kept["title"] + " (section failed)",
                         intro=kept.get("intro", []) + [f"Stopped by an error: {error}"]), False
        return stamp({"name": name, "title": f"{name} (section failed)", "intro": [],
                      "tables": [{"caption": "", "columns": ["error"], "rows": [[error]]}], "data": {}}), False
    finally:
        ctx.on_progress = None
        if ctx.cuda and not ctx.broken:
            torch.cuda.empty_cache()  # the next section's peak-memory numbers start from a clean pool


def main(argv=None) -> int:
    args = parse_args(argv)
    ctx = make_ctx(args)
    out_dir = args.out_dir or (os.path.join(tempfile.gettempdir(), "linattn-bench-dry-run") if args.dry_run
                               else os.path.join(HERE, "results"))
    meta = report.metadata(ctx, fla_compat.version())
    files = report.paths(out_dir, meta)
    doc = {"meta": {}, "sections": {}} if args.fresh else report.load(files["json"])
    doc["meta"] = meta
    ctx.previous = dict(doc["sections"])
    ctx.cases = [c.strip() for c in args.cases.split(",") if c.strip()] or None
    failed = []
    def save(result):  # after every case and section: a run cut short still leaves what it measured
        doc["sections"][result["name"]] = result
        write(doc, files)

    for name in args.sections:
        result, ok = run_section(ctx, name, args.budget_s.get(name, 120), save)
        save(result)
        if not ok:
            failed.append(name)
    print(report.render(doc))
    print(report.plot(doc, files["png"]))
    print(f"results: {files['md']} ({files['json']})")
    if failed:
        print(f"sections that failed: {failed}", file=sys.stderr)
    return 1 if failed or ctx.broken else 0


if __name__ == "__main__":
    sys.exit(main())
