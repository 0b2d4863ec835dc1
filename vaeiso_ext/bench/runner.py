"""Command line, case registry, table and JSON output of the benchmark."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict

import torch

from . import cases_distance, cases_gdn, cases_ms_ssim, cases_ssim
from .core import copy_bandwidth_gbps, run_case

# op family -> module with cases(device, quick, compile_baselines)
CASE_FAMILIES = {"gdn": cases_gdn, "ssim": cases_ssim, "distance": cases_distance, "ms_ssim": cases_ms_ssim}


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m vaeiso_ext.bench", description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, short timing, no torch.compile baselines (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="write all results to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--only", metavar="OP", action="append",
                   help=f"run only these op families (repeatable): {', '.join(CASE_FAMILIES)}")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    return p.parse_args(argv)


def run(device="cpu", quick=False, threads=None, only=None, compile_baselines=True, overrides=None,
        progress=True) -> dict:
    """Run the benchmark and return the JSON-ready report. ``overrides`` maps a family to keyword
    arguments for its ``cases()`` (the test hook that injects a wrong kernel)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda asked for, but torch sees no CUDA device")
    if threads:
        torch.set_num_threads(threads)
    families = only or list(CASE_FAMILIES)
    unknown = [f for f in families if f not in CASE_FAMILIES]
    if unknown:
        raise SystemExit(f"bench: unknown op family {unknown}; choose from {list(CASE_FAMILIES)}")
    min_time = 0.05 if quick else 0.5
    bandwidth = copy_bandwidth_gbps(device, mbytes=32 if quick else 256)
    rows = []
    for fam in families:
        kw = (overrides or {}).get(fam, {})
        cases = CASE_FAMILIES[fam].cases(device, quick, compile_baselines and not quick, **kw)
        for case in cases:
            if progress:
                print(f"  {case.op:18s} {case.size:24s} {case.mode:8s}", file=sys.stderr, flush=True)
            rows.extend(run_case(case, device, bandwidth, min_time))
    import vaeiso_ext

    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "build": vaeiso_ext.build_info(),
        "quick": quick,
        "copy_bandwidth_gbps": bandwidth,
        "results": [asdict(r) for r in rows],
    }


def format_table(report: dict) -> str:
    """Markdown table: one line per (op, size, mode) with the fused time and each speedup."""
    groups: dict[tuple, dict] = {}
    impls: list[str] = []
    for r in report["results"]:
        key = (r["op"], r["size"], r["mode"])
        groups.setdefault(key, {})[r["impl"]] = r
        if r["impl"] != "fused" and r["impl"] not in impls:
            impls.append(r["impl"])
    head = ["op", "size", "mode", "fused ms", "GB/s", "% copy bw"] + [f"vs {i}" for i in impls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (op, size, mode), g in groups.items():
        f = g.get("fused", {})
        if f.get("status", "ok") != "ok":
            cells = [op, size, mode, f["status"], "", ""] + ["" for _ in impls]
        else:
            cells = [op, size, mode, f"{f['median_ms']:.3f}",
                     f"{f['gbps']:.1f}" if f.get("gbps") else "",
                     f"{100 * f['bw_fraction']:.0f}%" if f.get("bw_fraction") else ""]
            for i in impls:
                b = g.get(i)
                if b is None:
                    cells.append("")
                elif b["status"] != "ok":
                    cells.append("n/a")
                else:
                    cells.append(f"{b['speedup']:.2f}x ({b['median_ms']:.3f} ms)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import re
    import sys

    args = _parse(argv)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        print(f"error: --device: expected cpu, cuda or cuda:N, got {args.device!r}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    report = run(args.device, args.quick, args.threads, args.only, not args.no_compile)
    print(f"\nvaeiso_ext.bench on {report['device']} ({report['device_name']}), "
          f"{report['threads']} threads, torch {report['torch']}, "
          f"copy bandwidth {report['copy_bandwidth_gbps']:.1f} GB/s")
    print("speedup = baseline time / fused time; times are medians\n")
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"\nwrote {args.json}")
    failed = [r for r in report["results"] if r["status"].startswith("FAILED")]
    return 1 if failed else 0
