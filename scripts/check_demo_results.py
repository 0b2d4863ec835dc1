"""Check that a toy run's results.json holds finite Table-1 numbers (used by CI after `make demo`).

Usage: python scripts/check_demo_results.py out/demo/results.json
Exits non-zero, naming what is missing, if the file is absent or any Table-1 quantity (per active
latent: norm mean/SD, D'_j mean, E[sigma^-2] and its ratio; the Pearson correlations) is not a
finite number.
"""

import json
import math
import sys


def check(path: str) -> list[str]:
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        return [f"cannot read {path}: {e}"]
    problems = []
    dims = res.get("dims") or []
    active = [d for d in dims if d.get("active")]
    if not active:
        problems.append("no active latent dimension in 'dims'")
    for d in active:
        for key in ("norm_mean", "norm_sd", "dj_mean", "inv_sigma2_mean", "inv_sigma2_ratio", "kl"):
            v = d.get(key)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"dims[{d.get('index')}].{key} = {v!r} is not a finite number")
    for name, c in (res.get("correlations") or {}).items():
        v = c.get("pearson") if isinstance(c, dict) else None
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            problems.append(f"correlations.{name}.pearson = {v!r} is not a finite number")
    if not res.get("correlations"):
        problems.append("no 'correlations' (the Fig. 3 Pearson R values)")
    return problems


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "out/demo/results.json"
    problems = check(path)
    for p in problems:
        print(f"demo check: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"demo check: {path} holds finite Table-1 numbers")
