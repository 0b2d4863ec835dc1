"""Outputs of a run: results.json, report.md (Tables 1-2 layout beside the paper's values), the
plain-text table printed by the CLI, and PNG figures (Fig. 3 scatter plots, Fig. 4-like
per-dimension plot, Figs. 11-22-like sweep plots). Every file is written atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile

# The paper's values (Tables 1-2, Fig. 3, §4.1), per (dataset, loss), in table order z1..z3
# (ascending E[sigma^-2]). Table 2's ratios are the ratios of its printed means (see SPEC §5).
PAPER = {
    ("mix", "sse"): {
        "source": "Table 1, §4.1, App. E.1",
        "norm_mean": [0.965, 0.925, 0.972], "norm_sd": [0.054, 0.164, 0.098],
        "dj_mean": [0.162, 0.726, 2.922], "dj_sd": [0.040, 0.466, 1.738],
        "inv_sigma2_mean": [33.3, 146.0, 589.0], "inv_sigma2_ratio": [1.0, 4.39, 17.69],
        "correlations": {"exp_neg_L": 0.904},
        "transform_coding_ratio": 0.023,
    },
    ("mix", "downward"): {
        "source": "Table 2, Fig. 3, §4.1",
        "norm_mean": [0.964, 0.928, 0.978], "norm_sd": [0.060, 0.160, 0.088],
        "dj_mean": [0.161, 0.696, 2.695], "dj_sd": [0.063, 0.483, 1.573],
        "inv_sigma2_mean": [33.0, 140.0, 543.0], "inv_sigma2_ratio": [1.0, 4.24, 16.45],
        "correlations": {"p_mu": 0.434, "exp_neg_L": 0.771, "scaled_p_mu_prod_sigma": 0.91,
                         "scaled_exp_neg_L": 0.91},
        "transform_coding_ratio": 0.024,
    },
}

ESTIMATES = {
    "p_mu": "p(mu)",
    "exp_neg_L": "exp(-L/beta)",
    "scaled_p_mu_prod_sigma": "a^(n/2) p(mu) prod sigma",
    "scaled_exp_neg_L": "a^(n/2) exp(-L/beta)",
    "p_mu_prod_sigma": "p(mu) prod sigma",
}

LOSS_NAMES = {"sse": "square error", "downward": "downward-convex", "upward": "upward-convex"}


# ------------------------------------------------------------------ atomic writes


def write_atomic(path: str, data: str | bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, tensors -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return obj


def results_json(results: dict) -> str:
    return json.dumps(_clean({k: v for k, v in results.items() if k != "samples"}), indent=2) + "\n"


# ------------------------------------------------------------------ tables


def table_dims(results: dict) -> list[dict]:
    """Dimensions in the paper's table order: active ones by ascending E[sigma^-2], then inactive."""
    dims = results["dims"]
    act = sorted([d for d in dims if d["active"]], key=lambda d: d["inv_sigma2_mean"])
    return act + [d for d in dims if not d["active"]]


def _fmt(v, spec=".3f"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if abs(v) >= 1000 or (0 < abs(v) < 1e-3):
        return f"{v:.3g}"
    return format(v, spec)


def _paper(cfg: dict):
    if cfg.get("decomposed"):
        return None
    p = PAPER.get((cfg.get("dataset"), cfg.get("loss")))
    if p is None or float(cfg.get("lam", 0)) != 100.0:
        return None
    return p


_ROWS = [("norm (2/b) s^2 D'  Av.", "norm_mean", ".3f"), ("                  SD", "norm_sd", ".3f"),
         ("D'_j(z)           Av.", "dj_mean", ".3f"), ("                  SD", "dj_sd", ".3f"),
         ("E[sigma^-2]       Av.", "inv_sigma2_mean", ".1f"),
         ("(ratio)           Av.", "inv_sigma2_ratio", ".2f")]


def text_table(results: dict) -> str:
    """The Table-1-like plain-text table (measured, with the paper's value in brackets)."""
    cfg = results.get("config", {})
    dims = table_dims(results)
    paper = _paper(cfg)
    head = (f"{cfg.get('dataset', '?')} / {LOSS_NAMES.get(cfg.get('loss'), cfg.get('loss'))}, "
            f"lambda={_fmt(float(cfg.get('lam', float('nan'))), 'g')}, epochs={cfg.get('epochs')}"
            + (", decomposed" if cfg.get("decomposed") else ""))
    w = 18 if paper else 10
    lines = [head, f"{'variable':22}" + "".join(f"{'z' + str(i + 1):>{w}}" for i in range(len(dims)))]
    for label, key, spec in _ROWS:
        cells = []
        for i, d in enumerate(dims):
            c = _fmt(d[key], spec)
            if paper and i < 3 and d["active"]:
                c += f" [{_fmt(paper[key][i], spec)}]"
            cells.append(f"{c:>{w}}")
        lines.append(f"{label:22}" + "".join(cells))
    lines.append(f"{'KL_j (nats)':22}" + "".join(f"{_fmt(d['kl']):>{w}}" for d in dims))
    corr = results.get("correlations") or {}
    if corr:
        lines.append("Pearson R with the true p(x)" + (" [paper]" if paper else "") + ":")
        for k, name in ESTIMATES.items():
            if k in corr:
                ref = paper["correlations"].get(k) if paper else None
                lines.append(f"  {name:28}{_fmt(corr[k]['pearson']):>8}"
                             + (f" [{ref}]" if ref is not None else ""))
    rd = results.get("rate_distortion") or {}
    if rd:
        lines.append(f"coding loss {_fmt(rd['coding_loss'], '.4f')} (n beta/2 = "
                     f"{_fmt(rd['coding_loss_theory'], '.4f')}), transform/coding "
                     f"{_fmt(rd['transform_coding_ratio'], '.4f')}"
                     + (f" (theory {_fmt(rd['transform_coding_ratio_theory'], '.4f')})"
                        if "transform_coding_ratio_theory" in rd else "")
                     + (f" [paper {paper['transform_coding_ratio']}]" if paper else ""))
        lines.append(f"rate {_fmt(rd['rate'], '.3f')} nats"
                     + (f" (theory {_fmt(rd['rate_theory'], '.3f')})" if "rate_theory" in rd else ""))
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown_report(results: dict, figures: list[str] = ()) -> str:
    cfg = results.get("config", {})
    paper = _paper(cfg)
    dims = table_dims(results)
    title = (f"# Toy run: {cfg.get('dataset')}, {LOSS_NAMES.get(cfg.get('loss'), cfg.get('loss'))}"
             f", lambda = {_fmt(float(cfg.get('lam')), 'g')} (beta = {_fmt(1 / float(cfg.get('lam')), 'g')})")
    parts = [title, ""]
    parts.append(f"{cfg.get('epochs')} epochs, batch {cfg.get('batch_size')}, Adam lr {cfg.get('lr')}, "
                 f"seed {cfg.get('seed')}, {'decomposed' if cfg.get('decomposed') else 'conventional'} "
                 f"objective; analysed on {results['n_samples']} held-out samples; "
                 f"{results['n_active']} active dims (mean KL >= {results['kl_threshold']} nats); "
                 f"D'_j by forward difference, eps = {results['eps']}.")
    parts.append("")
    parts.append("Columns in the paper's order (ascending E[sigma^-2]); "
                 + ("the paper's value in brackets (" + paper["source"] + ")." if paper
                    else "the paper gives no table for this configuration."))
    parts.append("")
    header = ["variable"] + [f"z{i + 1}" + ("" if d["active"] else " (inactive)") for i, d in enumerate(dims)]
    rows = []
    for label, key, spec in _ROWS:
        r = [" ".join(label.split()) if not label.startswith(" ") else "SD"]
        for i, d in enumerate(dims):
            c = _fmt(d[key], spec)
            if paper and i < 3 and d["active"]:
                c += f" [{_fmt(paper[key][i], spec)}]"
            r.append(c)
        rows.append(r)
    rows.append(["norm by jvp (exact D')"] + [_fmt(d["norm_jvp_mean"]) for d in dims])
    rows.append(["KL_j (nats)"] + [_fmt(d["kl"]) for d in dims])
    rows.append(["(beta/2) E[sigma^-2]"] + [_fmt(d["var_estimate"], ".4f") for d in dims])
    parts += [_md_table(header, rows), ""]
    g = results["gram"]
    parts.append(f"Isometry Gram (2/beta) sigma_j sigma_k J_j^T G J_k over active dims: mean diagonal "
                 f"{_fmt(g['diag_mean'])}, mean |off-diagonal| {_fmt(g['offdiag_abs_mean'])} "
                 f"(expected 1 and 0).")
    parts.append("")
    corr = results.get("correlations") or {}
    if corr:
        parts.append("## Data probability (Eq. 22-23) against the true p(x)")
        parts.append("")
        rows = []
        for k, name in ESTIMATES.items():
            if k in corr:
                ref = paper["correlations"].get(k) if paper else None
                rows.append([name, _fmt(corr[k]["pearson"]), _fmt(corr[k]["spearman"]),
                             "-" if ref is None else str(ref)])
        parts += [_md_table(["estimate", "Pearson R", "Spearman", "paper R"], rows), ""]
    rd = results.get("rate_distortion") or {}
    if rd:
        parts.append("## Rate and distortion (Eq. 14-15, 54)")
        parts.append("")
        rows = [["coding loss E[D(x_breve, x_hat)]", _fmt(rd["coding_loss"], ".4g"),
                 _fmt(rd["coding_loss_theory"], ".4g") + " (n beta / 2, Eq. 14)"],
                ["transform loss E[D(x, x_breve)]", _fmt(rd["transform_loss"], ".4g"),
                 _fmt(rd.get("transform_loss_theory"), ".4g") + " ((beta/2)^2 sum 1/Var(s_j), Eq. 54)"],
                ["transform / coding", _fmt(rd["transform_coding_ratio"], ".4g"),
                 _fmt(rd.get("transform_coding_ratio_theory"), ".4g") + " ((beta/2) mean 1/Var(s_j))"
                 + (f"; paper measured {paper['transform_coding_ratio']}" if paper else "")],
                ["total distortion E[D(x, x_hat)]", _fmt(rd["distortion"], ".4g"), "-"],
                ["rate E[KL] (nats)", _fmt(rd["rate"], ".4g"),
                 _fmt(rd.get("rate_theory"), ".4g") + " (H(y) - (n/2) log(beta pi e))"]]
        parts += [_md_table(["quantity", "measured", "theory"], rows), ""]
        parts.append("App. E.2's text gives 3 beta as the coding loss for n = 3; Eq. 14 gives "
                     "n beta / 2, which is the value shown.")
        parts.append("")
    if figures:
        parts.append("## Figures")
        parts.append("")
        parts += [f"![{os.path.splitext(os.path.basename(f))[0]}]({f})" for f in figures]
        parts.append("")
    v = results.get("versions", {})
    parts.append(f"versions: {', '.join(f'{k} {val}' for k, val in v.items())}")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, dpi: int = 72) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    write_atomic(path, buf.getvalue())


def scatter_figure(results: dict, path: str, max_points: int = 2000) -> None:
    """The four Fig. 3 panels: true p(x) against each estimate (linear, max-normalised)."""
    import torch

    plt = _plt()
    s = results["samples"]
    t = s["log_p_true"]
    keys = ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L"]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    n = t.shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_points]
    tt = t[idx]
    ok_t = torch.isfinite(tt)
    for ax, k, letter in zip(axes, keys, "abcd"):
        e = s[k][idx]
        ok = ok_t & torch.isfinite(e)
        xs = torch.exp(tt[ok] - tt[ok].max()).numpy()
        ys = torch.exp(e[ok] - e[ok].max()).numpy()
        ax.scatter(xs, ys, s=2, alpha=0.4, linewidths=0)
        r = results["correlations"][k]["pearson"]
        ax.set_title(f"({letter}) {ESTIMATES[k]}\nR = {r:.3f}", fontsize=9)
        ax.set_xlabel("true p(x) (scaled)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("estimate (scaled)", fontsize=8)
    cfg = results.get("config", {})
    fig.suptitle(f"{cfg.get('dataset')} / {LOSS_NAMES.get(cfg.get('loss'), cfg.get('loss'))}, "
                 f"lambda={_fmt(float(cfg.get('lam', 0)), 'g')}", fontsize=9, y=1.04)
    _save(fig, path)


def dims_figure(results: dict, path: str) -> None:
    """Fig. 4-like: E[sigma^-2] (log axis) and the isometry norm mean/SD per dimension, in
    descending order of E[sigma^-2]."""
    plt = _plt()
    dims = results["dims"]
    xs = list(range(1, len(dims) + 1))
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(xs, [d["norm_mean"] for d in dims], "^-", color="tab:orange", label="norm: mean")
    ax.plot(xs, [d["norm_sd"] for d in dims], "v--", color="tab:green", label="norm: SD")
    ax.axhline(1.0, color="gray", lw=0.6)
    top = max([d["norm_mean"] + 0.0 for d in dims] + [d["norm_sd"] for d in dims] + [1.0])
    ax.set_ylim(0.0, 1.2 * top)
    ax.set_ylabel("(2/beta) sigma^2 D'_j")
    ax.set_xlabel("latent dim (descending E[sigma^-2])")
    ax.set_xticks(xs)
    ax2 = ax.twinx()
    ax2.semilogy(xs, [d["inv_sigma2_mean"] for d in dims], "o-", color="tab:blue", label="E[sigma^-2]")
    ax2.set_ylabel("E[sigma^-2]")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center left")
    _save(fig, path)


def write_run_outputs(out: str, results: dict, *, figures: bool = True) -> list[str]:
    """results.json, report.md and (optionally) figures/*.png into ``out``; returns the paths."""
    figs = []
    if figures and "samples" in results:
        scatter_figure(results, os.path.join(out, "figures", "fig3_scatter.png"))
        figs.append("figures/fig3_scatter.png")
    if figures:
        dims_figure(results, os.path.join(out, "figures", "dims.png"))
        figs.append("figures/dims.png")
    write_atomic(os.path.join(out, "results.json"), results_json(results))
    write_atomic(os.path.join(out, "report.md"), markdown_report(results, figs))
    return [os.path.join(out, p) for p in ["results.json", "report.md", *figs]]


# ------------------------------------------------------------------ sweep


def sweep_rows(all_results: list[dict]) -> list[dict]:
    """Flatten per-run results into rows (dataset, loss, lam, norms, ratios, correlations, RD)."""
    rows = []
    for r in all_results:
        cfg = r["config"]
        dims = table_dims(r)
        act = [d for d in dims if d["active"]]
        rows.append({
            "dataset": cfg["dataset"], "loss": cfg["loss"], "lam": float(cfg["lam"]),
            "epochs": cfg["epochs"], "n_active": r["n_active"],
            "norms": [d["norm_mean"] for d in act],
            "ratios": [d["inv_sigma2_ratio"] for d in act],
            "corr": {k: (r["correlations"].get(k) or {}).get("pearson") for k in ESTIMATES},
            "coding_loss": r["rate_distortion"]["coding_loss"],
            "transform_coding_ratio": r["rate_distortion"]["transform_coding_ratio"],
            "rate": r["rate_distortion"]["rate"],
            "rate_theory": r["rate_distortion"].get("rate_theory"),
        })
    return rows


def sweep_figures(rows: list[dict], folder: str) -> list[str]:
    """One Figs. 11-19-like PNG per (dataset, loss) and the Figs. 21-22-like ones."""
    plt = _plt()
    paths = []
    pairs = sorted({(r["dataset"], r["loss"]) for r in rows})
    for ds, loss in pairs:
        rs = sorted([r for r in rows if (r["dataset"], r["loss"]) == (ds, loss)], key=lambda r: r["lam"])
        lams = [r["lam"] for r in rs]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for j in range(3):
            axes[0].semilogx(lams, [r["norms"][j] if len(r["norms"]) > j else math.nan for r in rs],
                             "o-", ms=3, label=f"z{j + 1}")
        axes[0].axhline(1.0, color="gray", lw=0.6)
        axes[0].set_ylim(0, 2)
        axes[0].set_title("(a) norm (2/beta) sigma^2 D' (mean)", fontsize=9)
        for j, ref in ((1, 4), (2, 16)):
            axes[1].loglog(lams, [r["ratios"][j] if len(r["ratios"]) > j else math.nan for r in rs],
                           "o-", ms=3, label=f"Var(z{j + 1})/Var(z1)")
            axes[1].axhline(ref, color="gray", lw=0.6)
        axes[1].set_yticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
        axes[1].minorticks_off()
        axes[1].set_title("(b) ratio of estimated variances", fontsize=9)
        for k in ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L", "p_mu_prod_sigma"]:
            if loss == "sse" and k.startswith("scaled"):
                continue  # a_x = 1: identical to the unscaled estimates
            axes[2].semilogx(lams, [r["corr"][k] if r["corr"][k] is not None else math.nan for r in rs],
                             "o-", ms=3, label=ESTIMATES[k])
        axes[2].set_ylim(-0.2, 1.05)
        axes[2].set_title("(c) Pearson R with p(x)", fontsize=9)
        for ax in axes:
            ax.set_xlabel("lambda", fontsize=8)
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=7)
        fig.suptitle(f"{ds} / {LOSS_NAMES.get(loss, loss)} ({rs[0]['epochs']} epochs)", fontsize=9, y=1.03)
        p = os.path.join(folder, f"sweep_{ds}_{loss}.png")
        _save(fig, p)
        paths.append(p)
    sse = [r for r in rows if r["loss"] == "sse"]
    if sse:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for ds in sorted({r["dataset"] for r in sse}):
            rs = sorted([r for r in sse if r["dataset"] == ds], key=lambda r: -r["lam"])
            betas = [1 / r["lam"] for r in rs]
            axes[0].loglog(betas, [r["coding_loss"] for r in rs], "o-", ms=3, label=ds)
            axes[1].loglog(betas, [r["transform_coding_ratio"] for r in rs], "o-", ms=3, label=ds)
        b = sorted({1 / r["lam"] for r in sse})
        axes[0].loglog(b, [3 * x / 2 for x in b], "k--", lw=0.8, label="n beta / 2")
        axes[1].loglog(b, [21 * x / 16 for x in b], "k--", lw=0.8, label="21 beta / 16")
        axes[0].set_title("coding loss (Fig. 21)", fontsize=9)
        axes[1].set_title("transform / coding loss (Fig. 22)", fontsize=9)
        for ax in axes:
            ax.set_xlabel("beta", fontsize=8)
            ax.legend(fontsize=7)
        p = os.path.join(folder, "sweep_rate_distortion.png")
        _save(fig, p)
        paths.append(p)
    return paths


def sweep_markdown(rows: list[dict], figures: list[str]) -> str:
    parts = ["# App. E.2 sweep", ""]
    header = ["dataset", "loss", "lambda", "epochs", "n act.", "norms", "Var ratios",
              "R p(mu)", "R exp(-L/b)", "R a p(mu) prod s", "R a exp(-L/b)", "coding", "T/C"]
    body = []
    for r in sorted(rows, key=lambda r: (r["dataset"], r["loss"], r["lam"])):
        body.append([r["dataset"], r["loss"], _fmt(r["lam"], "g"), str(r["epochs"]), str(r["n_active"]),
                     " ".join(_fmt(v, ".2f") for v in r["norms"]),
                     " ".join(_fmt(v, ".1f") for v in r["ratios"]),
                     *[_fmt(r["corr"][k], ".2f") for k in ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma",
                                                            "scaled_exp_neg_L"]],
                     _fmt(r["coding_loss"], ".3g"), _fmt(r["transform_coding_ratio"], ".3g")])
    parts += [_md_table(header, body), ""]
    parts += [f"![{os.path.basename(f)}]({f})" for f in figures]
    return "\n".join(parts) + "\n"
