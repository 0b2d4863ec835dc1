"""The digits experiment (App. G): the FC VAE with BCE on scikit-learn's 8x8 digits upsampled
to 28x28 (P = 784 pixels), so lambda keeps the paper's meaning; beta of the summed BCE is P/lambda."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import metrics
from ..data.digits import DIGIT_PIXELS
from ..models import DigitsVAE
from .base import int_at_least, nonneg_int, opt, positive_float, positive_int
from .real import RealConfig, RealExperiment


@dataclass
class DigitsConfig(RealConfig):
    """Everything that defines one digits run (stored in the checkpoint and results.json)."""

    latent: int = opt(32, "latent dims", type=positive_int, metavar="N")
    lam: float = opt(2000.0, "lambda (BCE averaged over the 784 pixels; beta = 784/lambda)",
                     flag="--lambda", type=positive_float, metavar="L")
    iterations: int = opt(50_000, "Adam steps (exactly)", type=positive_int, metavar="N")
    batch_size: int = opt(256, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    seed: int = opt(0, "model init, training randomness and the train/held-out split", type=nonneg_int)
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL")
    n_eval: int = opt(256, "held-out samples analysed (at most the 180 held out)",
                      type=int_at_least(2), metavar="N")
    eval_every: int = opt(0, "step curve: evaluate active dims and the norm mean every N steps "
                             "(curve.json, figures/curve.png; 0: none)", type=nonneg_int, metavar="N")
    held_out: float = 0.1
    kl_threshold: float = 0.1
    eps: float = 1e-3
    curve_samples: int = 64  # held-out samples of each step-curve point


class DigitsExperiment(RealExperiment):
    name = "digits"
    order = 3
    help = "App. G: the FC VAE with BCE on scikit-learn's digits (28x28)"
    description = ("Train the App. G VAE with BCE on scikit-learn's 8x8 digits upsampled to 28x28 "
                   "for an exact number of Adam steps, analyse it on held-out digits, and write "
                   "results.json, report.md, the per-dim plot and a traversal grid.")
    config_cls = DigitsConfig
    presets = {"quick": ("400 steps, 128 samples analysed (a smoke run)",
                         {"iterations": 400, "batch_size": 256, "n_eval": 128})}
    loss_name = "BCE"
    paper = {"conventional": "norms ~1 except where E[sigma^-2] < 10"}

    def load_x(self, cfg):
        from ..data.digits import load_digits

        x, _ = load_digits()
        return x, "scikit-learn 8x8 digits (1797), /16, bilinear to 28x28 (P = 784)"

    def beta(self, cfg) -> float:
        """The BCE is averaged over P pixels in training and summed in the analysis."""
        return DIGIT_PIXELS / cfg.lam

    def train_lambda(self, cfg) -> float:
        return cfg.lam / DIGIT_PIXELS

    def new_model(self, cfg):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return DigitsVAE(latent=cfg.latent, pixels=DIGIT_PIXELS)

    def metric(self, cfg):
        return metrics.BCE()


EXPERIMENT = DigitsExperiment()
