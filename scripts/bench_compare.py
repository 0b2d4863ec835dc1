"""Recordings of ``python -m vaeiso_ext.bench --json`` side by side, as the markdown tables of
docs/benchmarks.md: one column per recording (its label), each cell the median ratio with its
(min-max) over the A/B pairs, then the fused op's minor page faults per call in each.

    python scripts/bench_compare.py AVX-512=bench/cpu_2threads_avx512.json AVX2=bench/cpu_2threads_avx2.json
    python scripts/bench_compare.py --op small before=a.json after=b.json   # every row of an op family

Without ``--op`` it prints the rows the goals are stated on (GOAL_ROWS); with ``--op`` every
(size, mode, baseline) of those op families. "GEMM floor" rows are turned round to fused time /
floor time (1 = at the limit), as the goals are stated; every other row is baseline / fused."""

from __future__ import annotations

import argparse
import json

# (op, size, mode, baseline impl, how the docs name the measure)
GOAL_ROWS = [
    ("ssim", "N=64 C=3 64x64", "fwd+bwd", "pytorch_msssim", "vs pytorch_msssim"),
    ("ssim", "N=8 C=3 256x256", "fwd+bwd", "pytorch_msssim", "vs pytorch_msssim"),
    ("ms_ssim", "N=4 C=3 256x256", "fwd+bwd", "pytorch_msssim", "vs pytorch_msssim"),
    ("ms_ssim", "N=16 C=3 256x256", "fwd+bwd", "pytorch_msssim", "vs pytorch_msssim"),
    ("ssim_l1_loss", "N=4 C=3 256x256", "fwd+bwd", "fused 1-ssim + eager L1", "vs our 1 − SSIM + eager L1"),
    ("ssim_l1_loss", "N=16 C=3 256x256", "fwd+bwd", "fused 1-ssim + eager L1", "vs our 1 − SSIM + eager L1"),
    ("ssim_l1_loss", "N=4 C=3 512x768", "fwd+bwd", "fused 1-ssim + eager L1", "vs our 1 − SSIM + eager L1"),
    ("gdn", "N=16 C=64 32x32", "fwd", "GEMM floor", "fused time / its GEMM floor"),
    ("gdn", "N=16 C=64 32x32", "fwd+bwd", "GEMM floor", "fused time / its GEMM floor"),
    ("gdn", "N=16 C=128 32x32", "fwd", "GEMM floor", "fused time / its GEMM floor"),
    ("gdn", "N=16 C=128 32x32", "fwd+bwd", "GEMM floor", "fused time / its GEMM floor"),
    ("gdn", "N=16 C=192 32x32", "fwd", "GEMM floor", "fused time / its GEMM floor"),
    ("gdn", "N=16 C=192 32x32", "fwd+bwd", "GEMM floor", "fused time / its GEMM floor"),
    ("igdn", "N=16 C=64 32x32", "fwd+bwd", "GEMM floor", "fused time / its GEMM floor"),
    ("igdn", "N=16 C=192 32x32", "fwd+bwd", "GEMM floor", "fused time / its GEMM floor"),
    ("nn.gdn", "N=16 C=64 32x32", "fwd+bwd", "GEMM floor", "module time / its GEMM floor"),
    ("nn.gdn", "N=16 C=128 32x32", "fwd+bwd", "GEMM floor", "module time / its GEMM floor"),
    ("nn.gdn", "N=16 C=192 32x32", "fwd+bwd", "GEMM floor", "module time / its GEMM floor"),
    ("nn.igdn", "N=16 C=64 32x32", "fwd+bwd", "GEMM floor", "module time / its GEMM floor"),
    ("nn.igdn", "N=16 C=192 32x32", "fwd+bwd", "GEMM floor", "module time / its GEMM floor"),
    ("pair_distances downward", "toy N=4096 K=32 16", "fwd", "compile", "vs `torch.compile` of the reference"),
    ("pair_distances downward", "toy N=4096 K=32 16", "fwd+bwd", "compile", "vs `torch.compile` of the reference"),
    ("pair_distances downward", "image N=16 K=32 3x64x64", "fwd", "compile", "vs `torch.compile` of the reference"),
    ("pair_distances downward", "image N=16 K=32 3x64x64", "fwd+bwd", "compile", "vs `torch.compile` of the reference"),
]


def _index(report: dict) -> dict:
    return {(r["op"], r["size"], r["mode"], r["impl"]): r for r in report["results"]}


def _cell(row: dict | None, floor: bool) -> str:
    if row is None or not row.get("ratios"):
        return "-"
    med, lo, hi = row["speedup"], row["ratio_min"], row["ratio_max"]
    if floor:  # fused / floor: the reciprocal, its spread swapped
        med, lo, hi = 1 / med, 1 / hi, 1 / lo
    return f"{med:.3g}x ({lo:.3g}-{hi:.3g})"


def _faults(row: dict | None) -> str:
    return "-" if row is None or row.get("faults_per_call") is None else f"{row['faults_per_call']:.2f}"


def rows_for(reports: list[dict], ops: list[str] | None) -> list[tuple]:
    if not ops:
        return GOAL_ROWS
    seen = []
    for rep in reports:
        for r in rep["results"]:
            key = (r["op"], r["size"], r["mode"], r["impl"])
            if (
                (r["op"] in ops or r["op"].split()[0] in ops)
                and r["impl"] != "fused"
                and r.get("ratios")
                and key not in [s[:4] for s in seen]
            ):
                name = "fused time / its GEMM floor" if r["impl"] == "GEMM floor" else f"vs {r['impl']}"
                seen.append((*key, name))
    return seen


def table(labelled: list[tuple[str, dict]], ops: list[str] | None = None) -> str:
    labels = [lab for lab, _ in labelled]
    idx = [_index(rep) for _, rep in labelled]
    out = [
        "| op, size | mode | measure | " + " | ".join(labels) + f" | faults per call ({' / '.join(labels)}) |",
        "|---|---|---|" + "---|" * len(labels) + "---|",
    ]
    for op, size, mode, impl, name in rows_for([rep for _, rep in labelled], ops):
        cells = [_cell(i.get((op, size, mode, impl)), impl == "GEMM floor") for i in idx]
        faults = " / ".join(_faults(i.get((op, size, mode, "fused"))) for i in idx)
        out.append(f"| {op}, {size} | {mode} | {name} | " + " | ".join(cells) + f" | {faults} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recordings", nargs="+", metavar="LABEL=PATH", help="a label and a --json recording")
    p.add_argument("--op", action="append", help="every row of this op family (repeatable)")
    args = p.parse_args(argv)
    labelled = []
    for item in args.recordings:
        label, sep, path = item.partition("=")
        if not sep:
            p.error(f"expected LABEL=PATH, got {item!r}")
        with open(path) as f:
            labelled.append((label, json.load(f)))
    print(table(labelled, args.op))


if __name__ == "__main__":
    main()
