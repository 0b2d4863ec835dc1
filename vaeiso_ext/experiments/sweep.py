"""The App. E.2 ablation: toy runs over lambda x dataset x loss, one folder each, then the sweep
table (sweep.json, report.md) and the Figs. 11-22-like plots. Re-running continues a sweep: a
finished run is reused, an unfinished one resumed; a folder holding a run with other settings is
refused unless ``--overwrite``."""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, fields

from ..data import TOY_DATASETS
from ..distributed import launch_info
from .base import Experiment
from .config import Config, UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int
from .outputs import fmt, md_table, plt, results_json, save_figure, write_atomic
from .runs import folder_run, plural
from .toy import ESTIMATES, LOSS_NAMES, LOSSES, ToyConfig, table_dims
from .toy import EXPERIMENT as TOY

SWEEP_LAMBDAS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _names(allowed):
    def parse(s: str) -> str:
        items = [v.strip() for v in s.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed)}, got {s!r}")
        return ",".join(items)

    return parse


def _lambdas(s: str) -> str:
    try:
        vals = [positive_float(v) for v in s.split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        vals = []
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers > 0, got {s!r}")
    return ",".join(f"{v:g}" for v in vals)


@dataclass
class SweepConfig(Config):
    """The grid and the settings every toy run of the sweep shares."""

    LENGTH = "epochs"

    datasets: str = opt(",".join(TOY_DATASETS), "comma-separated datasets", type=_names(TOY_DATASETS))
    losses: str = opt(",".join(LOSSES), "comma-separated losses", type=_names(LOSSES))
    lambdas: str = opt(",".join(map(str, SWEEP_LAMBDAS)), "comma-separated lambdas", type=_lambdas)
    epochs: int = opt(500, "passes over the training set, every run", type=positive_int, metavar="N")
    batch_size: int = opt(128, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    seed: int = opt(0, "model init and training randomness", type=nonneg_int)
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL")
    n_train: int = opt(50_000, "training samples", type=positive_int, metavar="N")
    n_test: int = opt(10_000, "held-out samples", type=int_at_least(2), metavar="N")
    data_seed: int = opt(0, "dataset (basis and samples)", type=nonneg_int)

    def runs(self) -> list[ToyConfig]:
        shared = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("datasets", "losses", "lambdas")
        }
        return [
            ToyConfig(dataset=d, loss=loss, lam=float(lam), **shared).validate()
            for d in self.datasets.split(",")
            for loss in self.losses.split(",")
            for lam in map(float, self.lambdas.split(","))
        ]


class SweepExperiment(Experiment):
    name = "sweep"
    order = 1
    help = "App. E.2: the toy over lambda x dataset x loss (Figs. 11-22)"
    description = (
        "Train and analyse a toy run per (dataset, loss, lambda) into OUT/<dataset>_<loss>_"
        "lam<lambda>/, then sweep.json, report.md and figures. Re-running continues it."
    )
    config_cls = SweepConfig
    presets = {
        "quick": (
            "a smoke run of the sweep: mix, sse and downward, lambda 10, 100, 1000, 5 epochs "
            "of 10,000 samples, 2,000 held out",
            {
                "datasets": "mix",
                "losses": "sse,downward",
                "lambdas": "10,100,1000",
                "epochs": 5,
                "n_train": 10_000,
                "n_test": 2_000,
            },
        )
    }
    default_threads = 1
    analyzable = False

    @staticmethod
    def add_run_arguments(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("output")
        g.add_argument("--out", default=None, help="sweep folder (default out/sweep)")
        g.add_argument(
            "--overwrite", action="store_true", help="replace runs in OUT whose settings differ (otherwise refused)"
        )
        g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
        g.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")

    def main(self, args: argparse.Namespace, echo=print):
        cfg = self.config_from_args(args)
        return sweep(
            cfg,
            args.out or os.path.join("out", "sweep"),
            overwrite=args.overwrite,
            progress=not args.no_progress,
            echo=echo,
        )


def _finished(folder: str, run: ToyConfig) -> dict | None:
    """The folder's results if they are this run's, fully trained."""
    path = os.path.join(folder, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        res = json.load(f)
    t = res.get("training") or {}
    complete = t.get("complete", t.get("epochs_done") == run.epochs)  # older results: no "complete"
    return res if res.get("config") == run.description() and complete else None


def sweep(cfg: SweepConfig, out: str, *, overwrite: bool = False, progress: bool = True, echo=print) -> list[dict]:
    """Train and analyse every run of the grid (sequentially: one core each is what this tiny
    model uses well), then write the sweep table and figures. Under torchrun each run trains
    data-parallel; rank 0 alone analyses and writes (other ranks return [])."""
    runs = cfg.runs()
    plan = []
    for run in runs:  # every refusal before any training
        folder = os.path.join(out, f"{run.dataset}_{run.loss}_lam{run.lam:g}")
        held = folder_run(folder)
        want = {"experiment": "toy", **run.description()}
        same = (
            held is not None
            and held[1] is not None
            and {k: v for k, v in held[1].items() if k != "epochs"} == {k: v for k, v in want.items() if k != "epochs"}
        )
        if held is not None and not same and not overwrite:
            raise UsageError(
                f"{folder!r} holds {held[0]} with other settings than this sweep's; "
                "pass --overwrite to replace it, or choose another --out"
            )
        plan.append((run, folder, "new" if held is None else "resume" if same else "replace"))
    rank, world = launch_info()
    if world > 1:  # every rank has read the folders before rank 0 changes any
        import torch.distributed as dist

        dist.barrier()
    all_res = []
    for i, (run, folder, mode) in enumerate(plan):
        old = _finished(folder, run) if mode == "resume" else None
        if old is not None:
            all_res.append(old)
            continue
        if echo:
            echo(f"[{i + 1}/{len(plan)}] {run.dataset} {run.loss} lambda={run.lam:g}")
        res = TOY.reproduce(
            run,
            folder,
            resume=mode == "resume",
            overwrite=mode == "replace",
            progress=progress,
            figures=False,
            echo=None,
        )
        if res is None:  # a rank other than 0 of a data-parallel sweep: rank 0 analyses and writes
            continue
        res.pop("samples", None)
        all_res.append(json.loads(results_json(res)))
    if rank != 0:
        return []
    rows = sweep_rows(all_res)
    figs = sweep_figures(rows, os.path.join(out, "figures"))
    write_atomic(os.path.join(out, "sweep.json"), json.dumps(rows, indent=1) + "\n")
    write_atomic(os.path.join(out, "report.md"), sweep_markdown(rows, [os.path.relpath(f, out) for f in figs]))
    if echo:
        echo(f"wrote {out}/sweep.json, {out}/report.md and {len(figs)} figures")
    return all_res


# ------------------------------------------------------------------ table and figures


def sweep_rows(all_results: list[dict]) -> list[dict]:
    """Flatten per-run results into rows (dataset, loss, lam, epochs trained, norms, ratios,
    correlations, rate and distortion)."""
    rows = []
    for r in all_results:
        cfg = r["config"]
        act = [d for d in table_dims(r) if d["active"]]
        t = r.get("training") or {}
        rows.append(
            {
                "dataset": cfg["dataset"],
                "loss": cfg["loss"],
                "lam": float(cfg["lam"]),
                "epochs": t.get("epochs_done", cfg["epochs"]),
                "n_active": r["n_active"],
                "norms": [d["norm_mean"] for d in act],
                "ratios": [d["inv_sigma2_ratio"] for d in act],
                "corr": {k: (r["correlations"].get(k) or {}).get("pearson") for k in ESTIMATES},
                "coding_loss": r["rate_distortion"]["coding_loss"],
                "transform_coding_ratio": r["rate_distortion"]["transform_coding_ratio"],
                "rate": r["rate_distortion"]["rate"],
                "rate_theory": r["rate_distortion"].get("rate_theory"),
            }
        )
    return rows


def _epochs_text(rs: list[dict]) -> str:
    eps = sorted({r["epochs"] for r in rs})
    return plural(eps[0], "epoch") if len(eps) == 1 else f"{eps[0]:g}-{eps[-1]:g} epochs"


def sweep_figures(rows: list[dict], folder: str) -> list[str]:
    """One Figs. 11-19-like PNG per (dataset, loss) and the Figs. 21-22-like one, every loss."""
    pyplot = plt()
    paths = []
    pairs = sorted({(r["dataset"], r["loss"]) for r in rows})
    for ds, loss in pairs:
        rs = sorted([r for r in rows if (r["dataset"], r["loss"]) == (ds, loss)], key=lambda r: r["lam"])
        lams = [r["lam"] for r in rs]
        fig, axes = pyplot.subplots(1, 3, figsize=(13, 3.6))
        for j in range(3):
            axes[0].semilogx(
                lams, [r["norms"][j] if len(r["norms"]) > j else math.nan for r in rs], "o-", ms=3, label=f"z{j + 1}"
            )
        axes[0].axhline(1.0, color="gray", lw=0.6)
        axes[0].set_ylim(0, 2)
        axes[0].set_title("(a) norm (2/beta) sigma^2 D' (mean)", fontsize=9)
        axes[0].set_ylabel("norm (no unit; 1 = isometric)", fontsize=8)
        for j, ref in ((1, 4), (2, 16)):
            axes[1].loglog(
                lams,
                [r["ratios"][j] if len(r["ratios"]) > j else math.nan for r in rs],
                "o-",
                ms=3,
                label=f"E[s^-2] z{j + 1} / z1",
            )
            axes[1].axhline(ref, color="gray", lw=0.6)
        axes[1].set_yticks([1, 2, 4, 8, 16, 32], ["1", "2", "4", "8", "16", "32"])
        axes[1].minorticks_off()
        axes[1].set_title("(b) ratio of estimated variances (theory 4, 16)", fontsize=9)
        axes[1].set_ylabel("ratio (no unit)", fontsize=8)
        for k in ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L", "p_mu_prod_sigma"]:
            if loss == "sse" and k.startswith("scaled"):
                continue  # a_x = 1: identical to the unscaled estimates
            axes[2].semilogx(
                lams,
                [r["corr"][k] if r["corr"][k] is not None else math.nan for r in rs],
                "o-",
                ms=3,
                label=ESTIMATES[k],
            )
        axes[2].set_ylim(-0.2, 1.05)
        axes[2].set_title("(c) Pearson R with the true p(x)", fontsize=9)
        axes[2].set_ylabel("R (no unit)", fontsize=8)
        for ax in axes:
            ax.set_xlabel("lambda = 1/beta", fontsize=8)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
            ax.tick_params(labelsize=7)
        fig.suptitle(
            f"App. E.2 sweep: toy {ds}, {LOSS_NAMES.get(loss, loss)}, {_epochs_text(rs)} per run", fontsize=9, y=1.03
        )
        p = os.path.join(folder, f"sweep_{ds}_{loss}.png")
        save_figure(fig, p)
        paths.append(p)
    if rows:
        fig, axes = pyplot.subplots(1, 2, figsize=(11, 4))
        colours = {d: c for d, c in zip(TOY_DATASETS, ("tab:blue", "tab:orange", "tab:green"))}
        styles = {"sse": ("o", "-"), "downward": ("s", "--"), "upward": ("^", ":")}
        for ds, loss in pairs:
            rs = sorted([r for r in rows if (r["dataset"], r["loss"]) == (ds, loss)], key=lambda r: -r["lam"])
            betas = [1 / r["lam"] for r in rs]
            mk, ls = styles.get(loss, ("x", "-"))
            kw = dict(marker=mk, ls=ls, ms=3, color=colours.get(ds), label=f"{ds} / {loss}")
            axes[0].loglog(betas, [r["coding_loss"] for r in rs], **kw)
            axes[1].loglog(betas, [r["transform_coding_ratio"] for r in rs], **kw)
        b = sorted({1 / r["lam"] for r in rows})
        axes[0].loglog(b, [3 * x / 2 for x in b], "k--", lw=0.8, label="theory n beta / 2 (Eq. 14)")
        axes[1].loglog(b, [21 * x / 16 for x in b], "k--", lw=0.8, label="theory 21 beta / 16 (Eq. 54)")
        axes[0].set_title("coding loss E[D(x_breve, x_hat)] (Fig. 21)", fontsize=9)
        axes[1].set_title("transform / coding loss (Fig. 22)", fontsize=9)
        axes[0].set_ylabel("coding loss (units of the metric D)", fontsize=8)
        axes[1].set_ylabel("E[D(x, x_breve)] / E[D(x_breve, x_hat)] (no unit)", fontsize=8)
        for ax in axes:
            ax.set_xlabel("beta = 1/lambda", fontsize=8)
        h, lab = axes[0].get_legend_handles_labels()
        h2, lab2 = axes[1].get_legend_handles_labels()
        fig.legend(h + h2[-1:], lab + lab2[-1:], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
        fig.suptitle(f"App. E.2 sweep: rate and distortion, all runs ({_epochs_text(rows)} per run)", fontsize=9)
        p = os.path.join(folder, "sweep_rate_distortion.png")
        save_figure(fig, p)
        paths.append(p)
    return paths


def sweep_markdown(rows: list[dict], figures: list[str]) -> str:
    parts = ["# App. E.2 sweep", ""]
    header = [
        "dataset",
        "loss",
        "lambda",
        "epochs trained",
        "n act.",
        "norms",
        "Var ratios",
        "R p(mu)",
        "R exp(-L/b)",
        "R a p(mu) prod s",
        "R a exp(-L/b)",
        "coding",
        "T/C",
    ]
    body = []
    for r in sorted(rows, key=lambda r: (r["dataset"], r["loss"], r["lam"])):
        body.append(
            [
                r["dataset"],
                r["loss"],
                fmt(r["lam"], "g"),
                f"{r['epochs']:g}",
                str(r["n_active"]),
                " ".join(fmt(v, ".2f") for v in r["norms"]),
                " ".join(fmt(v, ".1f") for v in r["ratios"]),
                *[
                    fmt(r["corr"][k], ".2f")
                    for k in ["p_mu", "exp_neg_L", "scaled_p_mu_prod_sigma", "scaled_exp_neg_L"]
                ],
                fmt(r["coding_loss"], ".3g"),
                fmt(r["transform_coding_ratio"], ".3g"),
            ]
        )
    parts += [md_table(header, body), ""]
    parts += [f"![{os.path.basename(f)}]({f})" for f in figures]
    return "\n".join(parts) + "\n"


EXPERIMENT = SweepExperiment()
