"""VAE models of the paper.

``ConvVAE`` (App. D.2, images, GDN/IGDN) and ``DigitsVAE`` (App. G) share ``ToyVAE``'s interface.

``ToyVAE`` is the fully connected VAE of App. D.1: encoder FC(16,128,tanh) - FC(128,64,tanh) -
FC(64,3) x 2 (mu and log sigma^2), decoder FC(3,64,tanh) - FC(64,128,tanh) - FC(128,16).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .nn import GDN, IGDN

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus}


def mlp(sizes: list[int], activation: str = "tanh") -> nn.Sequential:
    """FC layers ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` after every layer but the last."""
    act = _ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x -> (mu, log sigma^2): a shared MLP trunk and two linear heads."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent: int, activation: str = "tanh"):
        super().__init__()
        self.trunk = nn.Sequential(mlp([in_dim, *hidden], activation), _ACTIVATIONS[activation]())
        self.mu = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return self.mu(h), self.logvar(h)


class _VAE(nn.Module):
    """Shared interface: ``encode`` -> (mu, log sigma^2), ``decode``, ``forward``."""

    config: dict

    @property
    def latent(self) -> int:
        return self.config["latent"]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_hat, mu, logvar, z) with z = mu + sigma * noise (noise ~ N(0, I) unless given)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mu, logvar, z


class ToyVAE(_VAE):
    """The App. D.1 VAE (widths configurable). ``encode`` returns (mu, log sigma^2)."""

    def __init__(self, in_dim: int = 16, latent: int = 3, enc_hidden: tuple[int, ...] = (128, 64),
                 dec_hidden: tuple[int, ...] = (64, 128), activation: str = "tanh"):
        super().__init__()
        self.config = {"in_dim": in_dim, "latent": latent, "enc_hidden": list(enc_hidden),
                       "dec_hidden": list(dec_hidden), "activation": activation}
        self.encoder = Encoder(in_dim, tuple(enc_hidden), latent, activation)
        self.decoder = mlp([latent, *dec_hidden, in_dim], activation)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)  # the Encoder module has the two heads itself


# ------------------------------------------------------------------ real-data VAEs (§4.2, App. G)


class ConvVAE(_VAE):
    """App. D.2: 64x64 RGB images.

    Encoder Conv(9x9, s2, 64, GDN) - 3 x Conv(5x5, s2, 64, GDN) - FC(1024, 1024, softplus) -
    FC(1024, latent) x 2; decoder FC(latent, 1024, softplus) - FC(1024, 1024, softplus) -
    reshape (64, 4, 4) - 3 x ConvT(5x5, s2, 64, IGDN) - ConvT(9x9, s2, 3, IGDN).
    """

    def __init__(self, latent: int = 32, channels: int = 64, image_size: int = 64, hidden: int = 1024):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four stride-2 layers), got {image_size}")
        self.config = {"kind": "conv", "latent": latent, "channels": channels,
                       "image_size": image_size, "hidden": hidden}
        c, s = channels, image_size // 16
        flat = c * s * s
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 9, stride=2, padding=4), GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2), GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2), GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2), GDN(c),
            nn.Flatten(), nn.Linear(flat, hidden), nn.Softplus(),
        )
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Softplus(), nn.Linear(hidden, flat), nn.Softplus(),
            nn.Unflatten(1, (c, s, s)),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1), IGDN(c),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1), IGDN(c),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1), IGDN(c),
            nn.ConvTranspose2d(c, 3, 9, stride=2, padding=4, output_padding=1), IGDN(3),
        )


class DigitsVAE(_VAE):
    """App. G: FC(P, 1024, relu) - FC(1024, 1024, relu) - FC(1024, latent) x 2; decoder
    FC(latent, 1024, relu) - FC(1024, 1024, relu) - FC(1024, P, sigmoid)."""

    def __init__(self, latent: int = 32, pixels: int = 784, hidden: int = 1024):
        super().__init__()
        self.config = {"kind": "digits", "latent": latent, "pixels": pixels, "hidden": hidden}
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, pixels), nn.Sigmoid())


MODEL_KINDS = {"toy": ToyVAE, "conv": ConvVAE, "digits": DigitsVAE}


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` dict (as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", "toy")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {sorted(MODEL_KINDS)}, got {kind!r}")
    return MODEL_KINDS[kind](**cfg)
