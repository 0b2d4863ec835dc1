"""VAE models of the paper.

``ToyVAE`` is the fully connected VAE of App. D.1: encoder FC(16,128,tanh) - FC(128,64,tanh) -
FC(64,3) x 2 (mu and log sigma^2), decoder FC(3,64,tanh) - FC(64,128,tanh) - FC(128,16).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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


class ToyVAE(nn.Module):
    """The App. D.1 VAE (widths configurable). ``encode`` returns (mu, log sigma^2)."""

    def __init__(self, in_dim: int = 16, latent: int = 3, enc_hidden: tuple[int, ...] = (128, 64),
                 dec_hidden: tuple[int, ...] = (64, 128), activation: str = "tanh"):
        super().__init__()
        self.config = {"in_dim": in_dim, "latent": latent, "enc_hidden": list(enc_hidden),
                       "dec_hidden": list(dec_hidden), "activation": activation}
        self.encoder = Encoder(in_dim, tuple(enc_hidden), latent, activation)
        self.decoder = mlp([latent, *dec_hidden, in_dim], activation)

    @property
    def latent(self) -> int:
        return self.config["latent"]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_hat, mu, logvar, z) with z = mu + sigma * noise (noise ~ N(0, I) unless given)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mu, logvar, z


def build_model(config: dict) -> ToyVAE:
    """Rebuild a model from its ``config`` dict (as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", "toy")
    if kind != "toy":
        raise ValueError(f"model kind: expected 'toy', got {kind!r}")
    return ToyVAE(**cfg)
