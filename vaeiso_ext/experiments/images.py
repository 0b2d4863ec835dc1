"""The image experiment (§4.2, App. D.2, F): the conv VAE with GDN/IGDN trained with
D = 1 - SSIM on photographs (64x64 as the paper; ``--size``), per-latent norms like Figs. 4-5 and
a Fig. 6-like traversal. The default is the paper's protocol (300k Adam steps at 1e-3, a GPU job);
``--preset cpu`` is the one that shows the finding on a CPU (docs/image_results.md).

To add an option: add a field to :class:`ImagesConfig` with :func:`~.base.opt` (it becomes
``--field-name``, part of the run description, and is compared on ``--resume``); to add a
preset, an entry of ``ImagesExperiment.presets`` (``--preset NAME``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .. import metrics
from ..distributed import init_distributed
from ..models import CONV_INITS, ConvVAE
from ..train import TrainConfig
from .config import UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int
from .real import RealConfig, RealData, RealExperiment
from .runs import status

# Adam steps of linear lr warm-up (docs/image_results.md: without it Adam at 1e-3 collapses the
# posterior within ~50 steps); held-out crops of the default data; the default data's "epoch"
# (the checkpoint interval) in Adam steps.
WARMUP = 1000
HELD_OUT_CROPS = 512
STREAM_EPOCH_STEPS = 500

# The CPU protocol (docs/image_results.md): 32x32 crops, the paper's network, lambda and SSIM,
# batch 32 and Adam at 1e-4 (at >= ~5e-4 the decoder stops using z faster than sigma follows on
# these crops), a 50-step warm-up and x0.3 from step 1200, 1500 steps; a curve point every 100.
CPU = {
    "size": 32,
    "batch_size": 32,
    "lr": 1e-4,
    "warmup": 50,
    "lr_drop_at": 1200,
    "lr_drop": 0.3,
    "iterations": 1500,
    "eval_every": 100,
    "n_eval": 256,
}
CPU_HELP = (
    "the CPU protocol that shows the finding (docs/image_results.md): 32x32 crops, batch 32, "
    "Adam 1e-4 (50-step warm-up, x0.3 from step 1200) for 1500 steps, a curve point every 100 "
    "steps, 256 crops analysed; measured: 6 min (decomposed) and 5 min (conventional) with "
    "--threads 1, the two side by side on 2 idle cores"
)
# A smoke run: the CPU protocol's settings, shortened.
QUICK = {"size": 32, "batch_size": 32, "lr": 1e-4, "warmup": 50, "iterations": 50, "n_eval": 16}
QUICK_HELP = (
    "50 steps of the cpu preset's settings, 16 crops analysed (a smoke run: 54 CPU-seconds "
    "measured with 2 threads, under a minute on 2 idle cores)"
)
# App. F.2: the App. D.2 network with a 2048-wide FC stage (at 64x64 the conv stack gives
# 64 x 4 x 4 = 1024 features: FC(1024, 2048)), 256 latents and lambda 10000; the rest as the defaults.
F2 = {"size": 64, "latent": 256, "lam": 10000.0, "hidden": 2048}
F2_HELP = (
    "the paper's App. F.2 configuration: 64x64, 256 latents, lambda 10000, FC width 2048 "
    "(the other settings the defaults: the paper's 300k-step protocol, a GPU job)"
)
# The CPU protocol at the paper's 64x64 (docs/image_results.md): the cpu preset's settings (batch
# 32, Adam 1e-4 with a 50-step warm-up and x0.3 for the last fifth) for the steps that fit about
# 45 minutes a run on one core, analysis included (a decomposed step took ~0.5 s, the float64
# analysis ~3.5 s a crop): 3500 steps, a curve point every 500 on 32 crops, 128 crops analysed.
CPU64 = {
    "size": 64,
    "batch_size": 32,
    "lr": 1e-4,
    "warmup": 50,
    "lr_drop_at": 2800,
    "lr_drop": 0.3,
    "iterations": 3500,
    "eval_every": 500,
    "curve_samples": 32,
    "n_eval": 128,
}
CPU64_HELP = (
    "the CPU protocol at the paper's 64x64 (docs/image_results.md): the cpu preset's settings "
    "for 3500 steps (x0.3 from step 2800), a curve point every 500 steps on 32 crops, 128 crops "
    "analysed; measured: 33 min (decomposed) and 21 min (conventional) with --threads 1, the two "
    "side by side on 2 idle cores"
)
# App. F.2 at CPU scale: F.2's network, latents and lambda on the cpu64 protocol, fewer crops in
# the curve and the analysis (each costs one decoder jvp per latent, and F.2 has 256).
F2_CPU = {**CPU64, **F2, "curve_samples": 16, "n_eval": 64}
F2_CPU_HELP = (
    "App. F.2 at CPU scale (docs/image_results.md): F.2's network (256 latents, lambda 10000, FC "
    "width 2048) on the cpu64 protocol, 16 crops a curve point, 64 crops analysed; measured: "
    "43 min (decomposed) and 30 min (conventional) with --threads 1, the two side by side on 2 idle "
    "cores"
)
# The paper's App. F.2 results.
PAPER_F2 = {"conventional": "norm mean 1.25 (App. F.2)", "decomposed": "norm mean 0.95 (App. F.2)"}


@dataclass
class ImagesConfig(RealConfig):
    """Everything that defines one images run (stored in the checkpoint and results.json)."""

    data: str | None = opt(
        None,
        "a folder of images, 8- or 16-bit (default: crops of scikit-image's photographs drawn afresh each step)",
        metavar="DIR",
    )
    crop: int | None = opt(
        None,
        "with --data: side of the centred square cut before resizing to --size (default the shorter side)",
        type=positive_int,
        metavar="SIDE",
    )
    skip_unreadable: bool = opt(False, "with --data: skip (and count) files that cannot be decoded instead of stopping")
    size: int = opt(
        64,
        "image side in pixels, a multiple of 16: the network's input, the crops "
        "of the default data and the resize of --data",
        type=int_at_least(16),
        metavar="PX",
    )
    latent: int = opt(32, "latent dims", type=positive_int, metavar="N")
    hidden: int = opt(1024, "width of the FC layers (1024: App. D.2; 2048: App. F.2)", type=positive_int, metavar="W")
    lam: float = opt(1000.0, "lambda = 1/beta (D = 1 - SSIM)", flag="--lambda", type=positive_float, metavar="L")
    iterations: int = opt(300_000, "Adam steps (exactly)", type=positive_int, metavar="N")
    batch_size: int = opt(64, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    warmup: int = opt(
        WARMUP, "Adam steps of linear lr warm-up (0: none; docs/image_results.md)", type=nonneg_int, metavar="N"
    )
    lr_drop_at: int = opt(
        0,
        "from this Adam step (0-based) on, the learning rate is multiplied by --lr-drop (0: never)",
        type=nonneg_int,
        metavar="STEP",
    )
    lr_drop: float = opt(0.3, "the factor of --lr-drop-at, in (0, 1]", type=positive_float, metavar="F")
    seed: int = opt(0, "model init, training randomness and the train/held-out split", type=nonneg_int)
    decomposed: bool = opt(
        False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL (the paper's decomposed loss)"
    )
    n_eval: int | None = opt(
        None,
        "held-out samples analysed (default: all held out, at most 256)",
        type=int_at_least(2),
        metavar="N",
        analysis_only=True,
    )
    eval_every: int = opt(
        0,
        "step curve: evaluate active dims and the norm mean every N steps (curve.json, figures/curve.png; 0: none)",
        type=nonneg_int,
        metavar="N",
    )
    held_out: float = 0.1  # of an image folder (the default stream holds out HELD_OUT_CROPS)
    kl_threshold: float = 0.1
    eps: float = 1e-3
    init: str = opt(
        "scaled",
        "ConvVAE initialisation: scaled (ours, docs/image_results.md) or torch "
        "(PyTorch's layer defaults, with which the posterior collapses)",
        choices=CONV_INITS,
    )
    curve_samples: int = 64  # held-out samples of each step-curve point

    # Runs recorded before these fields existed trained with PyTorch's init and no warm-up
    # (imageexp's, which stored "warmup", already used the scaled init). The defaults of the
    # later size (64), hidden (1024), lr_drop_at (0: none) and lr_drop are how the runs before
    # them trained.
    LEGACY = {"warmup": 0, "init": "torch"}

    @classmethod
    def from_dict(cls, d: dict) -> "ImagesConfig":
        if "warmup" in d and "init" not in d:
            d = {**d, "init": "scaled"}
        return super().from_dict(d)

    def validate(self) -> "ImagesConfig":
        super().validate()
        if self.crop is not None and self.data is None:
            raise UsageError("--crop applies to an image folder (--data) only")
        if self.skip_unreadable and self.data is None:
            raise UsageError("--skip-unreadable applies to an image folder (--data) only")
        if self.init not in CONV_INITS:
            raise UsageError(f"init: expected one of {CONV_INITS}, got {self.init!r}")
        if self.size < 16 or self.size % 16:
            raise UsageError(f"--size: expected a multiple of 16 (the network halves it four times), got {self.size}")
        if not 0 < self.lr_drop <= 1:
            raise UsageError(f"--lr-drop: expected a factor in (0, 1], got {self.lr_drop:g}")
        return self


class ImagesExperiment(RealExperiment):
    name = "images"
    order = 2
    help = "§4.2: the conv VAE (GDN/IGDN) with D = 1 - SSIM on photographs"
    description = (
        "Train the App. D.2 conv VAE on images (64x64 by default) with D = 1 - SSIM for "
        "an exact number of Adam steps, analyse it on held-out images, and write "
        "results.json, report.md, the per-dim plot and a traversal grid. The defaults "
        "are the paper's protocol (a GPU job); --preset cpu shows the finding on a CPU."
    )
    config_cls = ImagesConfig
    presets = {
        "quick": (QUICK_HELP, QUICK),
        "cpu": (CPU_HELP, CPU),
        "cpu64": (CPU64_HELP, CPU64),
        "f2": (F2_HELP, F2),
        "f2-cpu": (F2_CPU_HELP, F2_CPU),
    }
    loss_name = "1 - SSIM"
    paper = {
        "conventional": "norm means of dims 1-26 average 1.83 (SD 0.13), the last dims inactive",
        "decomposed": "all 32 dims active, norm means average 0.92 (SD 0.04)",
    }

    def paper_for(self, cfg: ImagesConfig) -> dict:
        """App. F.2's results for its configuration (latent, FC width, lambda), else App. D.2's."""
        f2 = (cfg.latent, cfg.hidden, cfg.lam) == (F2["latent"], F2["hidden"], F2["lam"])
        return PAPER_F2 if f2 else self.paper

    def load_x(self, cfg: ImagesConfig):
        from ..data.images import load_image_folder

        rep: dict = {}
        x = load_image_folder(cfg.data, size=cfg.size, crop=cfg.crop, skip_unreadable=cfg.skip_unreadable, report=rep)
        return x, (
            f"image folder {cfg.data} ({x.shape[0]} images, {rep['skipped']} unreadable skipped, "
            f"centre crop {cfg.crop or 'shorter side'} -> {cfg.size}x{cfg.size})"
        )

    def load_data(self, cfg: ImagesConfig, progress: bool) -> RealData:
        """An image folder: split into train / held out. By default: a stream of fresh random
        crops of scikit-image's photographs (an "epoch", i.e. a checkpoint, every <= 500 steps)
        and ``HELD_OUT_CROPS`` fixed crops from an independent seed as the held-out set. Under
        torchrun each rank draws its own crops (the stream is told its rank)."""
        if cfg.data is not None:
            return super().load_data(cfg, progress)
        from ..data.images import RandomCrops

        # joins the process group under torchrun (train() would, later): the rank is known here
        rank, _ = init_distributed()
        with status("loading the images data", progress):
            stream = RandomCrops(size=cfg.size, seed=cfg.seed, rank=rank)
            stream.epoch_size = cfg.batch_size * min(cfg.iterations, STREAM_EPOCH_STEPS)
            test = stream.fixed(HELD_OUT_CROPS, seed=cfg.seed + 10_000)
        source = (
            f"scikit-image photographs ({len(stream.photos)}), {cfg.size}x{cfg.size} random crops "
            "drawn afresh "
            f"each step (side 1/8 to 1 of the shorter side, flips); {HELD_OUT_CROPS} fixed "
            "held-out crops"
        )
        return RealData(stream, test, source, progress)

    def new_model(self, cfg: ImagesConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return ConvVAE(latent=cfg.latent, image_size=cfg.size, hidden=cfg.hidden, init=cfg.init)

    def train_config(self, cfg: ImagesConfig) -> TrainConfig:
        return replace(super().train_config(cfg), lr_drop_at=cfg.lr_drop_at, lr_drop=cfg.lr_drop)

    def metric(self, cfg):
        return metrics.SSIM()


EXPERIMENT = ImagesExperiment()
