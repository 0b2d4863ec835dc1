"""Build docs/toy_results.md (and docs/figures/) from finished toy runs.

    python scripts/toy_results_page.py --full out/full --sweep out/sweep30 --docs docs

``--full`` holds one folder per dataset_loss written by ``reproduce toy --out``; ``--sweep`` the
folder of ``reproduce sweep``. Missing runs are listed as not finished.
"""

import argparse
import json
import os
import shutil

from vaeiso_ext.experiments.outputs import fmt as _fmt
from vaeiso_ext.experiments.outputs import md_table as _md_table
from vaeiso_ext.experiments.toy import LOSS_NAMES, PAPER, markdown_report, table_dims

PAIRS = [(d, loss) for d in ("mix", "ramp", "norm") for loss in ("sse", "downward", "upward")]


def _load(path):
    with open(path) as f:
        return json.load(f)


def _load_text(path):
    with open(path) as f:
        return f.read()


def acceptance(res_sse, res_down):
    lines = []

    def check(ok, text):
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")

    if res_sse:
        dims = table_dims(res_sse)
        norms = [d["norm_mean"] for d in dims]
        ratios = [d["inv_sigma2_ratio"] for d in dims]
        check(
            all(0.85 <= v <= 1.10 for v in norms),
            f"Mix/SSE norm means {', '.join(f'{v:.3f}' for v in norms)} within 0.85-1.10",
        )
        rel = [ratios[1] / 4.39, ratios[2] / 17.69]
        check(
            all(0.8 <= r <= 1.2 for r in rel),
            f"Mix/SSE E[sigma^-2] ratios 1 : {ratios[1]:.2f} : {ratios[2]:.2f} within 20% of "
            f"1 : 4.39 : 17.69 ({rel[0]:.3f}, {rel[1]:.3f} of the paper's)",
        )
        c = res_sse["correlations"]
        check(
            c["p_mu_prod_sigma"]["pearson"] >= 0.85,
            f"Mix/SSE R(p(mu) prod sigma) = {c['p_mu_prod_sigma']['pearson']:.3f} >= 0.85",
        )
        check(c["p_mu"]["pearson"] <= 0.6, f"Mix/SSE R(p(mu)) = {c['p_mu']['pearson']:.3f} <= 0.6")
    if res_down:
        c = res_down["correlations"]
        a, b, u = (c["scaled_p_mu_prod_sigma"]["pearson"], c["scaled_exp_neg_L"]["pearson"], c["exp_neg_L"]["pearson"])
        check(
            a >= 0.85 and b >= 0.85 and a > u and b > u,
            f"Mix/downward (Fig. 3): a^(n/2) p(mu) prod sigma {a:.3f} and a^(n/2) exp(-L/beta) "
            f"{b:.3f} both >= 0.85 and above exp(-L/beta) {u:.3f}; p(mu) "
            f"{c['p_mu']['pearson']:.3f}",
        )
    return lines


def summary_table(results):
    header = [
        "dataset",
        "loss",
        "norm means z1 z2 z3",
        "E[sigma^-2] z1 z2 z3",
        "ratios",
        "R p(mu)",
        "R exp(-L/b)",
        "R a p(mu) prod s",
        "R a exp(-L/b)",
        "coding (nb/2=0.015)",
        "T/C (21b/16=0.013)",
        "rate (theory)",
        "s/epoch",
    ]
    rows = []
    for (ds, loss), r in results.items():
        if r is None:
            rows.append([ds, loss, "not finished"] + [""] * (len(header) - 3))
            continue
        dims = table_dims(r)
        c = r["correlations"]
        rd = r["rate_distortion"]
        rows.append(
            [
                ds,
                loss,
                " ".join(f"{d['norm_mean']:.3f}" for d in dims),
                " ".join(f"{d['inv_sigma2_mean']:.1f}" for d in dims),
                "1 : " + " : ".join(f"{d['inv_sigma2_ratio']:.2f}" for d in dims[1:]),
                *[
                    f"{c[k]['pearson']:.3f}"
                    for k in ("p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L")
                ],
                f"{rd['coding_loss']:.4f}",
                f"{rd['transform_coding_ratio']:.3f}",
                f"{rd['rate']:.2f} ({rd['rate_theory']:.2f})",
                _fmt((r.get("training") or {}).get("seconds_per_epoch_median"), ".2f"),
            ]
        )
    return _md_table(header, rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", default="out/full")
    ap.add_argument("--sweep", default="out/sweep30")
    ap.add_argument("--docs", default="docs")
    args = ap.parse_args()
    figdir = os.path.join(args.docs, "figures")
    os.makedirs(figdir, exist_ok=True)
    results = {}
    for ds, loss in PAIRS:
        p = os.path.join(args.full, f"{ds}_{loss}", "results.json")
        results[(ds, loss)] = _load(p) if os.path.exists(p) else None
    done = [k for k, v in results.items() if v is not None]
    any_res = next((v for v in results.values() if v), None)
    parts = ["# Toy experiments: measured results beside the paper", ""]
    parts.append(
        "The paper's toy experiments (§4.1, App. D.1, App. E) reproduced with "
        "`python -m vaeiso_ext reproduce toy`. Every full run: 50,000 training samples, "
        "batch 128, 500 epochs (about 195k Adam steps, lr 1e-3), lambda = 100 (beta = 0.01), "
        "square-error losses summed over the 16 dims (docs/toy_results.md), seed 0; the analysis uses "
        "10,000 held-out samples, D'_j by the paper's forward difference (eps = 1e-3; the exact "
        "jvp value is in each run's report), active dims have mean KL >= 0.1 nats."
    )
    if any_res:
        v = any_res.get("versions", {})
        parts.append("")
        parts.append(
            f"Software: {', '.join(f'{k} {val}' for k, val in v.items())}; CPU, one thread per run (2 shared cores)."
        )
    parts += [
        "",
        "## Commands",
        "",
        "```",
        "# one full run (about 4 minutes at 0.47 s/epoch on an idle core):",
        "python -m vaeiso_ext reproduce toy --dataset mix --loss sse --lambda 100 --epochs 500 --out out/full/mix_sse",
        "# the nine dataset x loss pairs, one after another:",
        "for d in mix ramp norm; do for l in sse downward upward; do",
        "  python -m vaeiso_ext reproduce toy --dataset $d --loss $l --out out/full/${d}_${l}; done; done",
        "# re-analyse a checkpoint (rewrites results.json, report.md, figures/ beside it):",
        "python -m vaeiso_ext analyze out/full/mix_sse/checkpoint.pt",
        "# the App. E.2 sweep with fewer epochs (resumable: finished runs are skipped):",
        "python -m vaeiso_ext reproduce sweep --epochs 30 --out out/sweep30   # 90 runs, ~45 min",
        "# this page:",
        "python scripts/toy_results_page.py --full out/full --sweep out/sweep30 --docs docs",
        "```",
        "",
    ]
    parts += ["## Acceptance (issue 5)", ""]
    parts += acceptance(results[("mix", "sse")], results[("mix", "downward")]) or ["- runs not finished"]
    parts += ["", f"## The nine dataset x loss pairs at lambda = 100 ({len(done)}/9 finished)", ""]
    parts.append(
        "Dimensions in the paper's order (ascending E[sigma^-2]); R is Pearson's on linear "
        "probabilities against the true p(x); coding = E[D(x_breve, x_hat)], T/C = transform "
        "/ coding loss; the rate theory is H(y) - (n/2) log(beta pi e). For the square error "
        "the a^(n/2)-scaled estimates equal the unscaled ones (a_x = 1)."
    )
    parts += ["", summary_table(results), ""]
    parts += [
        "Notes on the measurements:",
        "",
        "- s/epoch is the median wall time per epoch of that run on a 2-core machine shared "
        "with two C++ builds; on an idle core an epoch (391 Adam steps) takes 0.47 s, so a "
        "500-epoch run about 4 minutes.",
        "- The transform/coding ratio is 0.05-0.10 here against the paper's 0.023 (SSE) and "
        "0.024 (downward) and the small-beta theory 21 beta / 16 = 0.013; the coding loss itself "
        "is within 10% of n beta / 2.",
        "- The rate sits 0.1-0.2 nats above H(y) - (n/2) log(beta pi e) for Mix and Ramp and on "
        "it for Norm (where the decoder can be exactly linear).",
        "- Ramp's lowest-variance dimension has the lowest norm (0.84): the paper also finds "
        "Ramp the hardest fit (App. E.2).",
        "",
    ]
    for (ds, loss), r in results.items():
        if r is None:
            continue
        md = markdown_report(r)
        body = md.split("\n", 1)[1]
        body = body.split("## Figures")[0].split("\nversions:")[0]
        parts.append(
            f"### {ds} / {LOSS_NAMES[loss]}" + (f" ({PAPER[(ds, loss)]['source']})" if (ds, loss) in PAPER else "")
        )
        parts.append(body.replace("\n## ", "\n#### "))
        src = os.path.join(args.full, f"{ds}_{loss}", "figures")
        for name in ("fig3_scatter.png", "dims.png"):
            keep = (ds, loss) in PAPER and (name == "fig3_scatter.png" or loss == "sse")
            if keep and os.path.exists(os.path.join(src, name)):
                dst = f"{ds}_{loss}_{name}"
                shutil.copyfile(os.path.join(src, name), os.path.join(figdir, dst))
                parts.append(f"![{ds} {loss} {name[:-4]}](figures/{dst})")
        parts.append("")
    sweep_json = os.path.join(args.sweep, "sweep.json")
    if os.path.exists(sweep_json):
        rows = _load(sweep_json)
        epochs = sorted({r["epochs"] for r in rows})
        parts += [
            f"## App. E.2 sweep ({len(rows)} runs, {', '.join(map(str, epochs))} epochs each, not the paper's 500)",
            "",
        ]
        sfig = os.path.join(args.sweep, "figures")
        for name in sorted(os.listdir(sfig)):
            shutil.copyfile(os.path.join(sfig, name), os.path.join(figdir, name))
            parts.append(f"![{name[:-4]}](figures/{name})")
        parts.append("")
        parts.append(
            "Norms are the active dims' means in ascending E[sigma^-2] order; at lambda 1-2 "
            "one dimension is inactive (KL < 0.1), as the paper's Figs. 11-19 also show. "
            "With 30 epochs the large-lambda runs are the least converged (their transform "
            "loss is still falling)."
        )
        parts.append("")
        table = _load_text(os.path.join(args.sweep, "report.md"))
        parts.append(table.split("\n\n", 1)[1].split("\n![")[0].strip())
    else:
        parts += ["## App. E.2 sweep", "", "Not run yet (see the command above)."]
    with open(os.path.join(args.docs, "toy_results.md"), "w") as f:
        f.write("\n".join(parts) + "\n")
    print(f"wrote {args.docs}/toy_results.md ({len(done)}/9 full runs)")


if __name__ == "__main__":
    main()
