"""The paper's real-data experiments (§4.2, App. D.2, F, G): the conv VAE with GDN/IGDN on 64x64
photographs with D = 1 - SSIM, and the FC digits VAE with BCE. Train, analyse with the model's
own metric, and write results.json, report.md, the Fig. 4/5-style plot and a traversal grid."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from . import metrics
from .data.digits import DIGIT_PIXELS, load_digits
from .data.images import RandomCrops, load_image_folder, split
from .models import ConvVAE, DigitsVAE, build_model
from .report import write_atomic
from .train import CheckpointError, TrainConfig, load_checkpoint, train, versions

CHECKPOINT_NAME = "checkpoint.pt"
# Adam steps of linear lr warm-up for the images (docs/image_results.md: without it Adam at 1e-3
# collapses the posterior within ~50 steps); held-out crops of the default image data.
WARMUP = 1000
HELD_OUT_CROPS = 512
STREAM_EPOCH_STEPS = 500
EXPERIMENTS = ("images", "digits")

# The paper's settings (App. D.2 and G) and what it reports.
DEFAULTS = {
    "images": {"lam": 1000.0, "iterations": 300_000, "batch_size": 64, "latent": 32, "warmup": WARMUP},
    "digits": {"lam": 2000.0, "iterations": 50_000, "batch_size": 256, "latent": 32},
}
QUICK = {
    "images": {"iterations": 100, "batch_size": 32, "n_eval": 32},
    "digits": {"iterations": 400, "batch_size": 256, "n_eval": 128},
}
PAPER = {
    "images": {"conventional": "norm means of dims 1-26 average 1.83 (SD 0.13), the last dims inactive",
               "decomposed": "all 32 dims active, norm means average 0.92 (SD 0.04)"},
    "digits": {"conventional": "norms ~1 except where E[sigma^-2] < 10"},
}


@dataclass
class RealRun:
    """Everything that defines one images/digits run (stored in the checkpoint and results)."""

    experiment: str = "images"
    data: str | None = None          # images: a folder of images (default: scikit-image photos)
    crop: int | None = None          # images: centred square side before resizing
    skip_unreadable: bool = False    # images: skip (and count) files of --data that cannot be read
    latent: int = 32
    lam: float = 1000.0
    iterations: int = 300_000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    decomposed: bool = False
    n_eval: int = 256                # held-out samples analysed
    held_out: float = 0.1
    kl_threshold: float = 0.1
    eps: float = 1e-3
    warmup: int = 0                  # Adam steps of linear lr warm-up

    @classmethod
    def for_experiment(cls, experiment: str, quick: bool = False, **overrides) -> "RealRun":
        if experiment not in EXPERIMENTS:
            raise ValueError(f"experiment: expected one of {EXPERIMENTS}, got {experiment!r}")
        cfg = {"experiment": experiment, **DEFAULTS[experiment], **(QUICK[experiment] if quick else {})}
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**cfg).validate()

    def validate(self) -> "RealRun":
        if not self.lam > 0:
            raise ValueError(f"lambda: expected > 0, got {self.lam}")
        if self.latent < 1 or self.iterations < 1 or self.batch_size < 1 or self.n_eval < 2:
            raise ValueError("latent, iterations and batch size must be >= 1 and n_eval >= 2")
        if self.data is not None and self.experiment != "images":
            raise ValueError("--data applies to the images experiment only")
        return self

    @property
    def pixels(self) -> int:
        return DIGIT_PIXELS if self.experiment == "digits" else 3 * 64 * 64

    @property
    def beta(self) -> float:
        """beta of the analysis: 1/lambda for SSIM (a mean over pixels already); P/lambda for
        the digits, whose BCE is averaged over P pixels in training and summed in the analysis."""
        return self.pixels / self.lam if self.experiment == "digits" else 1.0 / self.lam

    def metric(self):
        return metrics.BCE() if self.experiment == "digits" else metrics.SSIM()

    def train_lambda(self) -> float:
        """lambda on the summed metric: lambda / P for the pixel-averaged BCE."""
        return self.lam / self.pixels if self.experiment == "digits" else self.lam

    @classmethod
    def from_dict(cls, d: dict) -> "RealRun":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_data(run: RealRun) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, held-out, description) for the run, split with the run's seed."""
    if run.experiment == "digits":
        x, _ = load_digits()
        source = "scikit-learn 8x8 digits (1797), /16, bilinear to 28x28 (P = 784)"
    elif run.data is not None:
        rep: dict = {}
        x = load_image_folder(run.data, size=64, crop=run.crop, skip_unreadable=run.skip_unreadable, report=rep)
        source = (f"image folder {run.data} ({x.shape[0]} images, {rep['skipped']} unreadable skipped, "
                  f"centre crop {run.crop or 'shorter side'} -> 64x64)")
    else:  # fresh random crops each step; a fixed seeded set of crops is the held-out data
        stream = RandomCrops(size=64, seed=run.seed)
        source = (f"scikit-image photographs ({len(stream.photos)}), 64x64 random crops drawn afresh "
                  f"each step (side 1/8 to 1 of the shorter side, flips); {HELD_OUT_CROPS} fixed held-out crops")
        return stream, stream.fixed(HELD_OUT_CROPS, seed=run.seed + 10_000), source
    train_x, test_x = split(x, run.held_out, seed=run.seed)
    return train_x, test_x, source


def new_model(run: RealRun):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        if run.experiment == "digits":
            return DigitsVAE(latent=run.latent, pixels=DIGIT_PIXELS)
        return ConvVAE(latent=run.latent)


def run_real(run: RealRun, out: str, *, resume: bool = False, progress: bool = True,
             figures: bool = True, echo=print) -> dict:
    """Train (or resume), analyse on held-out data, and write the outputs into ``out``."""
    t0 = time.perf_counter()
    train_x, test_x, source = load_data(run)
    model = new_model(run)
    if isinstance(train_x, RandomCrops):  # a stream: an "epoch" (checkpoint) every <= 500 steps
        train_x.epoch_size = run.batch_size * min(run.iterations, STREAM_EPOCH_STEPS)
    epochs = max(1, math.ceil(run.iterations * run.batch_size / train_x.shape[0]))
    cfg = TrainConfig(lam=run.train_lambda(), epochs=epochs, batch_size=run.batch_size, lr=run.lr,
                      seed=run.seed, decomposed=run.decomposed, warmup=run.warmup)
    ckpt = os.path.join(out, CHECKPOINT_NAME)
    if resume and not os.path.exists(ckpt):
        raise CheckpointError(f"--resume: no checkpoint at {ckpt!r}")
    history = train(model, train_x, run.metric(), cfg, checkpoint=ckpt, resume=resume,
                    progress=progress, meta={"kind": run.experiment, "run": asdict(run)})
    res = analyze_real(run, model, history, train_x.shape[0], test_x, source, progress=progress)
    res["wall_seconds"] = time.perf_counter() - t0
    paths = write_real_outputs(out, res, model, test_x, figures=figures)
    if echo:
        echo(text_summary(res))
        echo("wrote " + ", ".join(paths))
    return res


def analyze_real(run: RealRun, model, history, n_train: int, test_x, source, *, progress=False) -> dict:
    from .analysis.latents import analyze_latents

    x = test_x[: run.n_eval]
    ana = analyze_latents(model, x, run.metric(), run.beta, kl_threshold=run.kl_threshold,
                          eps=run.eps, progress=progress, chunk=16 if run.experiment == "images" else 64)
    return {"config": asdict(run), "versions": versions(), "data": source,
            "training": {"epochs": len(history), "n_train": n_train,
                         "iterations": len(history) * math.ceil(n_train / run.batch_size),
                         "final": history[-1] if history else None},
            **ana, "paper": PAPER[run.experiment]}


def load_real_checkpoint(checkpoint: str):
    """(run, model, history) of a checkpoint written by :func:`run_real`."""
    ck = load_checkpoint(checkpoint)
    meta = ck.get("meta") or {}
    if meta.get("kind") not in EXPERIMENTS or "run" not in meta:
        raise CheckpointError(f"checkpoint {checkpoint!r} holds no images/digits run description")
    run = RealRun.from_dict(meta["run"])
    try:
        model = build_model(ck["model_config"])
        model.load_state_dict(ck["model"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {checkpoint!r}: its weights do not fit the model: {e}") from e
    return run, model.eval(), list(ck["history"])


def analyze_real_checkpoint(checkpoint: str, out: str | None = None, *, figures=True, echo=print) -> dict:
    """Re-analyse a checkpoint; nothing is written before the analysis has finished."""
    run, model, history = load_real_checkpoint(checkpoint)
    train_x, test_x, source = load_data(run)
    res = analyze_real(run, model, history, train_x.shape[0], test_x, source)
    out = out or os.path.dirname(os.path.abspath(checkpoint))
    paths = write_real_outputs(out, res, model, test_x, figures=figures)
    if echo:
        echo(text_summary(res))
        echo("wrote " + ", ".join(paths))
    return res


# ------------------------------------------------------------------ outputs


def text_summary(res: dict) -> str:
    cfg = res["config"]
    na = res["norm_active"]
    head = (f"{cfg['experiment']} ({'decomposed' if cfg['decomposed'] else 'conventional'} loss), "
            f"latent {cfg['latent']}, lambda {cfg['lam']:g}, beta {res['beta']:.4g}, "
            f"{res['training']['epochs']} epochs; {res['n_samples']} held-out samples")
    lines = [head, f"active dims (mean KL >= {res['kl_threshold']}): {res['active_dims']} of {cfg['latent']}",
             "norm mean over active dims: " + (f"{na['mean']:.3f} (SD {na['sd']:.3f})" if na["mean"] is not None else "n/a"),
             f"isometry Gram (active dims): mean diagonal {_f(res['gram']['diag_mean'])}, "
             f"mean |off-diagonal| {_f(res['gram']['offdiag_abs_mean'])}",
             "paper: " + "; ".join(f"{k}: {v}" for k, v in res["paper"].items()),
             "", " dim | E[sigma^-2] |   KL   | D'_j mean | norm mean (SD) | active",
             "-----|-------------|--------|-----------|----------------|-------"]
    for d in res["dims"]:
        lines.append(f" {d['index']:3d} | {d['inv_sigma2_mean']:11.2f} | {d['kl']:6.3f} | {d['dj_mean']:9.3g} | "
                     f"{d['norm_mean']:6.3f} ({d['norm_sd']:.3f}) | {'yes' if d['active'] else 'no'}")
    return "\n".join(lines)


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"


def dims_figure(res: dict, path: str) -> None:
    """Fig. 4/5 style: per-dimension norm (mean +- SD) and E[sigma^-2], ordered by E[sigma^-2]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = res["dims"]
    k = range(1, len(dims) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.errorbar(k, [d["norm_mean"] for d in dims], yerr=[d["norm_sd"] for d in dims], fmt="o", ms=3,
                label="(2/beta) sigma_j^2 D'_j")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("latent dimension (by descending E[sigma^-2])")
    ax.set_ylabel("norm")
    ax2 = ax.twinx()
    ax2.semilogy(k, [d["inv_sigma2_mean"] for d in dims], "s", color="tab:red", ms=3, label="E[sigma^-2]")
    ax2.set_ylabel("E[sigma^-2]", color="tab:red")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def traversal_grid(model, x0: torch.Tensor, order: list[int], values=(-2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2)) -> torch.Tensor:
    """Rows: latent dims in ``order``; columns: z_j set to each value, other dims at mu(x0).
    Returns an (3, rows*S, cols*S) image in [0, 1]."""
    mu, _ = model.encode(x0.unsqueeze(0))
    z = mu.repeat(len(order) * len(values), 1)
    for r, j in enumerate(order):
        z[r * len(values):(r + 1) * len(values), j] = torch.tensor(values, dtype=z.dtype)
    imgs = model.decode(z).clamp(0, 1)
    if imgs.dim() == 2:  # flat digits
        side = int(round(math.sqrt(imgs.shape[1])))
        imgs = imgs.view(-1, 1, side, side).expand(-1, 3, -1, -1)
    R, C = len(order), len(values)
    S = imgs.shape[-1]
    return imgs.view(R, C, 3, S, S).permute(2, 0, 3, 1, 4).reshape(3, R * S, C * S)


def save_png(img: torch.Tensor, path: str) -> None:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def write_real_outputs(out: str, res: dict, model, test_x, *, figures: bool = True) -> list[str]:
    os.makedirs(out, exist_ok=True)
    paths = []
    if figures:
        fig_dir = os.path.join(out, "figures")
        os.makedirs(fig_dir, exist_ok=True)
        p = os.path.join(fig_dir, "dims.png")
        dims_figure(res, p)
        paths.append(p)
        p = os.path.join(fig_dir, "traversal.png")
        save_png(traversal_grid(model, test_x[0], [d["index"] for d in res["dims"]]), p)
        paths.append(p)
    md = "# " + res["config"]["experiment"] + " VAE\n\n```\n" + text_summary(res) + "\n```\n"
    if figures:
        md += "\n![norm and E[sigma^-2] per dimension](figures/dims.png)\n\n" \
              "Traversal: rows are latent dims by descending E[sigma^-2], z_j from -2 to 2:\n\n" \
              "![traversal](figures/traversal.png)\n"
    write_atomic(os.path.join(out, "report.md"), md)
    write_atomic(os.path.join(out, "results.json"), json.dumps(res, indent=1, default=float) + "\n")
    return [os.path.join(out, "results.json"), os.path.join(out, "report.md")] + paths
