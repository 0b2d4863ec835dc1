"""End-to-end reproduction of the paper's toy experiments (§4.1, App. D.1, E): data -> training
-> analysis -> results.json, report.md and figures, for one run or the App. E.2 sweep."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from .metrics import by_name as metric_from_name
from .data import TOY_DATASETS, make_toy
from .models import ToyVAE, build_model
from .train import (CheckpointError, TrainConfig, dist_info, init_distributed, load_checkpoint,
                    train)

CHECKPOINT_NAME = "checkpoint.pt"
LOSSES = ("sse", "downward", "upward")
SWEEP_LAMBDAS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class ToyRun:
    """Everything that defines one toy run (stored in the checkpoint and results.json)."""

    dataset: str = "mix"
    loss: str = "sse"
    lam: float = 100.0
    epochs: int = 500
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    decomposed: bool = False
    n_train: int = 50_000
    n_test: int = 10_000
    data_seed: int = 0
    latent: int = 3
    kl_threshold: float = 0.1
    eps: float = 1e-3

    def validate(self) -> "ToyRun":
        if self.dataset not in TOY_DATASETS:
            raise ValueError(f"dataset: expected one of {TOY_DATASETS}, got {self.dataset!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if not self.lam > 0:
            raise ValueError(f"lambda: expected > 0, got {self.lam}")
        if self.epochs < 1 or self.batch_size < 1 or self.n_train < 1 or self.n_test < 2:
            raise ValueError("epochs, batch size, n_train must be >= 1 and n_test >= 2")
        return self

    @property
    def beta(self) -> float:
        return 1.0 / self.lam

    def train_config(self) -> TrainConfig:
        return TrainConfig(lam=self.lam, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           seed=self.seed, decomposed=self.decomposed)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyRun":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def quick(run: ToyRun) -> ToyRun:
    """The --quick variant: 60 epochs (about half a minute of training on one core)."""
    run.epochs = min(run.epochs, 60)
    return run


def make_data(run: ToyRun):
    return make_toy(run.dataset, run.n_train, run.n_test, seed=run.data_seed)


def new_model(run: ToyRun) -> ToyVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        return ToyVAE(latent=run.latent)


def train_toy(run: ToyRun, out: str, *, resume: bool = False, progress: bool = True):
    """Train (or resume) one run into ``out/checkpoint.pt``; returns (model, data, history)."""
    run.validate()
    data = make_data(run)
    model = new_model(run)
    ckpt = os.path.join(out, CHECKPOINT_NAME)
    if resume and not os.path.exists(ckpt):
        raise CheckpointError(f"--resume: no checkpoint at {ckpt!r}")
    history = train(model, data.x_train, metric_from_name(run.loss), run.train_config(),
                    checkpoint=ckpt, resume=resume, progress=progress,
                    meta={"kind": "toy", "run": asdict(run)})
    return model, data, history


def load_run(checkpoint: str):
    """(run, model, history) from a checkpoint written by :func:`train_toy`."""
    ck = load_checkpoint(checkpoint)
    meta = ck.get("meta") or {}
    if meta.get("kind") != "toy" or "run" not in meta:
        raise CheckpointError(f"checkpoint {checkpoint!r} holds no toy-run description")
    run = ToyRun.from_dict(meta["run"])
    run.epochs = int(ck["epoch"])
    try:
        model = build_model(ck["model_config"])
        model.load_state_dict(ck["model"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {checkpoint!r}: its weights do not fit the model: {e}") from e
    model.eval()
    return run, model, list(ck["history"])


# ------------------------------------------------------------------ analysis and outputs


def analyze_run(run: ToyRun, model, history: list[dict], *, n_samples: int | None = None,
                keep_samples: bool = True) -> dict:
    """Analyse a trained toy model on the run's held-out data; the full results dict."""
    from .analysis import analyze
    from .train import versions

    data = make_data(run)
    res = analyze(model, data, metric_from_name(run.loss), run.beta, kl_threshold=run.kl_threshold,
                  eps=run.eps, n_samples=n_samples, keep_samples=keep_samples)
    secs = [h["seconds"] for h in history]
    res = {"config": asdict(run), "versions": versions(), **res,
           "training": {"epochs_done": len(history),
                        "final": history[-1] if history else None,
                        "seconds_per_epoch_median": sorted(secs)[len(secs) // 2] if secs else None}}
    return res


def write_outputs(out: str, results: dict, *, figures: bool = True) -> list[str]:
    from .report import write_run_outputs

    return write_run_outputs(out, results, figures=figures)


def run_toy(run: ToyRun, out: str, *, resume: bool = False, progress: bool = True,
            figures: bool = True, echo=print) -> dict | None:
    """Train, analyse and write one run; returns the results (None on ranks other than 0)."""
    t0 = time.perf_counter()
    model, data, history = train_toy(run, out, resume=resume, progress=progress)
    rank, _ = dist_info()
    if rank != 0:
        return None
    res = analyze_run(run, model, history)
    res["wall_seconds"] = time.perf_counter() - t0
    paths = write_outputs(out, res, figures=figures)
    if echo:
        from .report import text_table

        echo(text_table(res))
        echo("wrote " + ", ".join(paths))
    return res


def analyze_checkpoint(checkpoint: str, out: str | None = None, *, figures: bool = True,
                       n_samples: int | None = None, echo=print) -> dict:
    """Re-analyse a checkpoint; writes into ``out`` (default: the checkpoint's folder). The
    checkpoint is read and the analysis finished before any file is written."""
    run, model, history = load_run(checkpoint)
    res = analyze_run(run, model, history, n_samples=n_samples)
    out = out or os.path.dirname(os.path.abspath(checkpoint))
    paths = write_outputs(out, res, figures=figures)
    if echo:
        from .report import text_table

        echo(text_table(res))
        echo("wrote " + ", ".join(paths))
    return res


# ------------------------------------------------------------------ App. E.2 sweep


def sweep(base: ToyRun, out: str, *, datasets=TOY_DATASETS, losses=LOSSES, lambdas=SWEEP_LAMBDAS,
          progress: bool = True, echo=print) -> list[dict]:
    """Train and analyse every (dataset, loss, lambda) into ``out/<dataset>_<loss>_lam<lambda>/``,
    skipping runs whose results.json already matches; then the sweep table and figures.
    Runs are sequential (one core each is what this tiny model uses well)."""
    from .report import results_json, sweep_figures, sweep_markdown, sweep_rows, write_atomic

    all_res = []
    grid = [(d, l, lam) for d in datasets for l in losses for lam in lambdas]
    for i, (ds, loss, lam) in enumerate(grid):
        run = ToyRun.from_dict({**asdict(base), "dataset": ds, "loss": loss, "lam": float(lam)})
        folder = os.path.join(out, f"{ds}_{loss}_lam{lam:g}")
        rpath = os.path.join(folder, "results.json")
        if os.path.exists(rpath):
            with open(rpath) as f:
                old = json.load(f)
            if old.get("config") == asdict(run):
                all_res.append(old)
                continue
        if echo:
            echo(f"[{i + 1}/{len(grid)}] {ds} {loss} lambda={lam:g}")
        resume = os.path.exists(os.path.join(folder, CHECKPOINT_NAME))
        try:
            res = run_toy(run, folder, resume=resume, progress=progress, figures=False, echo=None)
        except CheckpointError:
            res = run_toy(run, folder, resume=False, progress=progress, figures=False, echo=None)
        res.pop("samples", None)
        all_res.append(json.loads(results_json(res)))
    rows = sweep_rows(all_res)
    figs = sweep_figures(rows, os.path.join(out, "figures"))
    write_atomic(os.path.join(out, "sweep.json"), json.dumps(rows, indent=1) + "\n")
    write_atomic(os.path.join(out, "report.md"),
                 sweep_markdown(rows, [os.path.relpath(f, out) for f in figs]))
    if echo:
        echo(f"wrote {out}/sweep.json, {out}/report.md and {len(figs)} figures")
    return all_res
