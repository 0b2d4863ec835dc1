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

from ..checkpoint import versions
from ..train import TrainConfig
from .base import Experiment
from .config import Config, UsageError
from .outputs import (
    clean,
    results_json,
    write_atomic,
)
from .real_report import curve_figure, curve_table, dims_figure, text_summary, traversal_figure
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
