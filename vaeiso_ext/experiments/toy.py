"""The toy experiment (§4.1, App. D.1, E): a 3-latent VAE on 16-dim data with a known density;
results laid out like Tables 1-2, the Fig. 3 scatter plots and a Fig. 4-like per-dim plot."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ..checkpoint import versions
from ..data import TOY_DATASETS, make_toy
from ..metrics import by_name as metric_from_name
from ..models import ToyVAE
from ..train import TrainConfig
from .base import Experiment
from .config import Config, UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int
from .outputs import (
    fmt,
    inv_sigma2_axis,
    legend_below,
    md_table,
    plt,
    results_json,
    rule_lines,
    run_title,
    save_figure,
    shade_dims,
    training_line,
    write_atomic,
)
from .runs import status

LOSSES = ("sse", "downward", "upward")
LOSS_NAMES = {"sse": "square error", "downward": "downward-convex", "upward": "upward-convex"}

# The paper's values (Tables 1-2, Fig. 3, §4.1), per (dataset, loss), in table order z1..z3
# (ascending E[sigma^-2]). Table 2's ratios are the ratios of its printed means (its printed ratios disagree with them).
PAPER = {
    ("mix", "sse"): {
        "source": "Table 1, §4.1, App. E.1",
        "norm_mean": [0.965, 0.925, 0.972],
        "norm_sd": [0.054, 0.164, 0.098],
        "dj_mean": [0.162, 0.726, 2.922],
        "dj_sd": [0.040, 0.466, 1.738],
        "inv_sigma2_mean": [33.3, 146.0, 589.0],
        "inv_sigma2_ratio": [1.0, 4.39, 17.69],
        "correlations": {"exp_neg_L": 0.904},
        "transform_coding_ratio": 0.023,
    },
    ("mix", "downward"): {
        "source": "Table 2, Fig. 3, §4.1",
        "norm_mean": [0.964, 0.928, 0.978],
        "norm_sd": [0.060, 0.160, 0.088],
        "dj_mean": [0.161, 0.696, 2.695],
        "dj_sd": [0.063, 0.483, 1.573],
        "inv_sigma2_mean": [33.0, 140.0, 543.0],
        "inv_sigma2_ratio": [1.0, 4.24, 16.45],
        "correlations": {"p_mu": 0.434, "exp_neg_L": 0.771, "scaled_p_mu_prod_sigma": 0.91, "scaled_exp_neg_L": 0.91},
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


@dataclass
class ToyConfig(Config):
    """Everything that defines one toy run (stored in the checkpoint and results.json)."""

    LENGTH = "epochs"

    dataset: str = opt("mix", "toy dataset (§4.1, App. E.2)", choices=TOY_DATASETS)
    loss: str = opt("sse", "metric: square error, or a_x / 1/a_x times it (§4.1)", choices=LOSSES)
    lam: float = opt(100.0, "lambda = 1/beta", flag="--lambda", type=positive_float, metavar="L")
    epochs: int = opt(500, "passes over the training set", type=positive_int, metavar="N")
    batch_size: int = opt(128, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    seed: int = opt(0, "model init and training randomness", type=nonneg_int)
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL")
    n_train: int = opt(50_000, "training samples", type=positive_int, metavar="N")
    n_test: int = opt(10_000, "held-out samples (the analysis uses them)", type=int_at_least(2), metavar="N")
    data_seed: int = opt(0, "dataset (basis and samples)", type=nonneg_int)
    latent: int = 3
    kl_threshold: float = 0.1
    eps: float = 1e-3

    def validate(self) -> "ToyConfig":
        if self.dataset not in TOY_DATASETS:
            raise UsageError(f"dataset: expected one of {TOY_DATASETS}, got {self.dataset!r}")
        if self.loss not in LOSSES:
            raise UsageError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        for k in ("lam", "lr", "eps", "kl_threshold"):
            v = float(getattr(self, k))
            if not (math.isfinite(v) and v > 0):
                raise UsageError(f"{'lambda' if k == 'lam' else k}: expected a finite number > 0, got {v}")
        if min(self.epochs, self.batch_size, self.n_train, self.latent) < 1 or self.n_test < 2:
            raise UsageError("epochs, batch size, n_train and latent must be >= 1 and n_test >= 2")
        return self

    @property
    def beta(self) -> float:
        return 1.0 / self.lam


# ------------------------------------------------------------------ tables


def table_dims(results: dict) -> list[dict]:
    """Dimensions in the paper's table order: active ones by ascending E[sigma^-2], then inactive.
    The tables and figures call them z1, z2, ... in this order."""
    dims = results["dims"]
    act = sorted([d for d in dims if d["active"]], key=lambda d: d["inv_sigma2_mean"])
    return act + sorted([d for d in dims if not d["active"]], key=lambda d: d["inv_sigma2_mean"])


def _paper(cfg: dict):
    if cfg.get("decomposed"):
        return None
    p = PAPER.get((cfg.get("dataset"), cfg.get("loss")))
    if p is None or float(cfg.get("lam", 0)) != 100.0:
        return None
    return p


_ROWS = [
    ("norm (2/b) s^2 D'  Av.", "norm_mean", ".3f"),
    ("                  SD", "norm_sd", ".3f"),
    ("D'_j(z)           Av.", "dj_mean", ".3f"),
    ("                  SD", "dj_sd", ".3f"),
    ("E[sigma^-2]       Av.", "inv_sigma2_mean", ".1f"),
    ("(ratio)           Av.", "inv_sigma2_ratio", ".2f"),
]


def _yes_no(v) -> str:
    return "-" if v is None else "yes" if v else "no"


# Rows beside the paper's: the norm's value at the sigma optimum and the ratio to it (theory 1),
# and the informative rule (E[sigma^-2] >= threshold); "-" in results written before them.
_THEORY_ROWS = [
    ("1 - sigma^2       Av.", lambda d: fmt(d.get("one_minus_sigma2_mean"))),
    ("norm/(1-sigma^2)  Av.", lambda d: fmt(d.get("norm_ratio_mean"))),
    ("informative", lambda d: _yes_no(d.get("informative"))),
]


def _head(results: dict) -> str:
    cfg = results.get("config", {})
    return (
        f"{cfg.get('dataset', '?')} / {LOSS_NAMES.get(cfg.get('loss'), cfg.get('loss'))}, "
        f"lambda={fmt(float(cfg.get('lam', float('nan'))), 'g')}"
        + (", decomposed" if cfg.get("decomposed") else "")
        + "; "
        + training_line(results)
    )


def text_table(results: dict) -> str:
    """The Table-1-like plain-text table (measured, with the paper's value in brackets)."""
    cfg = results.get("config", {})
    dims = table_dims(results)
    paper = _paper(cfg)
    w = 18 if paper else 10
    lines = [_head(results), f"{'variable':22}" + "".join(f"{'z' + str(i + 1):>{w}}" for i in range(len(dims)))]
    for label, key, spec in _ROWS:
        cells = []
        for i, d in enumerate(dims):
            c = fmt(d[key], spec)
            if paper and i < 3 and d["active"]:
                c += f" [{fmt(paper[key][i], spec)}]"
            cells.append(f"{c:>{w}}")
        lines.append(f"{label:22}" + "".join(cells))
    lines.append(f"{'KL_j (nats)':22}" + "".join(f"{fmt(d['kl']):>{w}}" for d in dims))
    for label, cell in _THEORY_ROWS:
        lines.append(f"{label:22}" + "".join(f"{cell(d):>{w}}" for d in dims))
    lines += rule_lines(results)
    corr = results.get("correlations") or {}
    if corr:
        lines.append("Pearson R with the true p(x)" + (" [paper]" if paper else "") + ":")
        for k, name in ESTIMATES.items():
            if k in corr:
                ref = paper["correlations"].get(k) if paper else None
                lines.append(f"  {name:28}{fmt(corr[k]['pearson']):>8}" + (f" [{ref}]" if ref is not None else ""))
    rd = results.get("rate_distortion") or {}
    if rd:
        lines.append(
            f"coding loss {fmt(rd['coding_loss'], '.4f')} (n beta/2 = "
            f"{fmt(rd['coding_loss_theory'], '.4f')}), transform/coding "
            f"{fmt(rd['transform_coding_ratio'], '.4f')}"
            + (
                f" (theory {fmt(rd['transform_coding_ratio_theory'], '.4f')})"
                if "transform_coding_ratio_theory" in rd
                else ""
            )
            + (f" [paper {paper['transform_coding_ratio']}]" if paper else "")
        )
        lines.append(
            f"rate {fmt(rd['rate'], '.3f')} nats"
            + (f" (theory {fmt(rd['rate_theory'], '.3f')})" if "rate_theory" in rd else "")
        )
    return "\n".join(lines)


def markdown_report(results: dict, figures: list[str] = ()) -> str:
    cfg = results.get("config", {})
    paper = _paper(cfg)
    dims = table_dims(results)
    title = (
        f"# Toy run: {cfg.get('dataset')}, {LOSS_NAMES.get(cfg.get('loss'), cfg.get('loss'))}"
        f", lambda = {fmt(float(cfg.get('lam')), 'g')} (beta = {fmt(1 / float(cfg.get('lam')), 'g')})"
    )
    parts = [title, ""]
    parts.append(
        f"{training_line(results)}; Adam lr {cfg.get('lr')}, seed {cfg.get('seed')}, "
        f"data seed {cfg.get('data_seed')}, "
        f"{'decomposed' if cfg.get('decomposed') else 'conventional'} objective; analysed on "
        f"{results['n_samples']} held-out samples; "
        f"{results['n_active']} active dims (mean KL >= {results['kl_threshold']} nats); "
        f"D'_j by forward difference, eps = {results['eps']}."
    )
    parts.append("")
    parts += [f"- {line}" for line in rule_lines(results)]
    parts.append("")
    parts.append(
        "Columns in the paper's order (ascending E[sigma^-2]); "
        + (
            "the paper's value in brackets (" + paper["source"] + ")."
            if paper
            else "the paper gives no table for this configuration."
        )
    )
    parts.append("")
    header = ["variable"] + [f"z{i + 1}" + ("" if d["active"] else " (inactive)") for i, d in enumerate(dims)]
    rows = []
    for label, key, spec in _ROWS:
        r = [" ".join(label.split()) if not label.startswith(" ") else "SD"]
        for i, d in enumerate(dims):
            c = fmt(d[key], spec)
            if paper and i < 3 and d["active"]:
                c += f" [{fmt(paper[key][i], spec)}]"
            r.append(c)
        rows.append(r)
    rows.append(["norm by jvp (exact D')"] + [fmt(d["norm_jvp_mean"]) for d in dims])
    rows += [[" ".join(label.split()).replace("Av.", "mean")] + [cell(d) for d in dims] for label, cell in _THEORY_ROWS]
    rows.append(["KL_j (nats)"] + [fmt(d["kl"]) for d in dims])
    rows.append(["(beta/2) E[sigma^-2]"] + [fmt(d["var_estimate"], ".4f") for d in dims])
    rows.append(["latent index"] + [str(d["index"]) for d in dims])
    parts += [md_table(header, rows), ""]
    g = results["gram"]
    parts.append(
        f"Isometry Gram (2/beta) sigma_j sigma_k J_j^T G J_k over active dims: mean diagonal "
        f"{fmt(g['diag_mean'])}, mean |off-diagonal| {fmt(g['offdiag_abs_mean'])} "
        f"(expected 1 and 0)."
    )
    parts.append("")
    corr = results.get("correlations") or {}
    if corr:
        parts.append("## Data probability (Eq. 22-23) against the true p(x)")
        parts.append("")
        rows = []
        for k, name in ESTIMATES.items():
            if k in corr:
                ref = paper["correlations"].get(k) if paper else None
                rows.append([name, fmt(corr[k]["pearson"]), fmt(corr[k]["spearman"]), "-" if ref is None else str(ref)])
        parts += [md_table(["estimate", "Pearson R", "Spearman", "paper R"], rows), ""]
    rd = results.get("rate_distortion") or {}
    if rd:
        parts.append("## Rate and distortion (Eq. 14-15, 54)")
        parts.append("")
        rows = [
            [
                "coding loss E[D(x_breve, x_hat)]",
                fmt(rd["coding_loss"], ".4g"),
                fmt(rd["coding_loss_theory"], ".4g") + " (n beta / 2, Eq. 14)",
            ],
            [
                "transform loss E[D(x, x_breve)]",
                fmt(rd["transform_loss"], ".4g"),
                fmt(rd.get("transform_loss_theory"), ".4g") + " ((beta/2)^2 sum 1/Var(s_j), Eq. 54)",
            ],
            [
                "transform / coding",
                fmt(rd["transform_coding_ratio"], ".4g"),
                fmt(rd.get("transform_coding_ratio_theory"), ".4g")
                + " ((beta/2) mean 1/Var(s_j))"
                + (f"; paper measured {paper['transform_coding_ratio']}" if paper else ""),
            ],
            ["total distortion E[D(x, x_hat)]", fmt(rd["distortion"], ".4g"), "-"],
            [
                "rate E[KL] (nats)",
                fmt(rd["rate"], ".4g"),
                fmt(rd.get("rate_theory"), ".4g") + " (H(y) - (n/2) log(beta pi e))",
            ],
        ]
        parts += [md_table(["quantity", "measured", "theory"], rows), ""]
        parts.append(
            "App. E.2's text gives 3 beta as the coding loss for n = 3; Eq. 14 gives "
            "n beta / 2, which is the value shown."
        )
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


def scatter_figure(results: dict, path: str, max_points: int = 2000) -> None:
    """The four Fig. 3 panels: true p(x) against each estimate (linear, max-normalised)."""
    s = results["samples"]
    t = s["log_p_true"]
    keys = ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L"]
    fig, axes = plt().subplots(1, 4, figsize=(13, 3.4))
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
        ax.set_title(f"({letter}) {ESTIMATES[k]}\nPearson R = {fmt(r)}", fontsize=9)
        ax.set_xlabel("true p(x) / max (no unit)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("estimate / max (no unit)", fontsize=8)
    shown = f"{min(n, max_points):,} of {n:,}" if n > max_points else f"all {n:,}"
    fig.suptitle(
        run_title(results, f"Fig. 3: p(x) estimates (R over all {n:,} held-out samples, {shown} shown)"),
        fontsize=9,
        y=1.05,
    )
    save_figure(fig, path)


def dims_figure(results: dict, path: str) -> None:
    """Fig. 4-like: the isometry norm (mean, SD), 1 - sigma^2 (the norm at the sigma optimum) and
    E[sigma^-2] per dimension, numbered z1, z2, ... as the tables number them (ascending
    E[sigma^-2], inactive dims last); non-informative dims shaded as in the real-data figures."""
    dims = table_dims(results)
    xs = list(range(1, len(dims) + 1))
    fig, ax = plt().subplots(figsize=(5.5, 3.4))
    ax.plot(xs, [d["norm_mean"] for d in dims], "^-", color="tab:orange", label="norm (2/beta) sigma^2 D'_j: mean")
    ax.plot(xs, [d["norm_sd"] for d in dims], "v--", color="tab:green", label="norm: SD")
    om = [d.get("one_minus_sigma2_mean") for d in dims]
    if any(v is not None for v in om):
        ax.plot(
            xs,
            [math.nan if v is None else v for v in om],
            "_",
            ms=12,
            mew=2,
            color="tab:purple",
            label="1 - sigma^2 (mean): the norm at the sigma optimum",
        )
    shade_dims(ax, xs, dims, results)
    ax.axhline(1.0, color="gray", lw=0.6)
    top = max([d["norm_mean"] for d in dims] + [d["norm_sd"] for d in dims] + [1.0])
    ax.set_ylim(0.0, 1.15 * top)
    ax.set_xlim(0.5, len(dims) + 0.5)
    ax.set_ylabel("norm (no unit; 1 = isometric)")
    ax.set_xlabel("latent dim, as in the table (ascending E[sigma^-2])")
    ax.set_xticks(xs, [f"z{i}" + ("" if d["active"] else "\n(inactive)") for i, d in zip(xs, dims)])
    ax2 = ax.twinx()
    inv = [d["inv_sigma2_mean"] for d in dims]
    ax2.plot(xs, inv, "o-", color="tab:blue", label="E[sigma^-2]")
    t = results.get("informative_threshold")
    if t is not None:
        ax2.axhline(t, color="tab:blue", lw=0.8, ls=":", label=f"informative: E[sigma^-2] >= {t:g}")
    inv_sigma2_axis(ax2, inv + ([t] if t is not None else []))
    ax2.set_ylabel("E[sigma^-2] (1 / latent variance)", color="tab:blue")
    legend_below(fig, ax, ax2)
    ax.set_title(run_title(results, "per-dim norm, 1 - sigma^2 and E[sigma^-2]"), fontsize=8)
    save_figure(fig, path)


def write_toy_outputs(out: str, results: dict, *, figures: bool = True) -> list[str]:
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


# ------------------------------------------------------------------ the experiment


class ToyExperiment(Experiment):
    name = "toy"
    order = 0
    help = "§4.1: the toy VAE on data with a known density (Tables 1-2, Fig. 3)"
    description = (
        "Train the App. D.1 VAE on a toy dataset, analyse it on held-out data against the "
        "true density, and write results.json, report.md and figures."
    )
    config_cls = ToyConfig
    presets = {"quick": ("60 epochs (the demo, `make demo`)", {"epochs": 60})}
    default_threads = 1  # the tiny MLP gains nothing from more

    def default_out(self, cfg: ToyConfig) -> str:
        return os.path.join("out", "toy", f"{cfg.dataset}_{cfg.loss}")

    def load_data(self, cfg: ToyConfig, progress: bool):
        with status(
            f"generating toy data ({cfg.dataset}: {cfg.n_train:,} training + {cfg.n_test:,} held-out samples)", progress
        ):
            return make_toy(cfg.dataset, cfg.n_train, cfg.n_test, seed=cfg.data_seed)

    def train_x(self, data):
        return data.x_train

    def new_model(self, cfg: ToyConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return ToyVAE(latent=cfg.latent)

    def metric(self, cfg: ToyConfig):
        return metric_from_name(cfg.loss)

    def train_config(self, cfg: ToyConfig) -> TrainConfig:
        return TrainConfig(
            lam=cfg.lam,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=cfg.seed,
            decomposed=cfg.decomposed,
        )

    def analyze_model(self, cfg: ToyConfig, model, data, trained: dict, *, n_samples=None, progress=True) -> dict:
        from ..analysis import analyze

        n = data.x_test.shape[0]
        if n_samples is not None and n_samples > n:
            raise UsageError(f"--n-samples {n_samples}: the run has {n} held-out samples")
        with status(f"analysing {n_samples or n:,} held-out samples", progress):
            res = analyze(
                model,
                data,
                self.metric(cfg),
                cfg.beta,
                kl_threshold=cfg.kl_threshold,
                eps=cfg.eps,
                n_samples=n_samples,
                keep_samples=True,
            )
        return {
            "experiment": self.name,
            "config": cfg.description(),
            "versions": versions(),
            "loss_name": LOSS_NAMES[cfg.loss],
            **res,
            "training": trained,
        }

    def write_outputs(self, out, results, model, data, *, figures=True):
        return write_toy_outputs(out, results, figures=figures)

    def summary(self, results: dict) -> str:
        return text_table(results)


EXPERIMENT = ToyExperiment()
