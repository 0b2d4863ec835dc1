"""Benchmark machinery: timing in A/B pairs, the correctness gate, busy detection, bandwidth, and
result rows.

A *case* is one op at one size in one mode (``fwd`` or ``fwd+bwd``). It carries the fused
implementation, the baselines to compare with (eager reference, ``torch.compile`` of it, peer
libraries), a correctness check run before anything is timed, and the bytes an ideal
implementation must move (for GB/s against the device's measured copy bandwidth).

Timing: after warm-up, the fused implementation (A) and one baseline (B) alternate in short timed
blocks, A B A B ... (``pairs`` pairs per baseline). A block is a run of repeated calls of one
implementation, each call timed alone (CUDA events on a GPU), and its time is the median of those
calls. Each pair gives one ratio, B's block time / A's: contention that comes and goes hits both
sides of a pair alike, and the spread of the ratios over the pairs shows how steady the run was.

Page faults: every timed block also counts the process's minor page faults (``getrusage``),
reported per call for the fused implementation and each baseline. A call that faults pays the
kernel for fresh zeroed pages: in a user's process (glibc's default malloc) that is what a
per-call multi-MB temporary costs. The run times with the allocator as a user's process has it;
``--steady-allocator`` (:func:`steady_allocator`) is the named second view with fixed thresholds.

Busy detection: the 1-minute load average before the start, and the share of the CPU the process
got while timing. A thread that is ready to run but finds every core taken waits on the kernel's
run queue; Linux counts that wait per thread (``/proc/self/task/*/schedstat``). The share is the
process's CPU time / (CPU time + run-queue wait), summed over all timed blocks of both sides: the
fraction of the CPU time the process asked for that it got. Unlike CPU time / (wall x threads) it
does not mistake a single-threaded baseline, or the serial parts of a multi-threaded one, for
contention: a thread that does not ask for a core is not counted as denied one.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

PAIRS = 7  # A/B pairs per baseline in a full run; --quick uses QUICK_PAIRS
QUICK_PAIRS = 5
MIN_PAIRS = 5
BLOCK_S = 0.1  # the length of one timed block, seconds (at least one call)
QUICK_BLOCK_S = 0.01
MAX_REPS = 1000  # calls per block at most
LOAD_PER_CORE = 0.3  # busy: 1-minute load average before the start above this per core ...
MIN_CPU_SHARE = 0.85  # ... or the process got less than this share of the CPU it asked for

# Seams (module attributes looked up at call time, so that tests can replace them).
WALL: Callable[[], float] = time.perf_counter  # wall clock, seconds


def read_load() -> float | None:
    """The 1-minute load average; None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def read_cpu() -> dict[int, tuple[float, float]] | None:
    """Per thread of this process: (CPU seconds, seconds waited on the run queue), from Linux's
    ``/proc/self/task/*/schedstat``; None where the kernel does not provide them."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                cpu_ns, wait_ns = fh.read().split()[:2]
        except (OSError, ValueError):  # the thread ended meanwhile, or no schedstat
            continue
        out[int(tid)] = (int(cpu_ns) * 1e-9, int(wait_ns) * 1e-9)
    return out or None


def read_minflt() -> int | None:
    """The process's minor page faults so far (all threads); None where there is no getrusage."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError):
        return None


LOAD_READER: Callable[[], float | None] = read_load
CPU_READER: Callable[[], dict[int, tuple[float, float]] | None] = read_cpu
FAULT_READER: Callable[[], int | None] = read_minflt


@dataclass
class Case:
    op: str
    size: str
    mode: str  # "fwd" or "fwd+bwd"
    fused: Callable[[], object]
    baselines: dict[str, Callable[[], object]]
    check: Callable[[], None]  # raises AssertionError when the fused result is wrong
    bytes: int = 0  # ideal traffic of one call, for GB/s
    notes: str = ""
    flops: int = 0  # floating-point operations of the textbook algorithm, for GFLOP/s (0: not compute-bound)


@dataclass
class Result:
    op: str
    size: str
    mode: str
    impl: str
    median_ms: float | None  # this implementation's median block time
    status: str = "ok"  # "ok", "FAILED: ...", "error: ..."
    speedup: float | None = None  # baseline rows: median over the pairs of baseline / fused
    gbps: float | None = None
    bw_fraction: float | None = None
    gflops: float | None = None  # fused rows of cases with flops: achieved GFLOP/s
    gemm_fraction: float | None = None  # ... over the same run's float32 GEMM GFLOP/s
    extra: dict = field(default_factory=dict)
    ratios: list[float] | None = None  # baseline rows: baseline / fused of each A/B pair
    ratio_min: float | None = None
    ratio_max: float | None = None
    fused_ms: float | None = None  # baseline rows: the fused median over this baseline's pairs
    faults_per_call: float | None = None  # minor page faults per timed call (None: not measured)


@dataclass
class Faults:
    """Minor page faults over the timed calls of one implementation (``measured`` turns False
    when a block had no reading)."""

    faults: int = 0
    calls: int = 0
    measured: bool = True

    def add(self, before: int | None, after: int | None, calls: int) -> None:
        if before is None or after is None:
            self.measured = False
            return
        self.faults += after - before
        self.calls += calls

    @property
    def per_call(self) -> float | None:
        return self.faults / self.calls if self.measured and self.calls else None


@dataclass
class Usage:
    """Time spent in timed blocks: wall time, the process's CPU time and its threads' run-queue
    wait (``measured`` turns False when a block had no CPU reading)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    wait_s: float = 0.0
    blocks: int = 0
    measured: bool = True

    def add(self, wall_s: float, before, after) -> None:
        self.wall_s += wall_s
        self.blocks += 1
        if before is None or after is None:
            self.measured = False
            return
        for tid, (cpu, wait) in after.items():  # a thread born in the block counts from zero
            cpu0, wait0 = before.get(tid, (0.0, 0.0))
            self.cpu_s += cpu - cpu0
            self.wait_s += wait - wait0

    @property
    def share(self) -> float | None:
        """CPU time got / CPU time asked for (got + run-queue wait); None when not measured."""
        asked = self.cpu_s + self.wait_s
        if not self.measured or self.blocks == 0 or asked <= 0:
            return None
        return self.cpu_s / asked


def busy_reasons(load_before: float | None, cpu_count: int, cpu_share: float | None) -> list[str]:
    """Why the machine counts as busy (empty when quiet); an unmeasured figure is no reason."""
    reasons = []
    if load_before is not None and load_before > LOAD_PER_CORE * cpu_count:
        reasons.append(
            f"1-minute load average {load_before:.2f} before the start > {LOAD_PER_CORE} x {cpu_count} cores"
        )
    if cpu_share is not None and cpu_share < MIN_CPU_SHARE:
        reasons.append(
            f"the process got {100 * cpu_share:.1f}% of the CPU time it asked for "
            f"while timing (< {100 * MIN_CPU_SHARE:.0f}%)"
        )
    return reasons


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _call_ms(fn: Callable[[], object], device: str) -> float:
    """One call's time in ms: CUDA events on a GPU, the wall clock on a CPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = WALL()
    fn()
    return (WALL() - t0) * 1e3


def warm_up(fn: Callable[[], object], device: str, block_s: float, calls: int = 3) -> int:
    """Run ``fn`` a few times (the first call may compile or allocate; two are enough for a call
    over half a second) and return how many calls fill a timed block of ``block_s`` seconds."""
    sync(device)
    ms = 0.0
    for i in range(calls):
        ms = _call_ms(fn, device)
        if i >= 1 and ms > 500:
            break
    return max(1, min(MAX_REPS, int(block_s * 1e3 / ms) if ms > 0 else MAX_REPS))


def time_block(fn: Callable[[], object], device: str, reps: int, usage: Usage, faults: Faults | None = None) -> float:
    """Median time in ms of ``reps`` calls of ``fn``, each timed alone; the block's wall time,
    CPU time and run-queue wait go to ``usage``, its minor page faults to ``faults``."""
    times = [0.0] * reps  # allocated before the count starts
    f0 = FAULT_READER()
    before = CPU_READER()
    w0 = WALL()
    for i in range(reps):
        times[i] = _call_ms(fn, device)
    sync(device)
    w1 = WALL()
    usage.add(w1 - w0, before, CPU_READER())
    if faults is not None:
        faults.add(f0, FAULT_READER(), reps)
    return statistics.median(times)


def median_ms(fn: Callable[[], object], device: str, block_s: float = BLOCK_S, blocks: int = MIN_PAIRS) -> float:
    """Median over ``blocks`` timed blocks of one implementation alone (after warm-up): for
    one-off measurements such as the copy bandwidth; comparisons use :func:`run_case`'s pairs."""
    reps = warm_up(fn, device, block_s)
    return statistics.median(time_block(fn, device, reps, Usage()) for _ in range(blocks))


def copy_bandwidth_gbps(device: str, mbytes: int = 256, block_s: float = BLOCK_S) -> float:
    """Measured device copy bandwidth (read + write bytes per second), GB/s."""
    n = mbytes * (1 << 20) // 4
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, block_s)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def default_allocator() -> str:
    """What a user's process has: the C library's malloc with its default settings."""
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        return "glibc malloc, default thresholds (a user's process)"
    return f"{platform.system() or 'this platform'}'s default malloc (a user's process)"


def steady_allocator() -> str | None:
    """Fix glibc malloc's thresholds for the rest of the process and say so (None elsewhere).

    By default glibc serves a large allocation with a fresh mmap (every page faulted in and
    zeroed on first touch) until a free of such a block raises the threshold, and returns freed
    memory at the heap's top to the system: how much an eager implementation pays for its
    temporaries then depends on what the process allocated before. Measured: pytorch_msssim's SSIM
    forward+backward at N=64 3x64x64 takes ~12,700 page faults a call in a fresh process and ~650
    with fixed thresholds; the same code read 5.5x and 9.9x against our fused op in two quiet runs.
    Fixed thresholds (mmap above 1 GiB only, no trimming) put every implementation in the steady
    state of a long training run, whatever ran before."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    except (OSError, AttributeError):
        return None
    return "glibc malloc: mmap threshold 1 GiB, no trimming" if ok else None


def gemm_gflops(device: str, n: int = 1024, block_s: float = BLOCK_S) -> float:
    """Measured float32 GEMM throughput (an n x n by n x n product), GFLOP/s: the machine's
    compute limit as the vendor BLAS reaches it, for the compute-bound ops' "% GEMM" column."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    ms = median_ms(lambda: torch.mm(a, b), device, block_s)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def run_case(
    case: Case,
    device: str,
    bandwidth: float,
    pairs: int = PAIRS,
    block_s: float = BLOCK_S,
    usage: Usage | None = None,
    gemm: float = 0.0,
) -> list[Result]:
    """Check the fused result, then time the fused implementation against each baseline in
    ``pairs`` alternating A/B pairs of blocks. A wrong fused result is a failure row, never a
    speedup. ``usage`` collects the CPU use of every timed block (for busy detection)."""
    if pairs < MIN_PAIRS:
        raise ValueError(f"run_case: pairs must be at least {MIN_PAIRS}, got {pairs}")
    usage = usage if usage is not None else Usage()
    try:
        case.check()
    except AssertionError as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else "mismatch"
        return [Result(case.op, case.size, case.mode, "fused", None, status=f"FAILED: {msg}")]
    fused_reps = warm_up(case.fused, device, block_s)
    fused_blocks: list[float] = []
    fused_faults = Faults()
    rows = []
    for name, fn in case.baselines.items():
        try:
            reps = warm_up(fn, device, block_s)
            a, b = [], []
            base_faults = Faults()
            for _ in range(pairs):
                a.append(time_block(case.fused, device, fused_reps, usage, fused_faults))
                b.append(time_block(fn, device, reps, usage, base_faults))
        except Exception as e:  # a peer or torch.compile that cannot run here is reported, not fatal
            rows.append(
                Result(
                    case.op,
                    case.size,
                    case.mode,
                    name,
                    None,
                    status=f"error: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}",
                )
            )
            continue
        fused_blocks += a
        ratios = [tb / ta for ta, tb in zip(a, b)]
        rows.append(
            Result(
                case.op,
                case.size,
                case.mode,
                name,
                statistics.median(b),
                speedup=statistics.median(ratios),
                ratios=ratios,
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                fused_ms=statistics.median(a),
                faults_per_call=base_faults.per_call,
            )
        )
    if not fused_blocks:  # no baseline ran: the fused implementation alone, as many blocks
        fused_blocks = [time_block(case.fused, device, fused_reps, usage, fused_faults) for _ in range(pairs)]
    fused_ms = statistics.median(fused_blocks)
    gbps = case.bytes / (fused_ms * 1e-3) / 1e9 if case.bytes else None
    gflops = case.flops / (fused_ms * 1e-3) / 1e9 if case.flops else None
    fused_row = Result(
        case.op,
        case.size,
        case.mode,
        "fused",
        fused_ms,
        gbps=gbps,
        bw_fraction=(gbps / bandwidth) if gbps and bandwidth else None,
        gflops=gflops,
        gemm_fraction=(gflops / gemm) if gflops and gemm else None,
        faults_per_call=fused_faults.per_call,
    )
    return [fused_row] + rows


def assert_close(got, want, rtol: float, atol: float, what: str) -> None:
    """Correctness gate comparison: raises AssertionError naming ``what``."""
    got_t = got if isinstance(got, (tuple, list)) else (got,)
    want_t = want if isinstance(want, (tuple, list)) else (want,)
    for i, (a, b) in enumerate(zip(got_t, want_t)):
        a, b = a.detach().double(), b.detach().double()
        if a.shape != b.shape:
            raise AssertionError(f"{what}[{i}]: shape {tuple(a.shape)} != {tuple(b.shape)}")
        err = (a - b).abs()
        tol = atol + rtol * b.abs()
        if not bool(torch.all(err <= tol)):
            raise AssertionError(f"{what}[{i}]: max abs error {err.max().item():.3g}")


def fwd_bwd(fn: Callable[..., torch.Tensor], inputs: tuple, grad: torch.Tensor) -> Callable[[], object]:
    """A closure running forward and backward of ``fn`` w.r.t. the inputs that require grad."""
    wrt = tuple(t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad)

    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out, wrt, grad)

    return run


# ------------------------------------------------------------------ the machine

CPUINFO_PATH = "/proc/cpuinfo"  # seams: tests point these at fake files
CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    import platform

    try:
        with open(CPUINFO_PATH) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cache_sizes_kb() -> dict[str, int | None]:
    """Data/unified cache sizes of the first core by level, KiB (``l2_kb``, ``l3_kb``; None when
    the OS does not say). An L3 is the slice the OS reports for that core's group (one CCX on
    AMD), not the sum over the package."""
    out: dict[str, int | None] = {"l2_kb": None, "l3_kb": None}
    try:
        entries = sorted(os.listdir(CACHE_DIR))
    except OSError:
        return out
    units = {"K": 1, "M": 1024, "G": 1024 * 1024}
    for e in entries:
        if not e.startswith("index"):
            continue
        try:

            def read(name, e=e):
                with open(os.path.join(CACHE_DIR, e, name)) as fh:
                    return fh.read().strip()

            level, kind, size = int(read("level")), read("type"), read("size")
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or level not in (2, 3) or not size:
            continue
        num, unit = (size[:-1], size[-1]) if size[-1] in units else (size, "B")
        try:
            kb = int(num) * units[unit] if unit in units else int(num) // 1024
        except ValueError:
            continue
        out[f"l{level}_kb"] = kb
    return out


def machine_info(device: str, allocator: str, bandwidth: float, gemm: float) -> dict:
    """What a figure depends on besides the code: the processor (model, the CPU kernel build in
    use, cores, L2 and L3), the allocator policy, and the copy bandwidth and float32 GEMM rate
    measured in the same run. On a GPU run the processor is the host's."""
    import vaeiso_ext

    info = {
        "cpu_model": cpu_model(),
        "cpu_isa": vaeiso_ext.build_info()["cpu_isa"],
        "cores": os.cpu_count() or 1,
        **cache_sizes_kb(),
        "allocator": allocator,
        "copy_bandwidth_gbps": bandwidth,
        "gemm_gflops": gemm,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _kb(v: int | None) -> str:
    if v is None:
        return "n/a"
    return f"{v // 1024} MB" if v >= 1024 and v % 1024 == 0 else f"{v} KB"


def format_machine(m: dict) -> str:
    """One line naming the machine of a recording (see :func:`machine_info`)."""
    return (
        f"machine: {m['cpu_model']}"
        + (f" + {m['gpu']}" if m.get("gpu") else "")
        + f", {m['cpu_isa']} CPU kernels, {m['cores']} cores, L2 {_kb(m.get('l2_kb'))}, "
        f"L3 {_kb(m.get('l3_kb'))}; copy bandwidth {m['copy_bandwidth_gbps']:.1f} GB/s, "
        f"float32 GEMM {m['gemm_gflops']:.0f} GFLOP/s; allocator: {m['allocator']}"
    )
