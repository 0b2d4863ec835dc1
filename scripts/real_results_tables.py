"""Markdown tables for docs/image_results.md and docs/digit_results.md from a run's folder
(results.json and curve.json):  python scripts/real_results_tables.py RUN_DIR
Reads runs of both layouts: the old reproduce_real/step_curve one (``training.iterations``, curve
points with ``train_distortion``) and the experiments one (``training.steps``, points with
``distortion_mu``, the held-out D(x, Dec(mu)))."""

import json
import os
import sys


def main(run_dir: str) -> None:
    with open(os.path.join(run_dir, "results.json")) as f:
        r = json.load(f)
    na = r["norm_active"]
    print(f"- data: {r['data']}")
    steps = r["training"].get("steps", r["training"].get("iterations"))
    print(
        f"- training: {steps} Adam steps; last epoch: distortion "
        f"{r['training']['final']['distortion']:.4f}, KL {r['training']['final']['kl']:.2f} nats"
    )
    print(
        f"- analysis: {r['n_samples']} held-out samples, D'_j {r['dj_method']} (eps {r['eps']}) in "
        f"{r.get('dj_dtype', 'float32')}, beta {r['beta']:.4g}, active = mean KL >= {r['kl_threshold']}"
    )
    mean = "n/a" if na["mean"] is None else f"{na['mean']:.3f} (SD {na['sd']:.3f})"
    print(f"- **active dims {r['active_dims']} of {len(r['dims'])}; norm mean over active dims {mean}**")
    g = r["gram"]
    if g["diag_mean"] is not None:
        print(
            f"- isometry Gram over active dims: mean diagonal {g['diag_mean']:.3f}, "
            f"mean |off-diagonal| {g['offdiag_abs_mean']:.3f}"
        )
    print()
    print("| rank | dim | E[sigma^-2] | KL (nats) | D'_j mean | norm mean (SD) | active |")
    print("|---:|---:|---:|---:|---:|---|---|")
    for k, d in enumerate(r["dims"], 1):
        print(
            f"| {k} | {d['index']} | {d['inv_sigma2_mean']:.2f} | {d['kl']:.3f} | {d['dj_mean']:.4g} | "
            f"{d['norm_mean']:.3f} ({d['norm_sd']:.3f}) | {'yes' if d['active'] else 'no'} |"
        )
    cpath = os.path.join(run_dir, "curve.json")
    if os.path.exists(cpath):
        with open(cpath) as f:
            c = json.load(f)
        print()
        print(f"Step curve ({c['curve_samples']} held-out samples per point):")
        print()
        old = "train_distortion" in (c["points"] or [{}])[0]
        dist = "train distortion (last epoch)" if old else "held-out D(x, Dec(mu))"
        print(f"| step | active dims | norm mean (SD) over active | total KL (nats) | {dist} |")
        print("|---:|---:|---|---:|---:|")
        for p in c["points"]:
            nm = "n/a" if p["norm_mean"] is None else f"{p['norm_mean']:.3f} ({p['norm_sd']:.3f})"
            d = p["train_distortion"] if old else p["distortion_mu"]
            td = "" if d is None else f"{d:.4f}"
            print(f"| {p['step']} | {p['active_dims']} | {nm} | {p['kl_total']:.2f} | {td} |")


if __name__ == "__main__":
    main(sys.argv[1])
