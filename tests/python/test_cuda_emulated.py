"""The CUDA kernels' logic on the CPU emulator of tests/emulator: forward outputs, final states and every
gradient of GLA, the delta rule, sliding-window attention and LoLCATs against the float64 references, at
small odd sizes (T = 1, 5, 65, 130; odd head dims; varlen with empty sequences; initial states; grouped value
heads), plus self-tests showing that the emulator catches the bugs it is meant to catch. A pass means
"validated on the CPU emulator", never "validated on GPU" (tests/emulator/README.md lists what it cannot see).

All cases run in one worker process (tests/emulator/worker.py), which builds the harness into build/emulator
once (LINATTN_EMU_BUILD_DIR moves it) and is immune to crashes of the code under test. Environment:
LINATTN_EMU=0 skips; LINATTN_EMU_SEED changes the scheduler's thread interleavings; LINATTN_EMU_ASAN=1
builds and runs everything under AddressSanitizer (slower; for local use, not CI)."""
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "tests" / "emulator"
ASAN = os.environ.get("LINATTN_EMU_ASAN") == "1"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
FP32_TOL = 1e-5  # float32 kernels: max error relative to the largest reference value (seen: ~1e-6)


def _unavailable():
    if os.environ.get("LINATTN_EMU") == "0":
        return "disabled by LINATTN_EMU=0"
    if not sys.platform.startswith("linux"):
        return "the emulator's fibers need Linux"
    if not (EMULATOR / "cuda_emu.h").exists() or not (ROOT / "ops").is_dir():
        return "needs the source tree (tests/emulator and ops/)"
    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return "no C++ compiler"
    if platform.machine() not in ("x86_64", "AMD64"):  # elsewhere the fibers switch with ucontext
        probe = subprocess.run([cxx, "-fsyntax-only", "-x", "c++", "-"], input="#include <ucontext.h>\n",
                               capture_output=True, text=True)
        if probe.returncode != 0:
            return "no <ucontext.h> for the emulator's fibers"
    return None


def _reference(module, name):
    """A float64 definition from this source tree's python/linattn/reference (pure PyTorch), so the kernels of
    the tree are checked against the definitions of the same tree whatever linattn is installed."""
    path = ROOT / "python" / "linattn" / "reference" / f"{module}.py"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not in this tree")
    spec = importlib.util.spec_from_file_location(f"_emulated_reference_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


# ----------------------------------------------------------------------------------------------- cases
# (id, family, spec). lens: varlen (B = 1, T = sum); a spec without lens has B and T.
CASES = [
    ("gla-key-b2t65", "gla", dict(B=2, T=65, H=2, K=33, V=60, gate="key")),
    ("gla-key-varlen", "gla", dict(lens=[0, 5, 0, 130, 1], H=1, K=7, V=33, gate="key")),
    ("gla-scalar+gamma-t130", "gla", dict(B=1, T=130, H=2, K=60, V=33, gate="scalar", gamma=True)),
    ("gla-gamma-t5", "gla", dict(B=2, T=5, H=1, K=7, V=33, gate=None, gamma=True)),
    ("gla-nogate-t1", "gla", dict(B=3, T=1, H=2, K=5, V=3, gate=None)),
    ("gla-key-k200", "gla", dict(B=1, T=70, H=1, K=200, V=40, gate="key")),
    ("gla-key-k256v256", "gla", dict(B=1, T=65, H=1, K=256, V=256, gate="key")),
    ("gla-scalar-varlen-t128", "gla", dict(lens=[64, 0, 1, 63], H=2, K=64, V=32, gate="scalar")),
    ("gla-key-fp16", "gla", dict(B=1, T=70, H=1, K=60, V=33, gate="key", dtype=F16)),
    ("gla-scalar-bf16", "gla", dict(B=1, T=65, H=2, K=33, V=7, gate="scalar", dtype=BF16)),
    ("gla-scalar+gamma-varlen-fp16", "gla", dict(lens=[0, 130, 1, 64], H=1, K=100, V=70, gate="scalar", gamma=True,
                                                 dtype=F16)),
    ("gla-gamma-k256-bf16", "gla", dict(B=2, T=65, H=1, K=256, V=130, gate=None, gamma=True, dtype=BF16)),
    ("gla-nogate-t1-fp16", "gla", dict(B=2, T=1, H=2, K=16, V=16, gate=None, dtype=F16)),
    # The tensor-core backward (fp16 / bf16, scalar / g_gamma / no gate); simt: the SIMT backward as well.
    # gate "strong": log gates uniform in [-20, 0] per step.
    ("gla-tc-bwd-scalar-fp16-t200", "gla", dict(B=1, T=200, H=1, K=60, V=100, gate="scalar", dtype=F16, simt=True)),
    ("gla-tc-bwd-gamma-bf16-t130", "gla", dict(B=1, T=130, H=2, K=100, V=60, gate=None, gamma=True, dtype=BF16)),
    ("gla-tc-bwd-nogate-fp16-t5", "gla", dict(B=2, T=5, H=1, K=3, V=3, gate=None, dtype=F16)),
    ("gla-tc-bwd-scalar+gamma-varlen-bf16", "gla", dict(lens=[0, 65, 1, 0, 130], H=1, K=64, V=128, gate="scalar",
                                                        gamma=True, dtype=BF16, simt=True)),
    ("gla-tc-bwd-strong-fp16-k128", "gla", dict(B=1, T=200, H=1, K=128, V=64, gate="strong", dtype=F16)),
    ("gla-tc-bwd-strong+gamma-bf16-k256", "gla", dict(B=1, T=65, H=1, K=256, V=256, gate="strong", gamma=True,
                                                      dtype=BF16)),
    ("gla-tc-bwd-scalar-bf16-t1", "gla", dict(B=3, T=1, H=2, K=5, V=7, gate="scalar", dtype=BF16)),
    ("gla-tc-bwd-nogate-varlen-fp16", "gla", dict(lens=[130, 0, 5], H=1, K=33, V=256, gate=None, dtype=F16,
                                                  simt=True)),
    # The tensor-core forward and backward for per-key gates (fp16 / bf16; the glue's path, beside the SIMT and
    # recurrent forwards; simt: the SIMT backward as well). gate "strongkey": per-key log gates uniform in [-20, 0]
    # per step.
    ("gla-tcvec-fp16-t1", "gla", dict(B=2, T=1, H=2, K=3, V=3, gate="key", dtype=F16)),
    ("gla-tcvec-bf16-t5-k60v100", "gla", dict(B=1, T=5, H=2, K=60, V=100, gate="key", dtype=BF16)),
    ("gla-tcvec-fp16-t65-k100v60", "gla", dict(B=2, T=65, H=1, K=100, V=60, gate="key", dtype=F16)),
    ("gla-tcvec-bf16-t130-k3v64", "gla", dict(B=1, T=130, H=2, K=3, V=64, gate="key", dtype=BF16)),
    ("gla-tcvec-fp16-t200-k128v128", "gla", dict(B=1, T=200, H=1, K=128, V=128, gate="key", dtype=F16)),
    ("gla-tcvec-varlen-bf16", "gla", dict(lens=[0, 65, 1, 0, 130], H=1, K=64, V=33, gate="key", dtype=BF16)),
    ("gla-tcvec-varlen-fp16", "gla", dict(lens=[130, 0, 5], H=2, K=33, V=100, gate="key", dtype=F16)),
    ("gla-tcvec-strong-fp16-t200", "gla", dict(B=1, T=200, H=1, K=60, V=64, gate="strongkey", dtype=F16)),
    ("gla-tcvec-strong-bf16-k256v256", "gla", dict(B=1, T=130, H=1, K=256, V=256, gate="strongkey", dtype=BF16)),
    ("gla-tcvec-bwd-fp16-t200-k60v100", "gla", dict(B=1, T=200, H=1, K=60, V=100, gate="key", dtype=F16, simt=True)),
    ("gla-tcvec-bwd-bf16-t130-k256v40", "gla", dict(B=1, T=130, H=1, K=256, V=40, gate="key", dtype=BF16)),
    ("gla-tcvec-bwd-bf16-t1-k100v60", "gla", dict(B=2, T=1, H=2, K=100, V=60, gate="key", dtype=BF16)),
    ("gla-tcvec-bwd-varlen-strong-fp16", "gla", dict(lens=[0, 65, 1, 0, 130], H=1, K=60, V=100, gate="strongkey",
                                                     dtype=F16, simt=True)),
    ("gla-tcvec-bwd-strong-bf16-t200-k100v60", "gla", dict(B=1, T=200, H=2, K=100, V=60, gate="strongkey",
                                                           dtype=BF16)),
    # fp16 states beyond 65504 (weak decay, large k and v): S_c needs the power-of-two range scaling. PyTorch's
    # fp16 recurrence overflows here, so test_gla_tcvec_fp16_states_beyond_fp16_range checks it instead.
    ("gla-tcvec-fp16-beyond-range", "gla", dict(B=1, T=300, H=1, K=16, V=16, gate="key", dtype=F16, big=True)),
    ("delta-gated-grouped-b2t65", "delta_rule", dict(B=2, T=65, H=1, HV=2, K=33, V=60, gated=True)),
    ("delta-varlen", "delta_rule", dict(lens=[0, 70, 0, 5, 1], H=2, HV=2, K=7, V=33, gated=False)),
    ("delta-gated-grouped-t130", "delta_rule", dict(B=1, T=130, H=2, HV=4, K=60, V=7, gated=True)),
    ("delta-gated-t1", "delta_rule", dict(B=2, T=1, H=1, HV=1, K=5, V=3, gated=True)),
    ("delta-k200", "delta_rule", dict(B=1, T=65, H=1, HV=1, K=200, V=40, gated=True)),
    ("delta-k256v256", "delta_rule", dict(B=1, T=70, H=1, HV=1, K=256, V=256, gated=True)),
    ("delta-gated-varlen-t256", "delta_rule", dict(lens=[64, 1, 0, 128, 63], H=1, HV=2, K=32, V=32, gated=True)),
    ("delta-gated-fp16", "delta_rule", dict(B=1, T=65, H=1, HV=1, K=60, V=33, gated=True, dtype=F16)),
    ("delta-grouped-bf16", "delta_rule", dict(B=1, T=70, H=1, HV=3, K=33, V=7, gated=False, dtype=BF16)),
    # The tensor-core chunked forward (fp16 / bf16; the glue's path, compared with the SIMT one and the
    # recurrence too): odd and tile-width head dims, T around the chunk size, grouped heads, varlen with empty
    # sequences, L2-normalised q / k as the glue makes them, beta near 1, log gates down to -20 per step.
    ("delta-tc-gated-grouped-t130-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=60, V=100, gated=True,
                                                            l2=True, dtype=F16)),
    ("delta-tc-t65-k3v3-bf16", "delta_rule", dict(B=2, T=65, H=2, HV=2, K=3, V=3, gated=False, dtype=BF16)),
    ("delta-tc-t1-fp16", "delta_rule", dict(B=2, T=1, H=1, HV=2, K=5, V=7, gated=True, dtype=F16)),
    ("delta-tc-t5-k100v60-bf16", "delta_rule", dict(B=1, T=5, H=2, HV=4, K=100, V=60, gated=True, l2=True,
                                                    dtype=BF16)),
    ("delta-tc-varlen-fp16", "delta_rule", dict(lens=[0, 70, 0, 5, 64, 1], H=1, HV=2, K=64, V=33, gated=True,
                                                l2=True, dtype=F16)),
    ("delta-tc-varlen-bf16", "delta_rule", dict(lens=[130, 0, 65], H=2, HV=4, K=33, V=64, gated=False, l2=True,
                                                dtype=BF16)),
    ("delta-tc-t200-k128v128-bf16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=128, V=128, gated=True, l2=True,
                                                       dtype=BF16)),
    ("delta-tc-k256v256-fp16", "delta_rule", dict(B=1, T=70, H=1, HV=1, K=256, V=256, gated=True, l2=True,
                                                  dtype=F16)),
    ("delta-tc-beta1-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=64, V=64, gated=False, l2=True, hard=True,
                                               dtype=F16)),
    ("delta-tc-beta1-strong-decay-bf16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=60, V=40, gated="strong",
                                                            l2=True, hard=True, dtype=BF16)),
    # The backward with its states pass on tensor cores (fp16 / bf16; the glue's path), and (simt) the SIMT
    # backward on the same inputs: every gradient incl. dbeta, dg, dh0 against the float64 recurrence.
    ("delta-tc-bwd-gated-grouped-t200-fp16", "delta_rule", dict(B=1, T=200, H=1, HV=2, K=60, V=100, gated=True,
                                                                l2=True, dtype=F16, simt=True)),
    ("delta-tc-bwd-t1-bf16", "delta_rule", dict(B=2, T=1, H=1, HV=2, K=3, V=3, gated=True, dtype=BF16, simt=True)),
    ("delta-tc-bwd-t5-k100v60-fp16", "delta_rule", dict(B=1, T=5, H=2, HV=4, K=100, V=60, gated=False, l2=True,
                                                        dtype=F16)),
    ("delta-tc-bwd-varlen-bf16", "delta_rule", dict(lens=[65, 0, 130, 5], H=1, HV=2, K=64, V=64, gated=True,
                                                    l2=True, dtype=BF16, simt=True)),
    ("delta-tc-bwd-t130-k128-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=1, K=128, V=128, gated=False, l2=True,
                                                       dtype=F16)),
    ("delta-tc-bwd-beta1-strong-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=64, V=33, gated="strong",
                                                          l2=True, hard=True, dtype=F16, simt=True)),
    ("delta-tc-bwd-beta1-bf16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=60, V=40, gated=False, l2=True,
                                                   hard=True, dtype=BF16)),
    # The backward with its dstates pass (pass 2) on tensor cores too (fp16 / bf16; the glue's path; simt: the SIMT
    # backward on the same inputs): T around the chunk size, odd and tile-width head dims (K != V), grouped heads,
    # varlen with empty sequences, gated / ungated / log gates to -20, beta near 1 with nearly parallel keys.
    ("delta-tc-dstate-t5-k17v40-fp16", "delta_rule", dict(B=2, T=5, H=1, HV=2, K=17, V=40, gated=True, dtype=F16)),
    ("delta-tc-dstate-t65-k3v100-bf16", "delta_rule", dict(B=1, T=65, H=2, HV=2, K=3, V=100, gated=False, l2=True,
                                                           dtype=BF16)),
    ("delta-tc-dstate-t130-k100v17-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=4, K=100, V=17, gated=True,
                                                             l2=True, dtype=F16, simt=True)),
    ("delta-tc-dstate-t200-k40v3-bf16", "delta_rule", dict(B=1, T=200, H=2, HV=4, K=40, V=3, gated="strong",
                                                           l2=True, dtype=BF16)),
    ("delta-tc-dstate-t200-k64v64-fp16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=64, V=64, gated=False, l2=True,
                                                            dtype=F16)),
    ("delta-tc-dstate-t130-k128v128-bf16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=128, V=128, gated=True,
                                                              l2=True, dtype=BF16, simt=True)),
    ("delta-tc-dstate-t65-k256v256-fp16", "delta_rule", dict(B=1, T=65, H=1, HV=1, K=256, V=256, gated=False,
                                                             l2=True, dtype=F16)),
    ("delta-tc-dstate-t130-k256v40-bf16", "delta_rule", dict(B=1, T=130, H=1, HV=1, K=256, V=40, gated=True,
                                                             l2=True, dtype=BF16)),
    ("delta-tc-dstate-varlen-fp16", "delta_rule", dict(lens=[0, 65, 0, 130, 5], H=1, HV=2, K=17, V=100, gated=True,
                                                       l2=True, dtype=F16, simt=True)),
    ("delta-tc-dstate-varlen-bf16", "delta_rule", dict(lens=[200, 0, 1, 64], H=2, HV=4, K=100, V=64, gated=False,
                                                       l2=True, dtype=BF16)),
    ("delta-tc-dstate-beta1-strong-fp16", "delta_rule", dict(B=1, T=200, H=1, HV=2, K=40, V=100, gated="strong",
                                                             l2=True, hard=True, dtype=F16)),
    ("delta-tc-dstate-beta1-bf16", "delta_rule", dict(B=1, T=130, H=1, HV=1, K=128, V=17, gated=False, l2=True,
                                                      hard=True, dtype=BF16, simt=True)),
    # The backward with its grads pass (pass 3) on tensor cores too, i.e. all three passes (fp16 / bf16; the glue's
    # path; simt: the SIMT backward on the same inputs): T = 1 .. 200, odd and tile-width head dims incl. K > 64 (several
    # K tiles) and V > 32 (several V tiles), HV = H, 2H, 4H, varlen with empty sequences, gated / ungated / log gates
    # to -20, beta near 1 with nearly parallel keys; h0 and dht always.
    ("delta-tc-grad-t1-k3v3-fp16", "delta_rule", dict(B=2, T=1, H=1, HV=2, K=3, V=3, gated=True, dtype=F16, simt=True)),
    ("delta-tc-grad-t5-k17v40-bf16", "delta_rule", dict(B=2, T=5, H=2, HV=2, K=17, V=40, gated=False, dtype=BF16)),
    ("delta-tc-grad-t65-k100v17-fp16", "delta_rule", dict(B=1, T=65, H=1, HV=4, K=100, V=17, gated="strong", l2=True,
                                                          dtype=F16)),
    ("delta-tc-grad-t130-k40v100-bf16", "delta_rule", dict(B=1, T=130, H=2, HV=4, K=40, V=100, gated=True, l2=True,
                                                           dtype=BF16, simt=True)),
    ("delta-tc-grad-t200-k128v128-fp16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=128, V=128, gated=True,
                                                            l2=True, dtype=F16)),
    ("delta-tc-grad-t65-k256v256-bf16", "delta_rule", dict(B=1, T=65, H=1, HV=1, K=256, V=256, gated=True, l2=True,
                                                           dtype=BF16)),
    ("delta-tc-grad-t130-k256v40-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=256, V=40, gated=False, l2=True,
                                                           dtype=F16, simt=True)),
    ("delta-tc-grad-t200-k3v3-bf16", "delta_rule", dict(B=1, T=200, H=1, HV=4, K=3, V=3, gated=True, dtype=BF16)),
    ("delta-tc-grad-varlen-bf16", "delta_rule", dict(lens=[0, 65, 0, 130, 1], H=1, HV=2, K=17, V=40, gated=True,
                                                     l2=True, dtype=BF16)),
    ("delta-tc-grad-varlen-fp16", "delta_rule", dict(lens=[200, 0, 5, 0], H=2, HV=4, K=100, V=17, gated="strong",
                                                     l2=True, dtype=F16, simt=True)),
    ("delta-tc-grad-beta1-fp16", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=64, V=40, gated=False, l2=True,
                                                    hard=True, dtype=F16)),
    ("delta-tc-grad-beta1-strong-bf16", "delta_rule", dict(B=1, T=200, H=1, HV=1, K=40, V=100, gated="strong",
                                                           l2=True, hard=True, dtype=BF16, simt=True)),
    # dS beyond fp16's range (|dht| up to ~1e5, weak decay): the dstates pass needs its power-of-two range scaling.
    # PyTorch's fp16 recurrence overflows here, so test_delta_tc_fp16_dstate_beyond_fp16_range checks it instead.
    ("delta-tc-dstate-fp16-beyond-range", "delta_rule", dict(B=1, T=130, H=1, HV=2, K=32, V=16, gated="weak", l2=True,
                                                             dtype=F16, big=True)),
    ("swa-b2t65-w5", "swa", dict(B=2, T=65, H=2, K=33, V=60, w=5)),
    ("swa-varlen-w20", "swa", dict(lens=[0, 70, 0, 65, 1], H=1, K=7, V=7, w=20)),
    ("swa-t130-w64", "swa", dict(B=1, T=130, H=1, K=60, V=100, w=64)),
    ("swa-k200-w7", "swa", dict(B=1, T=70, H=1, K=200, V=40, w=7)),
    ("swa-t5-w1", "swa", dict(B=1, T=5, H=2, K=7, V=3, w=1)),
    ("swa-t1-w100", "swa", dict(B=2, T=1, H=1, K=4, V=4, w=100)),
    ("swa-k256v256-w64", "swa", dict(B=1, T=70, H=1, K=256, V=256, w=64)),
    ("swa-t300-w17", "swa", dict(B=1, T=300, H=2, K=32, V=48, w=17)),
    ("swa-t130-w1000", "swa", dict(B=1, T=130, H=1, K=16, V=5, w=1000)),
    ("swa-fp16", "swa", dict(B=1, T=65, H=2, K=60, V=33, w=16, dtype=F16)),
    ("swa-varlen-bf16", "swa", dict(lens=[65, 0, 5], H=1, K=33, V=60, w=7, dtype=BF16)),
    # The tensor-core forward and backward (fp16 / bf16, the glue's path; the SIMT forward and backward are
    # checked alongside, each backward fed by its own forward's o and lse): T around the 64- and 32-row tiles,
    # windows 1, around the tile size and >= T, odd head dims (q/k and v dims differing), varlen with empty
    # sequences, 32-row key tiles (K + V large).
    ("swa-tc-t1-w1-fp16", "swa", dict(B=2, T=1, H=2, K=3, V=3, w=1, dtype=F16)),
    ("swa-tc-t5-w17-bf16", "swa", dict(B=1, T=5, H=2, K=60, V=100, w=17, dtype=BF16)),
    ("swa-tc-t65-w64-fp16", "swa", dict(B=2, T=65, H=1, K=64, V=64, w=64, dtype=F16)),
    ("swa-tc-t130-w65-bf16", "swa", dict(B=1, T=130, H=2, K=100, V=60, w=65, dtype=BF16)),
    ("swa-tc-t200-w17-fp16", "swa", dict(B=1, T=200, H=1, K=128, V=128, w=17, dtype=F16)),
    ("swa-tc-t130-w1000-bf16", "swa", dict(B=1, T=130, H=1, K=3, V=7, w=1000, dtype=BF16)),
    ("swa-tc-t200-w1-bf16", "swa", dict(B=1, T=200, H=1, K=16, V=33, w=1, dtype=BF16)),
    ("swa-tc-varlen-w64-fp16", "swa", dict(lens=[0, 130, 1, 0, 65], H=2, K=60, V=100, w=64, dtype=F16)),
    ("swa-tc-varlen-w65-bf16", "swa", dict(lens=[70, 0, 5, 64], H=1, K=33, V=7, w=65, dtype=BF16)),
    ("swa-tc-k256v256-w65-fp16", "swa", dict(B=1, T=130, H=1, K=256, V=256, w=65, dtype=F16)),
    ("swa-tc-k256v40-w17-bf16", "swa", dict(B=1, T=70, H=1, K=256, V=40, w=17, dtype=BF16)),
    # 64 x 64 backward tiles (K + V padded <= 80) over several tiles, window starts off the tile grid.
    ("swa-tc-t200-w50-k16v16-fp16", "swa", dict(B=2, T=200, H=2, K=16, V=16, w=50, dtype=F16)),
    ("swa-tc-t257-w100-k32v32-bf16", "swa", dict(B=1, T=257, H=1, K=32, V=32, w=100, dtype=BF16)),
    ("lolcats-b2t65-w5", "lolcats", dict(B=2, T=65, H=2, D=33, V=7, F=60, w=5)),
    ("lolcats-t130-w64", "lolcats", dict(B=1, T=130, H=1, D=16, V=8, F=8, w=64)),
    ("lolcats-ties", "lolcats", dict(B=1, T=20, H=1, D=4, V=3, F=5, w=6, ties=True)),
    ("lolcats-t1-w1", "lolcats", dict(B=1, T=1, H=2, D=3, V=3, F=2, w=1)),
    ("lolcats-d200-f130", "lolcats", dict(B=1, T=70, H=1, D=200, V=40, F=130, w=7)),
    ("lolcats-b3t257-w64", "lolcats", dict(B=3, T=257, H=2, D=16, V=16, F=16, w=64)),
    ("lolcats-t200-w65-f256", "lolcats", dict(B=1, T=200, H=1, D=32, V=256, F=256, w=65)),
    ("lolcats-t130-w1000", "lolcats", dict(B=1, T=130, H=1, D=8, V=8, F=8, w=1000)),
    ("lolcats-fp16", "lolcats", dict(B=1, T=65, H=2, D=60, V=33, F=16, w=7, dtype=F16)),
    ("lolcats-bf16", "lolcats", dict(B=2, T=70, H=1, D=16, V=16, F=33, w=64, dtype=BF16)),
    # Liger attention's fused CUDA path (ops/liger/liger_cuda.cpp): feature-map softmax of q and k in one launch,
    # the window forward, the GLA forward with the mix in its output write, both backwards with do scaled as
    # loaded, both softmax backwards in one launch; per-key and scalar gates, mix weights other than 0.5, initial
    # states or none; simt: the SIMT GLA and window kernels as well (fp16 / bf16).
    ("liger-key-t65", "liger", dict(B=2, T=65, H=2, D=33, V=60, gate="key", w=16, h0=True, sw=0.3, lw=0.7)),
    ("liger-scalar-t5-d7v3", "liger", dict(B=1, T=5, H=2, D=7, V=3, gate="scalar", w=64, h0=False, sw=0.5,
                                           lw=0.5)),
    ("liger-key-bf16-t130", "liger", dict(B=1, T=130, H=2, D=60, V=100, gate="key", w=64, h0=True, sw=0.25, lw=0.75,
                                          dtype=BF16, simt=True)),
    ("liger-scalar-fp16-t130", "liger", dict(B=1, T=130, H=1, D=100, V=33, gate="scalar", w=17, h0=True, sw=0.6,
                                             lw=0.4, dtype=F16, simt=True)),
    ("liger-key-fp16-t65", "liger", dict(B=2, T=65, H=1, D=64, V=64, gate="key", w=64, h0=False, sw=0.8, lw=0.2,
                                         dtype=F16)),
    ("liger-scalar-bf16-t5-d3v5", "liger", dict(B=2, T=5, H=2, D=3, V=5, gate="scalar", w=3, h0=True, sw=0.9,
                                                lw=0.3, dtype=BF16)),
    ("liger-key-bf16-d256v256", "liger", dict(B=1, T=65, H=1, D=256, V=256, gate="key", w=65, h0=True, sw=0.45,
                                              lw=0.55, dtype=BF16)),
    ("liger-scalar-t130-d200", "liger", dict(B=1, T=130, H=1, D=200, V=40, gate="scalar", w=7, h0=False, sw=0.35,
                                             lw=1.25)),
    ("selftest", "selftest", {}),
]


def _ids(family):
    return [cid for cid, fam, _ in CASES if fam == family]


def _layout(spec):
    """B, T, cu_seqlens, N."""
    if "lens" in spec:
        lens = spec["lens"]
        return 1, sum(lens), torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist()), len(lens)
    return spec["B"], spec["T"], None, spec["B"]


def _make_gla(s):
    B, T, cu, N = _layout(s)
    H, K, V, dt = s["H"], s["K"], s["V"], s.get("dtype", F32)
    gate = {"key": (B, T, H, K), "scalar": (B, T, H), "strong": (B, T, H), "strongkey": (B, T, H, K),
            None: None}[s["gate"]]
    if s["gate"] in ("strong", "strongkey"):
        g = (-20 * torch.rand(gate)).to(dt)
    else:
        g = F.logsigmoid(torch.randn(gate) + 2).to(dt) if gate else None
    q, k, v = torch.randn(B, T, H, K) / K ** 0.25, torch.randn(B, T, H, K) / K ** 0.25, torch.randn(B, T, H, V)
    if s.get("big"):  # undecayed states far above fp16's range
        q, k, v = 0.01 * q, 60 * k, 60 * v
        g = F.logsigmoid(torch.randn(gate) + 12).to(dt)
    return dict(q=q.to(dt), k=k.to(dt), v=v.to(dt), g=g, simt_backward=s.get("simt", False),
                g_gamma=(-0.3 * torch.rand(H)).to(dt) if s.get("gamma") else None,
                scale=K ** -0.5, h0=torch.randn(N, H, K, V), cu_seqlens=cu, do=torch.randn(B, T, H, V).to(dt),
                dht=torch.randn(N, H, K, V))


def _l2norm(x):
    """use_qk_l2norm_in_kernel as the glue applies it (ATen, in the input dtype) before the kernels."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + 1e-6)


def _make_delta(s):
    B, T, cu, N = _layout(s)
    H, HV, K, V, dt = s["H"], s["HV"], s["K"], s["V"], s.get("dtype", F32)
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, HV, V)
    if s.get("hard"):  # runs of nearly parallel keys (with beta near 1 below: I + A nearly singular directions)
        k[:, 1::2] = k[:, 0:T - T % 2:2] + 0.05 * torch.randn_like(k[:, 1::2])
    q_raw = k_raw = None
    if s.get("l2"):
        q_raw, k_raw = q.to(dt), k.to(dt)
        q, k = _l2norm(q_raw), _l2norm(k_raw)
    else:
        k = F.normalize(k, dim=-1)
    g = None
    if s["gated"] == "strong":  # log gates down to -20 per step
        g = -20 * torch.rand(B, T, HV) ** 4
    elif s["gated"] == "weak":  # about -0.0025 per step
        g = F.logsigmoid(torch.randn(B, T, HV) + 6)
    elif s["gated"]:
        g = F.logsigmoid(torch.randn(B, T, HV) + 2)
    beta = 1 - 1e-3 * torch.rand(B, T, HV) if s.get("hard") else torch.rand(B, T, HV)
    h0, dht = torch.randn(N, HV, K, V), torch.randn(N, HV, K, V)
    if s.get("big"):  # dS far above fp16's range, every gradient within it (small v, beta and h0)
        v, beta, h0, dht = 0.01 * v, 0.1 * beta, 0.01 * h0, 3e4 * dht
    return dict(q=q.to(dt), k=k.to(dt), v=v.to(dt), g=g.to(dt) if g is not None else None, beta=beta.to(dt),
                scale=K ** -0.5, h0=h0, cu_seqlens=cu, do=torch.randn(B, T, HV, V).to(dt), dht=dht,
                simt_backward=s.get("simt", False), q_raw=q_raw, k_raw=k_raw)


def _make_swa(s):
    B, T, cu, _ = _layout(s)
    H, K, V, dt = s["H"], s["K"], s["V"], s.get("dtype", F32)
    return dict(q=torch.randn(B, T, H, K).to(dt), k=torch.randn(B, T, H, K).to(dt), v=torch.randn(B, T, H, V).to(dt),
                window=s["w"], scale=K ** -0.5, cu_seqlens=cu, do=torch.randn(B, T, H, V).to(dt))


def _make_lolcats(s):
    B, T, H, D, V, Fd, dt = s["B"], s["T"], s["H"], s["D"], s["V"], s["F"], s.get("dtype", F32)
    q, k = torch.randn(B, T, H, D), torch.randn(B, T, H, D)
    if s.get("ties"):
        k[:, 5:10] = k[:, 5:6]  # equal keys: tied window maxima, whose gradient is split evenly
    return dict(q=q.to(dt), k=k.to(dt), v=torch.randn(B, T, H, V).to(dt),
                fq=F.softmax(torch.randn(B, T, H, Fd), -1).to(dt), fk=F.softmax(torch.randn(B, T, H, Fd), -1).to(dt),
                window_factor=torch.randn(H).to(dt), window=s["w"], scale=D ** -0.5,
                do=torch.randn(B, T, H, V).to(dt))


def _make_liger(s):
    B, T, H, D, V, dt = s["B"], s["T"], s["H"], s["D"], s["V"], s.get("dtype", F32)
    gate = (B, T, H, D) if s["gate"] == "key" else (B, T, H)
    q, k, q_rot, k_rot = (torch.randn(B, T, H, D).to(dt) for _ in range(4))
    return dict(q=q, k=k, v=torch.randn(B, T, H, V).to(dt), q_rot=q_rot, k_rot=k_rot,
                g=(F.logsigmoid(torch.randn(gate)) / 16).to(dt),  # Liger's gate range, logsigmoid / 16
                h0=torch.randn(B, H, D, V) if s["h0"] else None, window=s["w"], scale=D ** -0.5,
                softmax_weight=s["sw"], linear_weight=s["lw"], do=torch.randn(B, T, H, V).to(dt),
                dht=torch.randn(B, H, D, V), simt=s.get("simt", False))


def _make_selftest(_):
    # Values around every rounding boundary of both formats, subnormals, overflow and specials.
    x = torch.randn(20000) * torch.exp2(torch.randint(-30, 18, (20000,)).float())
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e-8, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26,
                            float("inf"), -float("inf"), 3.4e38, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,
                            1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8])
    kernels = ["exchange", "missing_barrier", "static_race", "divergent_barrier", "split_barrier",
               "shuffle_exited_lane", "wmma_misaligned"]
    if not ASAN:  # under ASan the overflow aborts the worker with ASan's report, which is the point of ASan
        kernels.append("smem_overflow")
    return dict(values=torch.cat([x, special, -special]), kernels=kernels)


MAKERS = dict(gla=_make_gla, delta_rule=_make_delta, swa=_make_swa, lolcats=_make_lolcats, liger=_make_liger,
              selftest=_make_selftest)


# ----------------------------------------------------------------------------------------------- worker


def _seed(cid, env):
    return (zlib.crc32(cid.encode()) ^ int(os.environ.get(env, "0"))) % (2 ** 31)


def _asan_env(env):
    cxx = os.environ.get("CXX", "c++")
    # The ASan runtime must come first; libstdc++ must be loaded with it, or its __cxa_throw interceptor cannot
    # find the real one (python itself does not link libstdc++) and the first C++ exception aborts.
    libs = [subprocess.run([cxx, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
            for lib in ("libasan.so", "libstdc++.so")]
    env["LD_PRELOAD"] = " ".join(libs)
    # Python itself leaks by design; the kernels' bugs are reported as heap / stack errors.
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1"
    return env


@pytest.fixture(scope="module")
def emulated(request, tmp_path_factory):
    """case id -> (inputs, outputs of the emulated kernels)."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("emulator")
    # Only the cases the selected tests read (pytest -k swa: the SWA cases), so a filtered run does not wait for
    # every family's cases in the worker; the one unparametrized test reads the self-test case.
    wanted = set()
    for item in request.session.items:
        if item.module is request.module and "emulated" in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            wanted.add(callspec.params["cid"] if callspec and "cid" in callspec.params else "selftest")
    cases = []
    for cid, family, spec in CASES:
        if cid not in wanted:
            continue
        with torch.random.fork_rng():
            torch.manual_seed(_seed(cid, "LINATTN_TEST_SEED"))
            cases.append(dict(id=cid, driver=family, seed=_seed(cid, "LINATTN_EMU_SEED"), inputs=MAKERS[family](spec)))
    torch.save(cases, work / "cases.pt")
    cmd = [sys.executable, str(EMULATOR / "worker.py"), str(work / "cases.pt"), str(work / "out")]
    env = dict(os.environ)
    if ASAN:
        cmd.append("--asan")
        env = _asan_env(env)
    try:
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
        log, status = proc.stdout + proc.stderr, f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired as e:  # its captured output is bytes whatever text= says
        log = b"".join(x or b"" for x in (e.stdout, e.stderr)).decode(errors="replace")
        status = "timed out"
    started = re.findall(r"^case (\d+) ", log, re.M)
    last = int(started[-1]) if started else -1

    def get(cid):
        i = next((n for n, c in enumerate(cases) if c["id"] == cid), None)
        if i is None:
            pytest.fail(f"case {cid} was not sent to the worker (only the cases of the selected tests are)")
        family = cases[i]["driver"]
        if family != "selftest" and not (ROOT / "ops" / family / "cuda").is_dir():
            pytest.skip(f"ops/{family}/cuda is not in this tree")
        path = work / "out" / f"{i}.pt"
        if path.exists():
            return cases[i]["inputs"], torch.load(path, weights_only=False)
        if i == last:
            pytest.fail(f"the emulator worker died in this case ({status}):\n{log[-6000:]}")
        where = f"in case {cases[last]['id']}" if last >= 0 else "before any case (building the harness?)"
        pytest.fail(f"not run: the emulator worker stopped {where} ({status}):\n{log[-6000:]}")

    return get


# ----------------------------------------------------------------------------------------------- checks


def _compare(got, exact, same_prec, dtype):
    """The kernel's max error against the float64 reference may be a few times that of the same reference run by
    PyTorch in the kernel's input precision (the repo's CUDA-test rule, which also covers sums that cancel, such
    as dwindow_factor). float32 also passes within FP32_TOL of the largest reference value, floored at 1."""
    failures = []
    for name, e in exact.items():
        g = got[name].double()
        if g.shape != e.shape:
            failures.append(f"{name}: shape {tuple(g.shape)}, expected {tuple(e.shape)}")
            continue
        if not torch.isfinite(g).all():
            failures.append(f"{name}: {int((~torch.isfinite(g)).sum())} non-finite values")
            continue
        if not e.numel():
            continue
        err = (g - e).abs().max().item()
        scale = e.abs().max().item()
        base = (same_prec[name].double() - e).abs().max().item()
        if dtype == F32:
            bound = max(FP32_TOL * max(scale, 1.0), 4.0 * base)
        else:
            bound = (3.0 if name.startswith(("o", "ht")) else 4.0) * base + 1e-5 * max(scale, 1.0)
        if not err <= bound:
            failures.append(f"{name}: max error {err:.3e} > {bound:.3e} (max |reference| {scale:.3e}, "
                            f"PyTorch in {str(dtype)[6:]}: {base:.3e})")
    assert not failures, "\n".join(failures)


def _grads(fn, tensors, outputs_and_cotangents):
    """Runs fn on leaf copies of tensors (a dict), backpropagates sum(out * cotangent); returns (outs, grads)."""
    leaves = {n: t.detach().clone().requires_grad_() for n, t in tensors.items()}
    outs = fn(**leaves)
    loss = sum((o.double() * c.double()).sum() for o, c in zip(outs, outputs_and_cotangents))
    loss.backward()
    return outs, {n: t.grad for n, t in leaves.items()}


@pytest.fixture(autouse=True)
def _one_thread():
    # The references are many tiny ops: threads only add overhead (and thrash on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(emulated, cid, reference, kernel_names, wanted):
    """reference(dtype, inputs) -> {name: tensor}, in float64 or (dtype None) in the inputs' precision;
    kernel_names: compared name -> key of the worker's result (or a function of the result); wanted: compared
    name -> reference name."""
    x, out = emulated(cid)
    assert "error" not in out, out.get("error")
    launches, blocks, _, _ = out["counters"].tolist()
    assert launches > 0 and blocks > 0, "the emulator ran no kernel"
    assert not out["racy"], f"outputs differ between two thread interleavings (a race): {out['racy']}"
    dtype = x["q"].dtype
    exact, same_prec = reference(torch.float64, x), reference(None, x)
    got = {name: out[src] if isinstance(src, str) else src(out) for name, src in kernel_names.items()}
    pick = lambda ref: {name: ref[wanted[name]] for name in got}  # noqa: E731
    _compare(got, pick(exact), pick(same_prec), dtype)


RANGE_CASES = ["gla-tcvec-fp16-beyond-range"]


@pytest.mark.parametrize("cid", [c for c in _ids("gla") if c not in RANGE_CASES])
def test_gla_chunk_recurrent_and_backward(emulated, cid):
    gla_recurrence = _reference("gla", "gla_recurrence")
    x, _ = emulated(cid)
    leaves = [n for n in ("q", "k", "v", "g", "g_gamma", "h0") if x[n] is not None]
    per_token = x["g"] is not None

    def reference(dtype, x):
        def fn(q, k, v, h0, g=None, g_gamma=None):
            return gla_recurrence(q, k, v, g, g_gamma, x["scale"], h0, True, x["cu_seqlens"], dtype=dtype)
        tensors = {n: x[n].double() if dtype else x[n] for n in leaves}
        (o, ht), grads = _grads(fn, tensors, [x["do"], x["dht"]])
        return dict(o=o, ht=ht, **{"d" + n: grads[n] for n in leaves})

    # o / ht: the chunked forward the glue picks (tensor cores for fp16 / bf16 with a scalar or no gate);
    # o_simt / ht_simt: the SIMT chunked forward; o_rec / ht_rec: the recurrent one.
    names = dict(o="o", o_simt="o_simt", o_rec="o_rec", ht="ht", ht_simt="ht_simt", ht_rec="ht_rec", dq="dq",
                 dk="dk", dv="dv", dh0="dh0")
    wanted = dict(o="o", o_simt="o", o_rec="o", ht="ht", ht_simt="ht", ht_rec="ht", dq="dq", dk="dk", dv="dv",
                  dh0="dh0")
    if per_token:
        names["dg"], wanted["dg"] = "dg", "dg"
    if x["g_gamma"] is not None:  # the glue sums the per-token gate gradient over B and T
        names["dg_gamma"], wanted["dg_gamma"] = (lambda out: out["dg"].sum((0, 1))), "dg_gamma"
    if x.get("simt_backward"):  # both backward paths (tensor cores and SIMT) against the same reference
        for n in [n for n in names if n.startswith("d")]:
            src = names[n]
            names[n + "_simt"] = (lambda out: out["dg_simt"].sum((0, 1))) if n == "dg_gamma" else src + "_simt"
            wanted[n + "_simt"] = wanted[n]
    _check(emulated, cid, reference, names, wanted)


@pytest.mark.parametrize("cid", RANGE_CASES)
def test_gla_tcvec_fp16_states_beyond_fp16_range(emulated, cid):
    # The tensor-core forward (o, ht) against float64, relative to the largest reference value: PyTorch's fp16
    # recurrence overflows on these inputs, so it cannot set the tolerance.
    gla_recurrence = _reference("gla", "gla_recurrence")
    x, out = emulated(cid)
    assert "error" not in out, out.get("error")
    assert not out["racy"], f"outputs differ between two thread interleavings (a race): {out['racy']}"
    d = [x[n].double() for n in ("q", "k", "v", "g")]
    eo, eh = gla_recurrence(*d, None, x["scale"], x["h0"].double(), True, x["cu_seqlens"], dtype=torch.float64)
    assert eh.abs().max() > 65504
    for name, got, e, tol in (("o", out["o"], eo, 2e-3), ("ht", out["ht"], eh, 1e-3)):
        assert torch.isfinite(got).all(), name
        err = (got.double() - e).abs().max().item() / e.abs().max().item()
        assert err <= tol, f"{name}: max error {err:.2e} of the largest reference value"


DELTA_RANGE_CASES = ["delta-tc-dstate-fp16-beyond-range"]


@pytest.mark.parametrize("cid", [c for c in _ids("delta_rule") if c not in DELTA_RANGE_CASES])
def test_delta_rule_chunk_recurrent_and_backward(emulated, cid):
    delta_rule_recurrence = _reference("delta_rule", "delta_rule_recurrence")
    x, _ = emulated(cid)
    leaves = [n for n in ("q", "k", "v", "g", "beta", "h0") if x[n] is not None]

    def reference(dtype, x):
        def fn(q, k, v, beta, h0, g=None):
            return delta_rule_recurrence(q, k, v, beta, g, x["scale"], h0, True, False, x["cu_seqlens"], dtype=dtype)
        tensors = {n: x[n].double() if dtype else x[n] for n in leaves}
        (o, ht), grads = _grads(fn, tensors, [x["do"], x["dht"]])
        return dict(o=o, ht=ht, **{"d" + n: grads[n] for n in leaves})

    # o / ht: the chunked forward the glue picks (tensor cores for fp16 / bf16); o_simt / ht_simt: the SIMT
    # chunked forward (LINATTN_DELTA_FORCE_SIMT=1); o_rec / ht_rec: the recurrent one; o_inplace / ht_inplace: the
    # recurrent one writing the final state over the initial state's buffer; o_rec_l2 / ht_rec_l2 (cases with
    # l2): the recurrent kernel fed raw q, k that it L2-normalises in fp32.
    names = {n: n for n in ["o", "o_simt", "o_rec", "o_inplace", "ht", "ht_simt", "ht_rec", "ht_inplace"]
             + ["d" + n for n in leaves]}
    wanted = dict(names, o_simt="o", o_rec="o", o_inplace="o", ht_simt="ht", ht_rec="ht", ht_inplace="ht")
    if x.get("q_raw") is not None:  # the recurrent kernel normalising raw q, k itself (CUDA glue's decode path)
        names.update(o_rec_l2="o_rec_l2", ht_rec_l2="ht_rec_l2")
        wanted.update(o_rec_l2="o", ht_rec_l2="ht")
    if x.get("simt_backward"):  # both backward paths (states pass on tensor cores and SIMT) against the reference
        for n in [n for n in names if n.startswith("d")]:
            names[n + "_simt"], wanted[n + "_simt"] = n + "_simt", n
    _check(emulated, cid, reference, names, wanted)
    if x.get("simt_backward") and x["q"].dtype != F32:
        _check_delta_tc_grads_pass(x, emulated(cid)[1], reference(torch.float64, x), leaves)


def _check_delta_tc_grads_pass(x, out, exact, leaves):
    """The tensor-core pass 3 alone: SIMT passes 1 and 2, then the tensor-core pass 3 (d*_p3), against the all-SIMT
    backward (d*_simt), which reads the same fp32 workspaces. Its bf16 hi + lo products are good to ~2^-17, so the
    two agree to an output-dtype rounding for dq, dk, dv (a value close to a rounding boundary may land on either
    side) and to 1e-4 of the largest reference value for the fp32 dbeta, dg, dh0 (seen: <= 1e-5)."""
    ulp = {F16: 2.0 ** -10, BF16: 2.0 ** -7}[x["q"].dtype]
    failures = []
    for n in leaves:
        got, simt, scale = out["d" + n + "_p3"].double(), out["d" + n + "_simt"].double(), exact["d" + n].abs().max()
        bound = ((ulp if n in ("q", "k", "v") else 0.0) + 1e-4) * max(scale.item(), 1e-30)
        err = (got - simt).abs().max().item()
        if not err <= bound:
            failures.append(f"d{n}: tensor-core pass 3 differs from the SIMT one by {err:.3e} > {bound:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("cid", DELTA_RANGE_CASES)
def test_delta_tc_fp16_dstate_beyond_fp16_range(emulated, cid):
    # The glue's backward (tensor-core states and dstates passes) against float64, relative to each gradient's
    # largest reference value: PyTorch's fp16 recurrence overflows on these inputs, so it cannot set the
    # tolerance. dS passes 65504 (asserted on dht); the gradients fit fp16 and must come back finite.
    delta_rule_recurrence = _reference("delta_rule", "delta_rule_recurrence")
    x, out = emulated(cid)
    assert "error" not in out, out.get("error")
    assert not out["racy"], f"outputs differ between two thread interleavings (a race): {out['racy']}"
    leaves = [n for n in ("q", "k", "v", "g", "beta", "h0") if x[n] is not None]

    def fn(q, k, v, beta, h0, g=None):
        return delta_rule_recurrence(q, k, v, beta, g, x["scale"], h0, True, False, x["cu_seqlens"],
                                     dtype=torch.float64)
    _, grads = _grads(fn, {n: x[n].double() for n in leaves}, [x["do"], x["dht"]])
    assert x["dht"].abs().max() > 65504
    for n in leaves:
        got, e = out["d" + n].double(), grads[n]
        assert torch.isfinite(got).all(), "d" + n
        err = (got - e).abs().max().item() / e.abs().max().item()
        assert err <= 2e-3, f"d{n}: max error {err:.2e} of the largest reference value"


@pytest.mark.parametrize("cid", _ids("swa"))
def test_sliding_window_attention(emulated, cid):
    sliding_window_attention_reference = _reference("swa", "sliding_window_attention_reference")
    x, _ = emulated(cid)

    def reference(dtype, x):
        def fn(q, k, v):
            o = sliding_window_attention_reference(q, k, v, x["window"], x["scale"], x["cu_seqlens"],
                                                   dtype=dtype or q.dtype)
            return (o,)
        tensors = {n: x[n].double() if dtype else x[n] for n in ("q", "k", "v")}
        (o,), grads = _grads(fn, tensors, [x["do"]])
        return dict(o=o, dq=grads["q"], dk=grads["k"], dv=grads["v"])

    # fp16 / bf16: o.. from the tensor-core forward (and the backward fed by it), o_simt.. from the SIMT forward.
    _, out = emulated(cid)
    base = ("o", "dq", "dk", "dv")
    names = {n: n for n in base + tuple(n + "_simt" for n in base if n + "_simt" in out)}
    wanted = {n: n.removesuffix("_simt") for n in names}
    _check(emulated, cid, reference, names, wanted)
    _check_swa_lse(x, out)


def _check_swa_lse(x, out):
    """The forward's log-sum-exp (the backward's saved statistic) against float64, per (token, head): fp32
    within 1e-5 relative; fp16 / bf16 within a few roundings of the probabilities to the input dtype (the
    tensor-core forward sums the rounded values)."""
    q, k = x["q"].double(), x["k"].double()
    B, T, H, _ = q.shape
    cu = x["cu_seqlens"]
    spans = [(b, 0, T) for b in range(B)] if cu is None else [(0, s, e) for s, e in zip(cu[:-1].tolist(),
                                                                                        cu[1:].tolist())]
    want = torch.zeros(B, T, H, dtype=torch.float64)
    for b, s, e in spans:
        i, j = torch.arange(e - s).unsqueeze(1), torch.arange(e - s).unsqueeze(0)
        mask = (j <= i) & (j > i - x["window"])
        sc = torch.einsum("ihd,jhd->hij", q[b, s:e], k[b, s:e]) * x["scale"]
        want[b, s:e] = sc.masked_fill(~mask, float("-inf")).logsumexp(-1).transpose(0, 1)
    tol = {F32: 1e-5, F16: 2.0 ** -9, BF16: 2.0 ** -6}[x["q"].dtype]
    for name in ("lse", "lse_simt"):
        if name in out:
            err = (out[name].double() - want).abs().max().item() if want.numel() else 0.0
            assert err <= tol * max(1.0, want.abs().max().item()), f"{name}: max error {err:.3e}"


@pytest.mark.parametrize("cid", _ids("lolcats"))
def test_lolcats_attention(emulated, cid):
    lolcats_attention_reference = _reference("lolcats", "lolcats_attention_reference")
    x, _ = emulated(cid)
    leaves = ["q", "k", "v", "fq", "fk", "window_factor"]

    def reference(dtype, x):
        def fn(**t):
            o = lolcats_attention_reference(*(t[n] for n in leaves), x["window"], x["scale"],
                                            dtype=dtype or t["q"].dtype)
            return (o,)
        tensors = {n: x[n].double() if dtype else x[n] for n in leaves}
        (o,), grads = _grads(fn, tensors, [x["do"]])
        return dict(o=o, **{"d" + n: grads[n] for n in leaves})

    names = {n: n for n in ["o"] + ["d" + n for n in leaves]}
    _check(emulated, cid, reference, names, names)


@pytest.mark.parametrize("cid", _ids("liger"))
def test_liger_attention_fused(emulated, cid):
    gla_recurrence = _reference("gla", "gla_recurrence")
    sliding_window_attention_reference = _reference("swa", "sliding_window_attention_reference")
    x, out = emulated(cid)
    leaves = [n for n in ("q", "k", "v", "g", "q_rot", "k_rot", "h0") if x[n] is not None]

    def reference(dtype, x):
        # The definition: sw * SWA(q_rot, k_rot, v) + lw * GLA(softmax(q), softmax(k), v, g, scale 1), in float64
        # (dtype) or in the inputs' precision (None), every step in that precision.
        def fn(q, k, v, g, q_rot, k_rot, h0=None):
            lin, ht = gla_recurrence(q.softmax(-1), k.softmax(-1), v, g, None, 1.0, h0, True, dtype=dtype)
            win = sliding_window_attention_reference(q_rot, k_rot, v, x["window"], x["scale"], dtype=dtype or q.dtype)
            return x["softmax_weight"] * win + x["linear_weight"] * lin, ht
        tensors = {n: x[n].double() if dtype else x[n] for n in leaves}
        (o, ht), grads = _grads(fn, tensors, [x["do"], x["dht"]])
        return dict(o=o, ht=ht, **{"d" + n: grads[n] for n in leaves})

    names = {n: n for n in ["o", "ht"] + ["d" + n for n in leaves]}
    if x["simt"]:
        names.update({n + "_simt": n + "_simt" for n in list(names)})
    _check(emulated, cid, reference, names, {n: n.removesuffix("_simt") for n in names})


def test_emulator_catches_broken_kernels(emulated):
    x, out = emulated("selftest")
    assert "error" not in out, out.get("error")
    blocks = 16  # kSelftestBlocks in tests/emulator/selftest/broken_kernels.cuh
    want = torch.arange(64).add(1).remainder(64).float().repeat(blocks, 1)
    assert torch.equal(out["exchange"], want), "a correct kernel must give exact results"
    mirrored = torch.arange(63.0, -1.0, -1.0).repeat(blocks, 1)
    for name, correct in (("missing_barrier", want), ("static_race", mirrored)):
        assert isinstance(out[name], torch.Tensor), out[name]
        assert not torch.equal(out[name], correct), f"{name}: a missing __syncthreads went unnoticed"
        assert name in out["racy"], f"{name}: two interleavings gave the same output"
    assert "exchange" not in out["racy"]
    assert "__syncthreads not reached by every thread" in out["divergent_barrier"]
    assert "different __syncthreads" in out["split_barrier"]
    assert "never reach it" in out["shuffle_exited_lane"]
    assert ASAN or "write outside dynamic shared memory" in out["smem_overflow"]
    assert "not 256-bit aligned" in out["wmma_misaligned"]
    for dt in (F16, BF16):
        expect = x["values"].to(dt).float()
        got = out["round_trip_" + str(dt).split(".")[-1]]
        assert torch.equal(got.isnan(), expect.isnan())
        assert torch.equal(got[~got.isnan()], expect[~expect.isnan()]), f"{dt} conversion differs from PyTorch's"
