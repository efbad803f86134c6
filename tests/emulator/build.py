"""Builds the emulator harness: the CUDA instantiation units (rewritten by prepare.py) and harness/*.cpp as one
torch extension that registers torch.ops.linattn_emu.*. The build directory is kept, so later runs only
recompile what changed (ninja)."""
import os
from pathlib import Path

from prepare import prepare

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def families():
    """Operator families with CUDA kernels in this tree (and a harness file)."""
    return sorted(p.stem for p in (HERE / "harness").glob("*.cpp") if (REPO / "ops" / p.stem / "cuda").is_dir())


def build_dir(asan: bool) -> Path:
    base = Path(os.environ.get("LINATTN_EMU_BUILD_DIR", REPO / "build" / "emulator"))
    return base / ("asan" if asan else "default")


def flags(asan: bool):
    # -ffp-contract=off: no fused multiply-add unless the kernel asks for one (fmaf), so products the
    # kernels compare bit for bit (LoLCATs window maxima) are formed the same way in every kernel.
    cflags = ["-std=c++20", "-ffp-contract=off", "-Wno-unknown-pragmas", "-Wno-unused-function"]
    if asan:
        return cflags + ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"], ["-fsanitize=address"]
    return cflags + ["-O2"], []


def build(asan: bool = False, verbose: bool = False) -> str:
    """Compiles (incrementally) and loads the harness into this process; returns the library path."""
    from torch.utils import cpp_extension

    out = build_dir(asan)
    units = prepare(REPO, out / "src")
    # harness/<family>.cpp for every ops/<family>/cuda of this tree; runtime.cpp (controls, self-tests) always.
    harness = [HERE / "harness" / "runtime.cpp"] + [HERE / "harness" / f"{f}.cpp" for f in families()]
    sources = [str(p) for p in harness] + [str(u) for u in units]
    os.environ.setdefault("MAX_JOBS", "2")
    cflags, ldflags = flags(asan)
    return cpp_extension.load(
        name="linattn_emu_asan" if asan else "linattn_emu",
        sources=sources,
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        extra_include_paths=[str(HERE / "shim"), str(HERE), str(out / "src")],
        build_directory=str(out),
        is_python_module=False,
        verbose=verbose,
    )
