"""The image experiment (§4.2, App. D.2, F): the conv VAE with GDN/IGDN trained with
D = 1 - SSIM on 64x64 photographs; per-latent norms like Figs. 4-5 and a Fig. 6-like traversal.

To add an option: add a field to :class:`ImagesConfig` with :func:`~.base.opt` (it becomes
``--field-name``, part of the run description, and is compared on ``--resume``); to add a
preset, an entry of ``ImagesExperiment.presets`` (``--preset NAME``)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import metrics
from ..models import CONV_INITS, ConvVAE
from .base import UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int, status
from .real import RealConfig, RealData, RealExperiment

import torch

# Adam steps of linear lr warm-up (docs/image_results.md: without it Adam at 1e-3 collapses the
# posterior within ~50 steps); held-out crops of the default data; the default data's "epoch"
# (the checkpoint interval) in Adam steps.
WARMUP = 1000
HELD_OUT_CROPS = 512
STREAM_EPOCH_STEPS = 500


@dataclass
class ImagesConfig(RealConfig):
    """Everything that defines one images run (stored in the checkpoint and results.json)."""

    data: str | None = opt(None, "a folder of images, 8- or 16-bit (default: 64x64 crops of "
                                 "scikit-image's photographs drawn afresh each step)", metavar="DIR")
    crop: int | None = opt(None, "with --data: side of the centred square cut before resizing "
                                 "to 64 (default the shorter side)", type=positive_int, metavar="SIDE")
    skip_unreadable: bool = opt(False, "with --data: skip (and count) files that cannot be decoded "
                                       "instead of stopping")
    latent: int = opt(32, "latent dims", type=positive_int, metavar="N")
    lam: float = opt(1000.0, "lambda = 1/beta (D = 1 - SSIM)", flag="--lambda", type=positive_float,
                     metavar="L")
    iterations: int = opt(300_000, "Adam steps (exactly)", type=positive_int, metavar="N")
    batch_size: int = opt(64, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    warmup: int = opt(WARMUP, "Adam steps of linear lr warm-up (0: none; docs/image_results.md)",
                      type=nonneg_int, metavar="N")
    seed: int = opt(0, "model init, training randomness and the train/held-out split", type=nonneg_int)
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL "
                                  "(the paper's decomposed loss)")
    n_eval: int = opt(256, "held-out samples analysed", type=int_at_least(2), metavar="N")
    eval_every: int = opt(0, "step curve: evaluate active dims and the norm mean every N steps "
                             "(curve.json, figures/curve.png; 0: none)", type=nonneg_int, metavar="N")
    held_out: float = 0.1            # of an image folder (the default stream holds out HELD_OUT_CROPS)
    kl_threshold: float = 0.1
    eps: float = 1e-3
    init: str = opt("scaled", "ConvVAE initialisation: scaled (ours, docs/image_results.md) or torch "
                              "(PyTorch's layer defaults, with which the posterior collapses)",
                    choices=CONV_INITS)
    curve_samples: int = 64          # held-out samples of each step-curve point

    # Runs recorded before these fields existed trained with PyTorch's init and no warm-up
    # (imageexp's, which stored "warmup", already used the scaled init).
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
        return self


class ImagesExperiment(RealExperiment):
    name = "images"
    order = 2
    help = "§4.2: the conv VAE (GDN/IGDN) with D = 1 - SSIM on 64x64 photographs"
    description = ("Train the App. D.2 conv VAE on 64x64 images with D = 1 - SSIM for an exact "
                   "number of Adam steps, analyse it on held-out images, and write results.json, "
                   "report.md, the per-dim plot and a traversal grid.")
    config_cls = ImagesConfig
    presets = {"quick": ("100 steps of batch 32, 32 samples analysed (a smoke run)",
                         {"iterations": 100, "batch_size": 32, "n_eval": 32}),
               "cpu": ("the paper's network, lambda, batch and Adam for 5000 steps (about an hour "
                       "on one idle CPU core), 128 samples analysed, step curve every 250 steps",
                       {"iterations": 5000, "n_eval": 128, "eval_every": 250})}
    loss_name = "1 - SSIM"
    paper = {"conventional": "norm means of dims 1-26 average 1.83 (SD 0.13), the last dims inactive",
             "decomposed": "all 32 dims active, norm means average 0.92 (SD 0.04)"}

    def load_x(self, cfg: ImagesConfig):
        from ..data.images import load_image_folder

        rep: dict = {}
        x = load_image_folder(cfg.data, size=64, crop=cfg.crop, skip_unreadable=cfg.skip_unreadable,
                              report=rep)
        return x, (f"image folder {cfg.data} ({x.shape[0]} images, {rep['skipped']} unreadable skipped, "
                   f"centre crop {cfg.crop or 'shorter side'} -> 64x64)")

    def load_data(self, cfg: ImagesConfig, progress: bool) -> RealData:
        """An image folder: split into train / held out. By default: a stream of fresh random
        crops of scikit-image's photographs (an "epoch", i.e. a checkpoint, every <= 500 steps)
        and ``HELD_OUT_CROPS`` fixed crops from an independent seed as the held-out set."""
        if cfg.data is not None:
            return super().load_data(cfg, progress)
        from ..data.images import RandomCrops

        with status("loading the images data", progress):
            stream = RandomCrops(size=64, seed=cfg.seed)
            stream.epoch_size = cfg.batch_size * min(cfg.iterations, STREAM_EPOCH_STEPS)
            test = stream.fixed(HELD_OUT_CROPS, seed=cfg.seed + 10_000)
        source = (f"scikit-image photographs ({len(stream.photos)}), 64x64 random crops drawn afresh "
                  f"each step (side 1/8 to 1 of the shorter side, flips); {HELD_OUT_CROPS} fixed "
                  "held-out crops")
        return RealData(stream, test, source, progress)

    def new_model(self, cfg: ImagesConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return ConvVAE(latent=cfg.latent, init=cfg.init)

    def metric(self, cfg):
        return metrics.SSIM()


EXPERIMENT = ImagesExperiment()
