"""End-to-end reproduction of the paper's toy experiments (§4.1, App. D.1, E): data -> training
-> analysis -> results.json, report.md and figures, for one run or the App. E.2 sweep."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from ._deps import metric_from_name
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
