"""Digits for the App. G VAE: scikit-learn's bundled 8x8 digits (MNIST is not shipped).

The 8x8 images (values 0..16) are scaled to [0, 1] and upsampled bilinearly to 28x28, so the
App. G network (784 inputs) is used unchanged and lambda keeps the paper's meaning: the BCE is
averaged over P = 784 pixels and beta relative to the summed BCE is P / lambda. Exact 0s remain
(bilinear interpolation of zeros); exact 1s become rarer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DIGIT_SIDE = 28
DIGIT_PIXELS = DIGIT_SIDE * DIGIT_SIDE


def load_digits(side: int = DIGIT_SIDE) -> tuple[Tensor, Tensor]:
    """(images ``(N, side*side)`` float32 in [0, 1], labels ``(N,)``); N = 1797."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError as e:
        raise ImportError("the digits data needs scikit-learn: pip install scikit-learn") from e
    d = sk_load()
    x = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    if side != 8:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=True)
    return x.clamp_(0.0, 1.0).flatten(1), torch.as_tensor(d.target)
