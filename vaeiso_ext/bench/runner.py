"""Command line, case registry, table and JSON output of the benchmark.

Every ratio is baseline time / fused time, the median over alternating A/B pairs of timed blocks
with its spread (min-max over the pairs). A recording (``--json``) is refused when the machine was
busy: the 1-minute load average before the start above 0.3 per core, or the process got less than
85% of the CPU time it asked for while timing (CPU time / (CPU time + run-queue wait)).
``--allow-busy`` writes it anyway, marked ``"busy": true``; every table made from it says so.

Every recording names its machine (processor model, CPU kernel build, cores, L2 and L3, the
allocator policy, the copy bandwidth and GEMM rate of the same run), and a second table gives the
minor page faults per call of every implementation. The run uses the allocator a user's process
has (glibc's defaults); ``--steady-allocator`` fixes glibc's thresholds first (a second view).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import warnings
from dataclasses import asdict

import torch

from . import cases_distance, cases_gdn, cases_ms_ssim, cases_small, cases_ssim, core
from .core import MIN_PAIRS, copy_bandwidth_gbps, gemm_gflops, run_case

# op family -> module with cases(device, quick, compile_baselines)
CASE_FAMILIES = {
    "gdn": cases_gdn,
    "ssim": cases_ssim,
    "distance": cases_distance,
    "ms_ssim": cases_ms_ssim,
    "small": cases_small,
}


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m vaeiso_ext.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes, short blocks, {core.QUICK_PAIRS} pairs, no torch.compile baselines (a smoke run)",
    )
    p.add_argument("--json", metavar="PATH", help="write all results to this JSON file (refused on a busy machine)")
    p.add_argument(
        "--allow-busy",
        action="store_true",
        help='write the --json recording even when the machine was busy, marked "busy": true',
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument(
        "--pairs",
        type=int,
        default=None,
        help=f"A/B pairs per baseline (at least {MIN_PAIRS}; default {core.PAIRS}, {core.QUICK_PAIRS} with --quick)",
    )
    p.add_argument(
        "--only",
        metavar="OP",
        action="append",
        help=f"run only these op families (repeatable): {', '.join(CASE_FAMILIES)}",
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    p.add_argument(
        "--steady-allocator",
        action="store_true",
        help="fix glibc malloc's thresholds first (mmap above 1 GiB, no trimming): every "
        "implementation in a long run's steady state; default: the allocator as a "
        "user's process has it",
    )
    p.add_argument("--table", metavar="PATH", help="print the table of a recorded JSON file and exit (no timing)")
    return p.parse_args(argv)


def run(
    device="cpu",
    quick=False,
    threads=None,
    only=None,
    compile_baselines=True,
    overrides=None,
    progress=True,
    pairs=None,
    load_before=None,
    allocator=None,
) -> dict:
    """Run the benchmark and return the JSON-ready report. ``overrides`` maps a family to keyword
    arguments for its ``cases()`` (the test hook that injects a wrong kernel). ``load_before`` is
    the load average read before the start (read here when not given); ``allocator`` describes
    the allocator policy the caller set (``core.steady_allocator``), recorded as is; None: the
    default (``core.default_allocator``)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda asked for, but torch sees no CUDA device")
    if load_before is None:
        load_before = core.LOAD_READER()
    if threads:
        torch.set_num_threads(threads)
    families = only or list(CASE_FAMILIES)
    unknown = [f for f in families if f not in CASE_FAMILIES]
    if unknown:
        raise SystemExit(f"bench: unknown op family {unknown}; choose from {list(CASE_FAMILIES)}")
    pairs = pairs or (core.QUICK_PAIRS if quick else core.PAIRS)
    # torch.compile baselines: each (size, variant, grad mode) of one reference function is a
    # recompilation of the same code; past dynamo's default limit (8) it silently runs the
    # function eagerly, and the "compile" column would time eager code. Allow enough for every case.
    from torch import _dynamo

    if getattr(_dynamo.config, "recompile_limit", 64) < 64:
        _dynamo.config.recompile_limit = 64
    block_s = core.QUICK_BLOCK_S if quick else core.BLOCK_S
    bandwidth = copy_bandwidth_gbps(device, mbytes=32 if quick else 256, block_s=block_s)
    gemm = gemm_gflops(device, n=256 if quick else 1024, block_s=block_s)
    if allocator is None:
        allocator = core.default_allocator()
    usage = core.Usage()
    rows = []
    for fam in families:
        kw = (overrides or {}).get(fam, {})
        with warnings.catch_warnings():  # a peer's import-time deprecation notice is not ours to print
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            cases = CASE_FAMILIES[fam].cases(device, quick, compile_baselines and not quick, **kw)
        for case in cases:
            if progress:  # on stdout: stderr carries errors only
                print(f"  {case.op:18s} {case.size:24s} {case.mode:8s}", flush=True)
            rows.extend(run_case(case, device, bandwidth, pairs, block_s, usage, gemm))
    load_after = core.LOAD_READER()
    cpu_count = os.cpu_count() or 1
    reasons = core.busy_reasons(load_before, cpu_count, usage.share)
    import vaeiso_ext

    return {
        "device": device,
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.startswith("cuda")
            else platform.processor() or platform.machine()
        ),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "build": vaeiso_ext.build_info(),
        "quick": quick,
        "pairs": pairs,
        "block_ms": 1e3 * block_s,
        "copy_bandwidth_gbps": bandwidth,
        "gemm_gflops": gemm,
        "allocator": allocator,
        "machine": core.machine_info(device, allocator, bandwidth, gemm),
        "cpu_count": cpu_count,
        "load_before": load_before,
        "load_after": load_after,
        "cpu_share": usage.share,
        "timing": {
            "blocks": usage.blocks,
            "wall_s": usage.wall_s,
            "cpu_s": usage.cpu_s,
            "run_queue_wait_s": usage.wait_s,
        },
        "busy": bool(reasons),
        "busy_reasons": reasons,
        "results": [asdict(r) for r in rows],
    }


def _x(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def busy_warning(report: dict) -> str | None:
    """The warning line of a report recorded on a busy machine (None for a quiet one)."""
    if not report.get("busy"):
        return None
    why = "; ".join(report.get("busy_reasons") or ["marked busy"])
    return f"> **WARNING: recorded on a busy machine** ({why}): these figures are the machine's, not the code's."


def format_header(report: dict) -> str:
    """What was measured where: device, threads, bandwidth, load and CPU share, the ratio rule."""
    share = report.get("cpu_share")
    load = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [core.format_machine(report["machine"])] if report.get("machine") else []
    lines += [
        f"vaeiso_ext.bench on {report['device']} ({report['device_name']}), "
        f"{report['threads']} threads, torch {report['torch']}, "
        f"copy bandwidth {report['copy_bandwidth_gbps']:.1f} GB/s"
        + (f", float32 GEMM {report['gemm_gflops']:.0f} GFLOP/s" if report.get("gemm_gflops") else "")
    ]
    if "load_before" in report:
        lines.append(
            f"load average {load(report['load_before'])} before, {load(report['load_after'])} after "
            f"({report['cpu_count']} cores); CPU share while timing "
            + ("n/a" if share is None else f"{100 * share:.1f}%")
        )
    if report.get("allocator") and not report.get("machine"):  # a recording made before the machine line
        lines.append(report["allocator"] + " (the same steady state for every implementation)")
    pairs = f"median of {report['pairs']} A/B pairs (min-max over the pairs)" if "pairs" in report else "medians"
    lines.append(f"speedup = baseline time / fused time; {pairs}")
    return "\n".join(lines)


def format_table(report: dict) -> str:
    """Markdown table: one line per (op, size, mode) with the fused time and each baseline's
    median ratio with its spread; preceded by a warning line when the report was busy."""
    groups: dict[tuple, dict] = {}
    impls: list[str] = []
    for r in report["results"]:
        key = (r["op"], r["size"], r["mode"])
        groups.setdefault(key, {})[r["impl"]] = r
        if r["impl"] != "fused" and r["impl"] not in impls:
            impls.append(r["impl"])
    # GFLOP/s columns only when some case counts its FLOPs (compute-bound ops)
    compute = any(r.get("gflops") for r in report["results"])
    head = (
        ["op", "size", "mode", "fused ms", "GB/s", "% copy bw"]
        + (["GFLOP/s", "% GEMM"] if compute else [])
        + [f"vs {i}" for i in impls]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (op, size, mode), g in groups.items():
        f = g.get("fused", {})
        if f.get("status", "ok") != "ok":
            cells = [op, size, mode, f["status"], "", ""] + (["", ""] if compute else []) + ["" for _ in impls]
        else:
            cells = [
                op,
                size,
                mode,
                f"{f['median_ms']:.3f}",
                f"{f['gbps']:.1f}" if f.get("gbps") else "",
                f"{100 * f['bw_fraction']:.0f}%" if f.get("bw_fraction") else "",
            ]
            if compute:
                cells += [
                    f"{f['gflops']:.1f}" if f.get("gflops") else "",
                    f"{100 * f['gemm_fraction']:.0f}%" if f.get("gemm_fraction") else "",
                ]
            for i in impls:
                b = g.get(i)
                if b is None:
                    cells.append("")
                elif b["status"] != "ok":
                    cells.append("n/a")
                elif b.get("ratio_min") is None:  # a recording made before the pairs
                    cells.append(f"{_x(b['speedup'])}x")
                else:
                    cells.append(f"{_x(b['speedup'])}x ({_x(b['ratio_min'])}-{_x(b['ratio_max'])})")
        lines.append("| " + " | ".join(cells) + " |")
    warning = busy_warning(report)
    faults = format_faults(report)
    return "\n".join(([warning, ""] if warning else []) + lines + (["", faults] if faults else []))


def _pf(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def format_faults(report: dict) -> str | None:
    """Markdown table of minor page faults per call, fused and each baseline (None for a
    recording without them)."""
    if not any(r.get("faults_per_call") is not None for r in report["results"]):
        return None
    groups: dict[tuple, dict] = {}
    impls: list[str] = []
    for r in report["results"]:
        groups.setdefault((r["op"], r["size"], r["mode"]), {})[r["impl"]] = r
        if r["impl"] != "fused" and r["impl"] not in impls:
            impls.append(r["impl"])
    head = ["op", "size", "mode", "fused"] + impls
    lines = [
        "minor page faults per call (" + (report.get("allocator") or "allocator not recorded") + ")",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for (op, size, mode), g in groups.items():
        cells = [op, size, mode]
        for i in ["fused"] + impls:
            r = g.get(i)
            cells.append("" if r is None else _pf(r.get("faults_per_call")) if r.get("status", "ok") == "ok" else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _refusal(reasons: list[str], path: str, ran: bool) -> str:
    return (
        f"--json refused, the machine is busy ({'; '.join(reasons)}): "
        f"{'nothing written to' if ran else 'nothing run and nothing written to'} {path}; "
        "record when `uptime` shows a quiet machine, or pass --allow-busy to write it marked busy"
    )


def main(argv=None) -> int:
    args = _parse(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        return _error(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return _error("--device cuda asked for, but torch sees no CUDA device")
    if args.pairs is not None and args.pairs < MIN_PAIRS:
        return _error(f"--pairs: at least {MIN_PAIRS}, got {args.pairs}")
    if args.table:
        try:
            with open(args.table) as fh:
                report = json.load(fh)
            print(format_header(report) + "\n\n" + format_table(report))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return _error(f"--table: cannot read a benchmark recording from {args.table}: {e}")
        return 0
    load_before = core.LOAD_READER()
    if args.json and not args.allow_busy:  # busy before the start: do not spend minutes first
        reasons = core.busy_reasons(load_before, os.cpu_count() or 1, None)
        if reasons:
            return _error(_refusal(reasons, args.json, ran=False))
    policy = None
    if args.steady_allocator:
        policy = core.steady_allocator()
        if policy is None:
            return _error("--steady-allocator: fixing malloc's thresholds needs glibc (Linux); run without it")
    report = run(
        args.device,
        args.quick,
        args.threads,
        args.only,
        not args.no_compile,
        pairs=args.pairs,
        load_before=load_before,
        allocator=policy,
    )
    print("\n" + format_header(report) + "\n")
    print(format_table(report))
    if args.json:
        if report["busy"] and not args.allow_busy:
            return _error(_refusal(report["busy_reasons"], args.json, ran=True))
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"\nwrote {args.json}" + (" (marked busy)" if report["busy"] else ""))
    failed = [r for r in report["results"] if r["status"].startswith("FAILED")]
    return 1 if failed else 0
