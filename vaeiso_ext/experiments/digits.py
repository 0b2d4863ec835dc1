"""The digits experiment (App. G): the FC VAE with BCE on 28x28 digits (P = 784 pixels), so
lambda keeps the paper's meaning; beta of the summed BCE is P/lambda. The data: MNIST from the
user's own files (``--data``: the first 50,000 training images train, the test file is held out,
as in App. G), or by default scikit-learn's 8x8 digits upsampled to 28x28 (a seeded 10% held out)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch

from .. import metrics
from ..data.digits import DIGIT_PIXELS
from ..distributed import launch_info
from ..models import DigitsVAE
from .config import UsageError, int_at_least, nonneg_int, opt, positive_float, positive_int
from .real import RealConfig, RealData, RealExperiment


@dataclass
class DigitsConfig(RealConfig):
    """Everything that defines one digits run (stored in the checkpoint and results.json)."""

    data: str | None = opt(
        None,
        "MNIST: a folder holding train-images-idx3-ubyte and "
        "t10k-images-idx3-ubyte (raw or .gz; label files optional), or an "
        ".npz with x_train / x_test (the folder holding it, or the file); "
        "the first 50,000 training images train, the test images are held "
        "out (default: scikit-learn's 8x8 digits upsampled to 28x28)",
        metavar="DIR",
    )
    latent: int = opt(32, "latent dims", type=positive_int, metavar="N")
    lam: float = opt(
        2000.0,
        "lambda (BCE averaged over the 784 pixels; beta = 784/lambda)",
        flag="--lambda",
        type=positive_float,
        metavar="L",
    )
    iterations: int = opt(50_000, "Adam steps (exactly)", type=positive_int, metavar="N")
    batch_size: int = opt(256, "batch size", type=positive_int, metavar="B")
    lr: float = opt(1e-3, "Adam learning rate", type=positive_float)
    seed: int = opt(
        0, "model init, training randomness and (scikit-learn's digits) the train/held-out split", type=nonneg_int
    )
    decomposed: bool = opt(False, "objective lambda (D(x,x_breve) + D(x_breve,x_hat)) + KL")
    n_eval: int | None = opt(
        None,
        "held-out samples analysed (default: all held out, at most 256; scikit-learn's digits hold out 180)",
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
    held_out: float = 0.1  # of scikit-learn's digits (MNIST holds out its test file)
    kl_threshold: float = 0.1
    eps: float = 1e-3
    curve_samples: int = 64  # held-out samples of each step-curve point

    def validate(self) -> "DigitsConfig":
        super().validate()
        if self.data is not None:
            from ..data.mnist import mnist_files

            try:  # before anything is loaded or written: a wrong path is one error line
                mnist_files(self.data)
            except (OSError, ValueError) as e:
                raise UsageError(f"--data: {e}") from None
        return self


class DigitsExperiment(RealExperiment):
    name = "digits"
    order = 3
    help = "App. G: the FC VAE with BCE on 28x28 digits (MNIST files, or scikit-learn's digits)"
    description = (
        "Train the App. G VAE with BCE on MNIST from your own files (--data) or on "
        "scikit-learn's 8x8 digits upsampled to 28x28, for an exact number of Adam "
        "steps, analyse it on held-out digits, and write results.json, report.md, the "
        "per-dim plot and a traversal grid. Nothing is downloaded."
    )
    config_cls = DigitsConfig
    presets = {
        "quick": (
            "400 steps, 128 samples analysed (a smoke run)",
            {"iterations": 400, "batch_size": 256, "n_eval": 128},
        )
    }
    loss_name = "BCE"
    paper = {"conventional": "norms ~1 except where E[sigma^-2] < 10"}
    # BCE next to a decoder output within a denormal of 0 or 1 is infinite in float32 once
    # training flushes denormals to zero (train()): the curve's D'_j then read inf at many points
    # of the Fashion-MNIST runs (docs/digit_results.md). The MLP decodes 64 samples in float64 in
    # a fraction of a second.
    curve_dtype = torch.float64

    def load_x(self, cfg):
        from ..data.digits import load_digits

        x, _ = load_digits()
        return x, "scikit-learn 8x8 digits (1797), /16, bilinear to 28x28 (P = 784)"

    def default_out(self, cfg) -> str:
        return os.path.join(
            "out", "digits-mnist" if cfg.data else "digits", "decomposed" if cfg.decomposed else "conventional"
        )

    def load_data(self, cfg, progress: bool) -> RealData:
        """With ``--data``: MNIST, split as in App. G (the first 50,000 training images train,
        the test file is held out); otherwise scikit-learn's digits, a seeded 10% held out."""
        if cfg.data is None:
            return super().load_data(cfg, progress)
        from ..data.mnist import load_mnist

        t0 = time.perf_counter()
        m = load_mnist(cfg.data)  # read before any status line: a bad file is one error line
        if progress and launch_info()[0] == 0:
            print(
                f"loaded MNIST: {m.train.shape[0]:,} training and {m.test.shape[0]:,} held-out images "
                f"... {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        return RealData(m.train, m.test, m.source, progress)

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
