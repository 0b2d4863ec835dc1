"""Image/digit runs evaluated as they train: the norm mean over active dims and the number of
active dims as a function of Adam steps (how long one must train before the paper's analysis
means something). Evaluated on a fixed held-out batch every ``eval_every`` steps; the curve is
written to ``curve.json`` after every point, so a run stopped early keeps what it measured."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict

import torch

from .analysis.latents import analyze_latents
from .data.images import RandomCrops
from .report import write_atomic
from .reproduce_real import (CHECKPOINT_NAME, RealRun, analyze_real, load_data, new_model, text_summary,
                             write_real_outputs)
from .train import CheckpointError, TrainConfig, train

CURVE_NAME = "curve.json"
# `reproduce images --preset cpu`: the paper's network, lambda, batch and Adam, with as many steps
# as about an hour on one CPU thread allows (~0.7 s per step unloaded), evaluated every 250 steps.
CPU_PRESET = {"iterations": 5000, "n_eval": 128}
CPU_EVAL_EVERY = 250


def curve_point(run: RealRun, model, x_eval: torch.Tensor, step: int, history: list[dict]) -> dict:
    """One point of the curve: active dims, norm mean/SD over them, total KL, distortion."""
    t0 = time.perf_counter()
    # float32 D'_j (dtype=None): ~1e-3 relative, far below the curve's changes, and several times
    # cheaper on CPU than the float64 copy the final analysis uses
    ana = analyze_latents(model, x_eval, run.metric(), run.beta, kl_threshold=run.kl_threshold,
                          eps=run.eps, gram=False, chunk=16 if run.experiment == "images" else 64,
                          dtype=None)
    last = history[-1] if history else {}
    return {"step": step, "active_dims": ana["active_dims"], "norm_mean": ana["norm_active"]["mean"],
            "norm_sd": ana["norm_active"]["sd"], "kl_total": sum(d["kl"] for d in ana["dims"]),
            "train_distortion": last.get("distortion"), "train_kl": last.get("kl"),
            "eval_seconds": time.perf_counter() - t0}


def run_with_curve(run: RealRun, out: str, *, eval_every: int = 250, curve_samples: int = 64,
                   resume: bool = False, progress: bool = True, figures: bool = True, echo=print) -> dict:
    """Train ``run`` evaluating every ``eval_every`` steps, then analyse as :func:`run_real`.

    With the default image data (a :class:`RandomCrops` stream) one epoch is ``eval_every``
    steps; with a fixed tensor (an image folder, the digits) the curve is evaluated every epoch
    that ends at least ``eval_every`` steps after the last point.
    """
    t0 = time.perf_counter()
    train_x, test_x, source = load_data(run)
    if isinstance(train_x, RandomCrops):
        train_x.epoch_size = eval_every * run.batch_size
    model = new_model(run)
    steps_per_epoch = math.ceil(train_x.shape[0] / run.batch_size)
    epochs = max(1, math.ceil(run.iterations / steps_per_epoch))
    cfg = TrainConfig(lam=run.train_lambda(), epochs=epochs, batch_size=run.batch_size, lr=run.lr,
                      seed=run.seed, decomposed=run.decomposed, warmup=run.warmup)
    os.makedirs(out, exist_ok=True)
    ckpt, curve_path = os.path.join(out, CHECKPOINT_NAME), os.path.join(out, CURVE_NAME)
    if resume and not os.path.exists(ckpt):
        raise CheckpointError(f"--resume: no checkpoint at {ckpt!r}")
    x_eval = test_x[:curve_samples]
    curve: list[dict] = []
    if resume and os.path.exists(curve_path):
        with open(curve_path) as f:
            curve = json.load(f)["points"]

    def save():
        write_atomic(curve_path, json.dumps({"config": asdict(run), "eval_every": eval_every,
                                             "curve_samples": int(x_eval.shape[0]), "points": curve},
                                            indent=1, default=float) + "\n")

    def on_epoch(epoch: int, history: list[dict]) -> None:
        step = epoch * steps_per_epoch
        if curve and step - curve[-1]["step"] < eval_every and epoch < epochs:
            return
        curve.append(curve_point(run, model, x_eval, step, history))
        save()
        if echo:
            p = curve[-1]
            nm = "n/a" if p["norm_mean"] is None else f"{p['norm_mean']:.3f}"
            echo(f"step {step}: {p['active_dims']} active dims, norm mean {nm}, "
                 f"KL {p['kl_total']:.2f}, train distortion {p['train_distortion']:.4f}")

    if not curve:
        curve.append(curve_point(run, model, x_eval, 0, []))
        save()
    history = train(model, train_x, run.metric(), cfg, checkpoint=ckpt, resume=resume, progress=progress,
                    meta={"kind": run.experiment, "run": asdict(run)}, on_epoch=on_epoch)
    n_train = train_x.shape[0]
    res = analyze_real(run, model, history, n_train, test_x, source, progress=progress)
    res["training"]["iterations"] = len(history) * steps_per_epoch
    res["curve"] = {"eval_every": eval_every, "curve_samples": int(x_eval.shape[0]), "points": curve}
    res["wall_seconds"] = time.perf_counter() - t0
    paths = write_real_outputs(out, res, model, test_x, figures=figures)
    if figures:
        p = os.path.join(out, "figures", "curve.png")
        curve_figure(curve, p)
        paths.append(p)
    if echo:
        echo(text_summary(res))
        echo("wrote " + ", ".join(paths))
    return res


def curve_figure(curve: list[dict], path: str) -> None:
    """Norm mean over active dims (left) and number of active dims (right) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.plot(steps, [p["norm_mean"] if p["norm_mean"] is not None else float("nan") for p in curve],
            "o-", ms=3, label="norm mean (active dims)")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("Adam steps")
    ax.set_ylabel("norm mean over active dims")
    ax2 = ax.twinx()
    ax2.plot(steps, [p["active_dims"] for p in curve], "s--", color="tab:red", ms=3, label="active dims")
    ax2.set_ylabel("active dims", color="tab:red")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
