"""The image experiment (§4.2, App. D.2, F): the conv VAE with GDN/IGDN trained with
D = 1 - SSIM on 64x64 photographs; per-latent norms like Figs. 4-5 and a Fig. 6-like traversal.

To add an option: add a field to :class:`ImagesConfig` with :func:`~.base.opt` (it becomes
``--field-name``, part of the run description, and is compared on ``--resume``); to add a
preset, an entry of ``ImagesExperiment.presets`` (``--preset NAME``)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import metrics
from ..models import ConvVAE
from .base import UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int
from .real import RealConfig, RealExperiment

import torch


@dataclass
class ImagesConfig(RealConfig):
    """Everything that defines one images run (stored in the checkpoint and results.json)."""

    data: str | None = opt(None, "a folder of images (default: scikit-image's photographs, cut "
                                 "into 64x64 crops)", metavar="DIR")
    crop: int | None = opt(None, "with --data: side of the centred square cut before resizing "
                                 "to 64 (default the shorter side)", type=positive_int, metavar="SIDE")
    latent: int = opt(32, "latent dims", type=positive_int, metavar="N")
    lam: float = opt(1000.0, "lambda = 1/beta (D = 1 - SSIM)", flag="--lambda", type=positive_float,
                     metavar="L")
    iterations: int = opt(300_000, "Adam steps (exactly)", type=positive_int, metavar="N")
    batch_size: int = opt(64, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    seed: int = opt(0, "model init, training randomness and the train/held-out split", type=nonneg_int)
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL "
                                  "(the paper's decomposed loss)")
    n_eval: int = opt(256, "held-out samples analysed", type=int_at_least(2), metavar="N")
    held_out: float = 0.1
    kl_threshold: float = 0.1
    eps: float = 1e-3

    def validate(self) -> "ImagesConfig":
        super().validate()
        if self.crop is not None and self.data is None:
            raise UsageError("--crop applies to an image folder (--data) only")
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
                         {"iterations": 100, "batch_size": 32, "n_eval": 32})}
    loss_name = "1 - SSIM"
    paper = {"conventional": "norm means of dims 1-26 average 1.83 (SD 0.13), the last dims inactive",
             "decomposed": "all 32 dims active, norm means average 0.92 (SD 0.04)"}

    def load_x(self, cfg: ImagesConfig):
        from ..data.images import load_image_folder, skimage_crops

        if cfg.data is not None:
            x = load_image_folder(cfg.data, size=64, crop=cfg.crop)
            return x, (f"image folder {cfg.data} ({x.shape[0]} images, centre crop "
                       f"{cfg.crop or 'shorter side'} -> 64x64)")
        x = skimage_crops(64)
        return x, f"scikit-image photographs, {x.shape[0]} 64x64 crops at scales 1, 1/2, 1/4"

    def new_model(self, cfg: ImagesConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return ConvVAE(latent=cfg.latent)

    def metric(self, cfg):
        return metrics.SSIM()


EXPERIMENT = ImagesExperiment()
