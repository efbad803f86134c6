"""Timing, memory, budget and failure handling shared by the benchmark sections.

Every measurement goes through `Ctx.time` / `Ctx.peak_mib` / `Ctx.attempt` so that one refused shape, one
missing kernel or one OOM becomes an "n/a" cell with a reason instead of ending the run, and so that a lost
CUDA context (illegal address, device assert) stops further GPU work but still lets the report be written."""
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

# Larger than the L2 of any current GPU (H100: 50 MB, H200: 60 MB, B200: 126 MB), so zeroing it evicts the
# inputs of the previous repetition: decode states of a few MB would otherwise be timed from L2.
L2_FLUSH_BYTES = 256 * 2**20

# Messages after which the CUDA context is unusable: every later call would fail with the same error.
_STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                       "misaligned address", "illegal instruction", "CUDA error: an illegal")


class NA:
    """A missing measurement and why it is missing (rendered as "n/a" plus a footnote)."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self):
        return f"NA({self.reason!r})"


def is_num(x) -> bool:
    return isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x))


def show(x, spec: str = ".3f") -> str:
    """A measurement for the progress log."""
    return format(x, spec) if is_num(x) else "n/a"


def short_error(e: BaseException, limit: int = 110) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    # The dispatcher's "Could not run ... with arguments from the 'CUDA' backend" is the useful first line;
    # for others the first line is the message itself.
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text}"[:limit]


class Budget:
    """Wall-clock allowance of one section (device time is the scarce resource on the GPU machine)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exhausted(self) -> bool:
        return self.elapsed() > self.seconds


@dataclass
class Ctx:
    device: torch.device
    dtype: torch.dtype
    dry_run: bool
    max_reps: int
    min_reps: int
    target_ms: float
    ceilings: Dict[str, float] = field(default_factory=dict)  # filled by the ceilings section
    broken: Optional[str] = None  # first sticky CUDA error, if any
    budget: Budget = field(default_factory=lambda: Budget(float("inf")))
    on_progress: Optional[Callable[[dict], None]] = None  # saves a section's partial result
    cases: Optional[List[str]] = None  # chunked: labels (or SHAPES indices) to run; None = all
    previous: Dict[str, dict] = field(default_factory=dict)  # sections already in the day's JSON
    _flush: Optional[torch.Tensor] = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def log(self, msg: str):
        print(f"[{self.budget.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)

    def progress(self, partial: dict):
        """Called by a section after every case, so that a run cut short keeps the cases it finished."""
        if self.on_progress is not None:
            self.on_progress(partial)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- failure handling ------------------------------------------------------------------------------------
    def skip_reason(self) -> Optional[str]:
        if self.broken:
            return f"skipped: CUDA context lost earlier ({self.broken[:60]})"
        if self.budget.exhausted():
            return f"skipped: section time budget ({self.budget.seconds:.0f} s) used up"
        return None

    def attempt(self, fn: Callable, *args, **kwargs):
        """fn(...) or NA(reason). Out-of-memory frees the cache; a sticky CUDA error marks the context lost."""
        reason = self.skip_reason()
        if reason:
            return NA(reason)
        try:
            return fn(*args, **kwargs)
        except torch.OutOfMemoryError:
            if self.cuda:
                torch.cuda.empty_cache()
            return NA("out of memory")
        except Exception as e:  # a refused shape, a missing kernel, an fla assertion: one cell, not the run
            msg = short_error(e)
            if self.cuda and any(s in str(e) for s in _STICKY_CUDA_ERRORS):
                self.broken = msg
            return NA(msg)

    # -- timing ----------------------------------------------------------------------------------------------
    def _flush_l2(self):
        if self._flush is None:
            self._flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device)
        self._flush.zero_()

    def _reps(self, estimate_ms: float) -> int:
        if self.target_ms <= 0 or estimate_ms <= 0:
            return self.max_reps
        return int(min(self.max_reps, max(self.min_reps, math.ceil(self.target_ms / estimate_ms))))

    def time(self, fn: Callable[[], object], graph: bool = False) -> float:
        """Median milliseconds of fn() over adaptive repetitions after a warm-up call.

        The warm-up absorbs Triton autotuning / compilation and allocator growth; one more timed call sets
        the repetition count (enough for about target_ms, clamped to [min_reps, max_reps]), so that a slow
        kernel at a large shape costs a few calls, not max_reps. On CUDA each repetition is bracketed by
        events with the L2 flushed just before the start event. graph=True captures fn in a CUDA graph and
        times replays, which removes the host launch overhead that dominates T=1 decoding."""
        if not self.cuda:
            fn()
            times = [_wall_ms(fn)]
            times += [_wall_ms(fn) for _ in range(self._reps(times[0]) - 1)]
            return statistics.median(times)
        if graph:
            fn = self._capture(fn)
        fn()
        self.sync()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self._flush_l2()
        start.record()
        fn()
        end.record()
        self.sync()
        n = self._reps(start.elapsed_time(end))
        events = []
        for _ in range(n):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._flush_l2()
            s.record()
            fn()
            e.record()
            events.append((s, e))
        self.sync()
        return statistics.median(s.elapsed_time(e) for s, e in events)

    def _capture(self, fn):
        # Warm up on a side stream first (the documented requirement before capture: lazy init, autotuning).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn()
            fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g.replay

    def peak_mib(self, fn: Callable[[], object], before: Optional[Callable[[], None]] = None):
        """Memory one call allocates beyond what is live before it (max_memory_allocated after a reset).
        CUDA only: the CPU allocator keeps no such statistics."""
        if not self.cuda:
            return NA("CPU: no allocator statistics")
        if before is not None:
            before()
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2**20


def _wall_ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


class FwdBwd:
    """One training step of an op: forward, then backward of a fixed random output gradient.

    The output gradient is drawn on the first (warm-up) call, so timed calls contain only the op."""

    def __init__(self, fn: Callable[[], object], leaves: List[torch.Tensor]):
        self.fn, self.leaves, self.do = fn, leaves, None

    def clear(self):
        for t in self.leaves:
            t.grad = None

    def __call__(self):
        self.clear()
        out = self.fn()
        o = out[0] if isinstance(out, (tuple, list)) else out
        if self.do is None:
            self.do = torch.randn_like(o)
        o.backward(self.do)


def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return fn()
    return run


def max_abs_diff(a, b):
    a = a[0] if isinstance(a, (tuple, list)) else a
    b = b[0] if isinstance(b, (tuple, list)) else b
    return (a.detach().float() - b.detach().float()).abs().max().item()


def seed_for(*parts) -> int:
    """A reproducible seed per case, different between cases (inputs are fresh per case, never reused)."""
    h = 0
    for p in parts:
        for ch in str(p):
            h = (h * 131 + ord(ch)) % (2**31 - 1)
    return h


def measure_step(ctx, call: Callable[[], object], leaves: List[torch.Tensor], want_output: bool = False):
    """(fwd ms, fwd+bwd ms, fwd+bwd peak MiB, forward output or None) of call(); failures become NA."""
    fwd = ctx.attempt(ctx.time, no_grad(call))
    step = FwdBwd(call, leaves)
    fb = ctx.attempt(ctx.time, step)
    mem = ctx.attempt(ctx.peak_mib, step, step.clear) if is_num(fb) else fb
    step.clear()
    out = ctx.attempt(no_grad(call)) if want_output else None
    return fwd, fb, mem, out


def output_diff(a, b):
    """max |a - b| of two forward outputs, or NA when either is missing."""
    if a is None or b is None or isinstance(a, NA) or isinstance(b, NA):
        return NA("an output is missing")
    return max_abs_diff(a, b)
