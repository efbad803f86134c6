"""Copies the torch-free CUDA sources into <build>/src for the CPU emulator (cuda_emu.h), rewriting the three
constructs a C++ compiler cannot take:

* ``kernel<<<grid, block, smem, stream>>>(args)``  ->  ``::emu::launch(kernel, grid, block, smem, stream)(args)``
* ``extern __shared__ T name[];``                   ->  ``T* const name = ::emu::dynamic_shared<T>();``
* ``__shared__ T a[N], b[M][K];``                   ->  one per-block array each (``::emu::block_shared``)

The explicit-instantiation units (``*.cu``) become ``.cpp`` files. Anything the rewrite does not recognise
fails loudly instead of compiling to something else."""
import re
from pathlib import Path

# Sources the kernels need (the shared CUDA helpers, every family's kernels, the params structs), the glue's
# dtype map (the harness uses it as the glue does) and the emulator's own deliberately broken kernels.
SOURCE_GLOBS = ["csrc/cuda/*", "ops/*/cuda/*.h", "ops/*/cuda/*.cuh", "ops/*/cuda/inst/*.cu", "ops/*/*_params.h",
                "csrc/core/cuda_dtype.h", "tests/emulator/selftest/*.cuh"]

LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)
DYNAMIC = re.compile(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;")
STATIC = re.compile(r"__shared__\s+(\w+)\s+([^;]+);")
DECLARATOR = re.compile(r"\s*(\w+)\s*((?:\[[^\]]+\])+)\s*$")


def _strip_comments(text):
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.S)


def _static_shared(match):
    elem, names = match.group(1), match.group(2)
    out = []
    for decl in names.split(","):
        m = DECLARATOR.match(decl)
        if not m:
            raise ValueError(f"unsupported __shared__ declarator {decl!r}")
        name, dims = m.groups()
        out.append(f"static char {name}_emu_key; auto& {name} = "
                   f"::emu::block_shared<{elem}{dims}>(&{name}_emu_key);")
    return " ".join(out)


def rewrite(text, origin):
    text = LAUNCH.sub(lambda m: f"::emu::launch({m.group(1)}, {m.group(2)})(", text)
    text = DYNAMIC.sub(lambda m: f"{m.group(1)}* const {m.group(2)} = ::emu::dynamic_shared<{m.group(1)}>();", text)
    text = STATIC.sub(_static_shared, text)
    code = _strip_comments(text)
    for token in ("<<<", "__shared__"):
        if token in code:
            raise ValueError(f"{origin}: '{token}' left after the emulator rewrite; extend prepare.py")
    return text


def prepare(repo: Path, dest: Path):
    """Mirrors the rewritten sources under dest and returns the instantiation units to compile. Files whose
    content is unchanged are not touched, so an incremental build recompiles only what changed."""
    units, wanted = [], set()
    for pattern in SOURCE_GLOBS:
        for src in sorted(p for p in repo.glob(pattern) if p.is_file()):
            rel = src.relative_to(repo)
            out = dest / (rel.with_suffix(".cpp") if src.suffix == ".cu" else rel)
            text = rewrite(src.read_text(), rel)
            if not out.exists() or out.read_text() != text:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
            wanted.add(out)
            if src.suffix == ".cu":
                units.append(out)
    if not units:
        raise FileNotFoundError(f"no CUDA instantiation units under {repo}")
    for old in dest.rglob("*"):
        if old.is_file() and old not in wanted:
            old.unlink()
    return units
