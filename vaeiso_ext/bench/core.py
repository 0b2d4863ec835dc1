"""Benchmark machinery: timing, the correctness gate, bandwidth, and result rows.

A *case* is one op at one size in one mode (``fwd`` or ``fwd+bwd``). It carries the fused
implementation, the baselines to compare with (eager reference, ``torch.compile`` of it, peer
libraries), a correctness check run before anything is timed, and the bytes an ideal
implementation must move (for GB/s against the device's measured copy bandwidth).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


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


@dataclass
class Result:
    op: str
    size: str
    mode: str
    impl: str
    median_ms: float | None
    status: str = "ok"  # "ok", "FAILED: ...", "error: ..."
    speedup: float | None = None  # baseline time / fused time (rows of baselines only)
    gbps: float | None = None
    bw_fraction: float | None = None
    extra: dict = field(default_factory=dict)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, min_time: float = 0.3, warmup: int = 3,
              max_reps: int = 1000) -> float:
    """Median wall time of ``fn`` in ms after warm-up; CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    budget_end = time.perf_counter() + min_time
    while len(times) < 5 or (time.perf_counter() < budget_end and len(times) < max_reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbps(device: str, mbytes: int = 256) -> float:
    """Measured device copy bandwidth (read + write bytes per second), GB/s."""
    n = mbytes * (1 << 20) // 4
    src = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, min_time=0.5)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def run_case(case: Case, device: str, bandwidth: float, min_time: float) -> list[Result]:
    """Check the fused result, then time it and every baseline. A wrong fused result is a
    failure row, never a speedup."""
    try:
        case.check()
    except AssertionError as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else "mismatch"
        return [Result(case.op, case.size, case.mode, "fused", None, status=f"FAILED: {msg}")]
    fused_ms = median_ms(case.fused, device, min_time)
    gbps = case.bytes / (fused_ms * 1e-3) / 1e9 if case.bytes else None
    rows = [Result(case.op, case.size, case.mode, "fused", fused_ms, gbps=gbps,
                   bw_fraction=(gbps / bandwidth) if gbps and bandwidth else None)]
    for name, fn in case.baselines.items():
        try:
            ms = median_ms(fn, device, min_time)
            rows.append(Result(case.op, case.size, case.mode, name, ms, speedup=ms / fused_ms))
        except Exception as e:  # a peer or torch.compile that cannot run here is reported, not fatal
            rows.append(Result(case.op, case.size, case.mode, name, None,
                               status=f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"))
    return rows


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
