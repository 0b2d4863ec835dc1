"""What the real-data experiments (images, digits) share: a run config trained for an exact number
of Adam steps, the per-latent analysis with the model's own metric, the summary table, the Fig.
4/5-like per-dim plot and the Fig. 6-like traversal grid; with ``eval_every`` > 0 a step curve
(active dims and the norm mean over them against Adam steps, measured on fixed held-out samples
during training: curve.json and figures/curve.png)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from ..train import TrainConfig, versions
from .base import Experiment
from .config import Config, UsageError
from .outputs import (
    clean,
    dims_panel,
    fmt,
    legend_below,
    md_table,
    plt,
    results_json,
    rule_lines,
    run_title,
    save_figure,
    training_line,
    write_atomic,
)
from .runs import status


class RealConfig(Config):
    """Mixin of the images / digits configs (each a dataclass with its own defaults)."""

    LENGTH = "iterations"
    N_EVAL_MAX = 256  # n_eval None (the default): all held-out samples, at most this many

    def validate(self) -> "RealConfig":
        for k in ("lam", "lr", "eps", "kl_threshold"):
            v = float(getattr(self, k))
            if not (math.isfinite(v) and v > 0):
                raise UsageError(f"{'lambda' if k == 'lam' else k}: expected a finite number > 0, got {v}")
        if min(self.latent, self.iterations, self.batch_size) < 1:
            raise UsageError("--latent, --iterations and --batch-size must be >= 1")
        if self.n_eval is not None and self.n_eval < 2:
            raise UsageError(f"--n-eval: expected an integer >= 2, got {self.n_eval}")
        if not 0 < self.held_out < 1:
            raise UsageError(f"held_out: expected a fraction in (0, 1), got {self.held_out}")
        if self.eval_every < 0 or self.curve_samples < 2 or getattr(self, "warmup", 0) < 0:
            raise UsageError("eval_every and warmup must be >= 0 and curve_samples >= 2")
        return self


@dataclass
class RealData:
    train: torch.Tensor  # or a stream of fresh samples (data.images.RandomCrops)
    test: torch.Tensor
    source: str
    progress: bool = True  # status lines (the step curve's) on stderr


class RealExperiment(Experiment):
    """Images and digits: subclasses give the data, the model, the metric and beta."""

    loss_name = "?"
    paper: dict = {}
    # The step curve's D'_j precision (None: the model's). float32 is ~1e-3 relative, far below
    # the curve's changes, and several times cheaper on a CPU than the float64 the final analysis
    # decodes with; a subclass whose metric overflows in float32 near a saturated decoder sets
    # float64.
    curve_dtype: torch.dtype | None = None

    def paper_for(self, cfg) -> dict:
        """The paper's results for the configuration ``cfg`` (results.json's ``paper``)."""
        return self.paper

    def load_x(self, cfg) -> tuple[torch.Tensor, str]:
        """All samples and a description of where they come from."""
        raise NotImplementedError

    def beta(self, cfg) -> float:
        return 1.0 / cfg.lam

    def train_lambda(self, cfg) -> float:
        return cfg.lam

    def default_out(self, cfg) -> str:
        return os.path.join("out", self.name, "decomposed" if cfg.decomposed else "conventional")

    def load_data(self, cfg, progress: bool) -> RealData:
        from ..data.images import split

        with status(f"loading the {self.name} data", progress):
            x, source = self.load_x(cfg)
            train_x, test_x = split(x, cfg.held_out, seed=cfg.seed)
        return RealData(train_x, test_x, source, progress)

    def train_x(self, data: RealData):
        return data.train

    def train_config(self, cfg) -> TrainConfig:
        return TrainConfig(
            lam=self.train_lambda(cfg),
            epochs=None,
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=cfg.seed,
            decomposed=cfg.decomposed,
            warmup=getattr(cfg, "warmup", 0),
        )

    def train_hooks(self, cfg, data: RealData) -> dict:
        """With ``eval_every`` > 0: the step curve, one :meth:`curve_point` on the first
        ``curve_samples`` held-out samples before training, every ``eval_every`` steps and at
        the end (records in ``checkpoint["evals"]``)."""
        if not cfg.eval_every:
            return {}
        x_eval = data.test[: cfg.curve_samples]

        def evaluate(model) -> dict:
            p = self.curve_point(cfg, model, x_eval)
            if data.progress:
                from tqdm.auto import tqdm

                nm = "n/a" if p["norm_mean"] is None else f"{p['norm_mean']:.3f}"
                tqdm.write(
                    f"curve: {p['active_dims']} active dims, norm mean {nm}, "
                    f"{p['informative_dims']} informative, KL {p['kl_total']:.2f}, "
                    f"D(x, Dec(mu)) {p['distortion_mu']:.4f}",
                    file=sys.stderr,
                )
            return p

        return {"evaluate": evaluate, "eval_every": cfg.eval_every}

    def curve_point(self, cfg, model, x_eval: torch.Tensor) -> dict:
        """One point of the step curve: active dims, norm mean/SD over them, informative dims
        (E[sigma^-2] >= the analysis' threshold) and the norm mean over them, total KL and the
        distortion D(x, Dec(mu(x))), all on ``x_eval``."""
        from ..analysis.latents import analyze_latents

        t0 = time.perf_counter()
        ana = analyze_latents(
            model,
            x_eval,
            self.metric(cfg),
            self.beta(cfg),
            kl_threshold=cfg.kl_threshold,
            eps=cfg.eps,
            gram=False,
            chunk=16 if self.name == "images" else 64,
            dtype=self.curve_dtype,
        )
        mu, _ = model.encode(x_eval)
        dist = self.metric(cfg).distance(x_eval, model.decode(mu)).mean().item()
        return {
            "active_dims": ana["active_dims"],
            "norm_mean": ana["norm_active"]["mean"],
            "norm_sd": ana["norm_active"]["sd"],
            "informative_dims": ana["informative_dims"],
            "norm_informative_mean": ana["norm_informative"]["mean"],
            "kl_total": sum(d["kl"] for d in ana["dims"]),
            "distortion_mu": dist,
            "eval_seconds": time.perf_counter() - t0,
        }

    def analyze_model(self, cfg, model, data: RealData, trained: dict, *, n_samples=None, progress=True) -> dict:
        from ..analysis.latents import analyze_latents

        avail = data.test.shape[0]
        if n_samples is not None and n_samples > avail:
            raise UsageError(f"--n-samples {n_samples}: the run has {avail} held-out samples")
        from dataclasses import replace

        want = n_samples or cfg.n_eval
        n = min(want or cfg.N_EVAL_MAX, avail)
        n_note = (
            f"--n-eval {want} asks for more than the {avail} held-out samples: {n} analysed"
            if want is not None and want > avail
            else None
        )
        if n_note:  # said even with --no-progress: the run analyses less than was asked for
            print(f"note: {n_note}", file=sys.stderr, flush=True)
        cfg = replace(cfg, n_eval=n)  # results.json's config says what was analysed
        if progress:
            print(f"analysing {n} held-out samples", file=sys.stderr, flush=True)
        ana = analyze_latents(
            model,
            data.test[:n],
            self.metric(cfg),
            self.beta(cfg),
            kl_threshold=cfg.kl_threshold,
            eps=cfg.eps,
            progress=progress,
            chunk=16 if self.name == "images" else 64,
        )
        trained = dict(trained)
        evals = trained.pop("evals", None)
        res = {
            "experiment": self.name,
            "config": cfg.description(),
            "versions": versions(),
            "data": data.source,
            "loss_name": self.loss_name,
            "n_held_out": avail,
            "training": trained,
            **ana,
            "paper": self.paper_for(cfg),
            "fit": self.fit_report(cfg, model, data, ana["n_samples"]),
        }
        if n_note:
            res["n_eval_note"] = n_note
        if evals:
            res["curve"] = {
                "eval_every": cfg.eval_every,
                "curve_samples": min(cfg.curve_samples, avail),
                "points": evals,
            }
        return res

    def fit_report(self, cfg, model, data: RealData, n: int) -> dict:
        """Distortion (z sampled as in training, and at mu) and total KL at the end, on the ``n``
        held-out samples analysed and on ``n`` training samples (the first ``n`` of the training
        split; for a stream of fresh crops, ``n`` crops drawn as in training from a fixed seed):
        a training fit much better than the held-out one means memorised samples."""
        from ..analysis.latents import fit_stats

        chunk = 16 if self.name == "images" else 64
        metric = self.metric(cfg)
        if hasattr(data.train, "fixed"):  # a stream: it never repeats a crop
            x_train = data.train.fixed(n, seed=cfg.seed + 20_000)
            what = f"{n} fresh crops drawn as in training (seed {cfg.seed + 20_000})"
        else:
            n_tr = min(n, int(data.train.shape[0]))
            x_train = data.train[:n_tr]
            what = f"the first {n_tr} of the {int(data.train.shape[0])} training samples"
        return {
            "seed": cfg.seed,
            "train_samples": what,
            "train": fit_stats(model, x_train, metric, seed=cfg.seed, chunk=chunk),
            "held_out": fit_stats(model, data.test[:n], metric, seed=cfg.seed, chunk=chunk),
        }

    def summary(self, results: dict) -> str:
        return text_summary(results)

    def write_outputs(self, out: str, results: dict, model, data: RealData, *, figures=True) -> list[str]:
        paths = []
        if figures:
            p = os.path.join(out, "figures", "dims.png")
            dims_figure(results, p)
            p2 = os.path.join(out, "figures", "traversal.png")
            traversal_figure(results, model, data.test[0], p2)
            paths += [p, p2]
        if "curve" in results:
            p = os.path.join(out, "curve.json")
            write_atomic(
                p,
                json.dumps(
                    clean({"experiment": results["experiment"], "config": results["config"], **results["curve"]}),
                    indent=1,
                )
                + "\n",
            )
            paths.append(p)
            if figures:
                p = os.path.join(out, "figures", "curve.png")
                curve_figure(results, p)
                paths.append(p)
        cfg = results["config"]
        md = (
            f"# {results['experiment']} VAE ({results['loss_name']}, "
            f"{'decomposed' if cfg['decomposed'] else 'conventional'} objective)\n\n```\n"
            + text_summary(results)
            + "\n```\n"
        )
        if figures:
            md += (
                "\n![norm, 1 - sigma^2 and E[sigma^-2] per dimension](figures/dims.png)\n\n"
                "Traversal (like Fig. 6): one row per active latent, by descending E[sigma^-2]; "
                "z_j from -2 to 2, the other latents at mu(x) of the first held-out sample:\n\n"
                "![traversal](figures/traversal.png)\n"
            )
        if "curve" in results:
            md += "\n## Step curve\n\n" + curve_table(results["curve"]) + "\n"
            if figures:
                md += "\n![active dims and norm mean against Adam steps](figures/curve.png)\n"
        write_atomic(os.path.join(out, "report.md"), md)
        write_atomic(os.path.join(out, "results.json"), results_json(results))
        return [os.path.join(out, "results.json"), os.path.join(out, "report.md")] + paths


# ------------------------------------------------------------------ outputs


FIT_MEANING = (
    "A training fit clearly better than the held-out one (lower distortion) means the model "
    "has memorised its training samples; the norms measured on held-out samples then "
    "describe a decoder fitted to those samples rather than to the data's distribution."
)


def fit_lines(res: dict) -> list[str]:
    """The training vs held-out fit as table lines (none for results without it)."""
    f = res.get("fit")
    if not f:
        return []
    out = [
        f"fit at the end (training: {f['train_samples']}; held out: the {f['held_out']['n_samples']} "
        "analysed; model dtype; z = mu + sigma * noise with a fixed seed, as in training):",
        "             | D(x, x_hat), z sampled | D(x, Dec(mu)) | KL total (nats)",
    ]
    for k, name in (("train", "training"), ("held_out", "held out")):
        v = f[k]
        out.append(f" {name:11} | {v['distortion_sampled']:22.4f} | {v['distortion_mu']:13.4f} | {v['kl_total']:.2f}")
    out.append(FIT_MEANING)
    return out


def _opt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def text_summary(res: dict) -> str:
    cfg = res["config"]
    head = (
        f"{res['experiment']} ({res['loss_name']}, "
        f"{'decomposed' if cfg['decomposed'] else 'conventional'} objective), latent {cfg['latent']}, "
        f"lambda {cfg['lam']:g}, beta {res['beta']:.4g}; {training_line(res)}"
    )
    n_note = f" (of {res['n_held_out']} held out)" if res.get("n_held_out", res["n_samples"]) > res["n_samples"] else ""
    lines = [
        head,
        f"data: {res['data']}; analysed on {res['n_samples']} held-out samples{n_note}",
        *rule_lines(res),
        f"isometry Gram (active dims): mean diagonal {fmt(res['gram']['diag_mean'])}, "
        f"mean |off-diagonal| {fmt(res['gram']['offdiag_abs_mean'])}",
        "paper: " + "; ".join(f"{k}: {v}" for k, v in res["paper"].items()),
        "",
        " dim | E[sigma^-2] |   KL   | D'_j mean | norm mean (SD) | 1 - sigma^2 | norm / (1 - sigma^2) "
        "| active | informative",
        "-----|-------------|--------|-----------|----------------|-------------|----------------------"
        "|--------|------------",
    ]
    for d in res["dims"]:
        ratio = "-" if d.get("norm_ratio_mean") is None else f"{d['norm_ratio_mean']:.3f} ({d['norm_ratio_sd']:.3f})"
        inf = "-" if "informative" not in d else ("yes" if d["informative"] else "no")
        om = _opt(d.get("one_minus_sigma2_mean"), ".3f")
        lines.append(
            f" {d['index']:3d} | {d['inv_sigma2_mean']:11.2f} | {d['kl']:6.3f} | {d['dj_mean']:9.3g} | "
            f"{d['norm_mean']:6.3f} ({d['norm_sd']:.3f}) | {om:>11} | "
            f"{ratio:>20} | {'yes' if d['active'] else 'no':6} | {inf}"
        )
    lines.append(
        "(dim: the latent's index, as the figures label it; rows by descending E[sigma^-2]; "
        "norm / (1 - sigma^2): mean (SD) of the per-sample ratio, '-' where no sample has "
        "1 - sigma^2 >= the floor)"
    )
    fl = fit_lines(res)
    if fl:
        lines += [""] + fl
    if res.get("curve"):
        c = res["curve"]
        lines += [
            "",
            f"step curve (every {c['eval_every']} steps, {c['curve_samples']} held-out samples, float32 D'_j):",
            "   step | active | norm mean (SD) | informative | norm mean | KL total | D(x, Dec(mu))",
        ]
        for p in c["points"]:
            nm = "n/a" if p["norm_mean"] is None else f"{p['norm_mean']:.3f} ({p['norm_sd']:.3f})"
            lines.append(
                f" {p['step']:6d} | {p['active_dims']:6d} | {nm:>14} | {p.get('informative_dims', '-'):>11} | "
                f"{fmt(p.get('norm_informative_mean')):>9} | {p['kl_total']:8.2f} | "
                f"{p['distortion_mu']:.4f}"
            )
    return "\n".join(lines)


def curve_table(curve: dict) -> str:
    """The step curve as a markdown table."""
    rows = [
        [
            f"{p['step']:,}",
            str(p["active_dims"]),
            fmt(p["norm_mean"]),
            fmt(p["norm_sd"]),
            str(p.get("informative_dims", "-")),
            fmt(p.get("norm_informative_mean")),
            fmt(p["kl_total"], ".2f"),
            fmt(p["distortion_mu"], ".4f"),
        ]
        for p in curve["points"]
    ]
    return (
        f"Evaluated every {curve['eval_every']:,} Adam steps on {curve['curve_samples']} fixed held-out "
        "samples (D'_j in float32):\n\n"
        + md_table(
            [
                "step",
                "active dims (KL)",
                "norm mean",
                "norm SD",
                "informative dims",
                "norm mean (informative)",
                "KL total (nats)",
                "D(x, Dec(mu))",
            ],
            rows,
        )
    )


def curve_figure(res: dict, path: str) -> None:
    """Norm mean over active and over informative dims (left axis) and their numbers (right)
    against steps."""
    pts = res["curve"]["points"]
    steps = [p["step"] for p in pts]
    fig, ax = plt().subplots(figsize=(6.5, 3.4))
    ax.plot(
        steps,
        [float("nan") if p["norm_mean"] is None else p["norm_mean"] for p in pts],
        "o-",
        ms=3,
        label="norm mean over active dims (KL)",
    )
    if any("norm_informative_mean" in p for p in pts):
        ax.plot(
            steps,
            [math.nan if p.get("norm_informative_mean") is None else p["norm_informative_mean"] for p in pts],
            "^-",
            ms=3,
            color="tab:green",
            label="norm mean over informative dims",
        )
    ax.axhline(1.0, color="gray", lw=0.8, ls="--", label="norm = 1 (isometric)")
    ax.set_xlabel("Adam steps")
    ax.set_ylabel("norm mean (no unit)")
    ax2 = ax.twinx()
    ax2.plot(steps, [p["active_dims"] for p in pts], "s--", color="tab:red", ms=3, label="active dims (KL)")
    if any("informative_dims" in p for p in pts):
        ax2.plot(
            steps,
            [p.get("informative_dims", math.nan) for p in pts],
            "v:",
            color="tab:purple",
            ms=3,
            label="informative dims",
        )
    ax2.set_ylabel(f"dims (of {res['config']['latent']})", color="tab:red")
    ax2.set_ylim(bottom=0)
    legend_below(fig, ax, ax2)
    ax.set_title(run_title(res, "step curve"), fontsize=8)
    save_figure(fig, path)


def dims_figure(res: dict, path: str) -> None:
    """Fig. 4/5 style: per-dimension norm (mean +- SD) with 1 - sigma^2 beside it and E[sigma^-2],
    left to right by descending E[sigma^-2], each labelled with its latent index (the table's
    "dim"); non-informative and inactive dims shaded (:func:`.outputs.dims_panel`)."""
    fig, ax = plt().subplots(figsize=(max(6.0, 0.28 * len(res["dims"]) + 2), 3.6))
    ax2 = dims_panel(ax, res)
    legend_below(fig, ax, ax2)
    ax.set_title(run_title(res, "per-dim norm, 1 - sigma^2 and E[sigma^-2]"), fontsize=8)
    save_figure(fig, path)


TRAVERSAL = (-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2)


@torch.no_grad()
def traversal_grid(model, x0: torch.Tensor, order: list[int], values=TRAVERSAL) -> torch.Tensor:
    """Rows: latent dims in ``order``; columns: z_j set to each value, other dims at mu(x0).
    Returns an (3, rows*S, cols*S) image in [0, 1]."""
    mu, _ = model.encode(x0.unsqueeze(0))
    z = mu.repeat(len(order) * len(values), 1)
    for r, j in enumerate(order):
        z[r * len(values) : (r + 1) * len(values), j] = torch.tensor(values, dtype=z.dtype)
    imgs = model.decode(z).clamp(0, 1)
    if imgs.dim() == 2:  # flat digits
        side = int(round(math.sqrt(imgs.shape[1])))
        imgs = imgs.view(-1, 1, side, side).expand(-1, 3, -1, -1)
    R, C = len(order), len(values)
    S = imgs.shape[-1]
    return imgs.view(R, C, 3, S, S).permute(2, 0, 3, 1, 4).reshape(3, R * S, C * S)


def traversal_figure(res: dict, model, x0: torch.Tensor, path: str, values=TRAVERSAL) -> None:
    """Fig. 6-like: one row per active latent by descending E[sigma^-2], labelled with its index
    and E[sigma^-2]; columns labelled with the z value (the other latents at mu(x0))."""
    dims = [d for d in res["dims"] if d["active"]]
    note = ""
    if not dims:
        dims = res["dims"][:3]
        note = " (no active dims: the 3 with the largest E[sigma^-2])"
    grid = traversal_grid(model, x0, [d["index"] for d in dims], values)
    S = grid.shape[1] // len(dims)
    fig_w = 1.0 + 0.75 * len(values)
    fig, ax = plt().subplots(figsize=(fig_w, 0.75 * len(dims) + 1.2))
    ax.imshow(grid.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([S * (i + 0.5) for i in range(len(values))], [f"{v:g}" for v in values], fontsize=7)
    ax.set_yticks(
        [S * (r + 0.5) for r in range(len(dims))],
        [f"z{d['index']}  E[s^-2]={d['inv_sigma2_mean']:.3g}" for d in dims],
        fontsize=7,
    )
    ax.set_xlabel("value of z_j (other latents at mu(x) of held-out sample 0)", fontsize=7)
    ax.set_ylabel("latent j, by descending E[sigma^-2]", fontsize=7)
    for r in range(1, len(dims)):  # white lines between the cells
        ax.axhline(r * S - 0.5, color="white", lw=1.5)
    for c in range(1, len(values)):
        ax.axvline(c * S - 0.5, color="white", lw=1.5)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(run_title(res, "traversal" + note), fontsize=7, wrap=True)
    save_figure(fig, path, dpi=100)
