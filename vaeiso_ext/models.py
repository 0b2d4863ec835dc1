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

    def __init__(
        self,
        in_dim: int = 16,
        latent: int = 3,
        enc_hidden: tuple[int, ...] = (128, 64),
        dec_hidden: tuple[int, ...] = (64, 128),
        activation: str = "tanh",
    ):
        super().__init__()
        self.config = {
            "in_dim": in_dim,
            "latent": latent,
            "enc_hidden": list(enc_hidden),
            "dec_hidden": list(dec_hidden),
            "activation": activation,
        }
        self.encoder = Encoder(in_dim, tuple(enc_hidden), latent, activation)
        self.decoder = mlp([latent, *dec_hidden, in_dim], activation)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)  # the Encoder module has the two heads itself


# ------------------------------------------------------------------ real-data VAEs (§4.2, App. G)


class ConvVAE(_VAE):
    """App. D.2: RGB images of side ``image_size`` (the paper's 64; any multiple of 16).

    Encoder Conv(9x9, s2, 64, GDN) - 3 x Conv(5x5, s2, 64, GDN) - FC(64 s^2, 1024, softplus) -
    FC(1024, latent) x 2; decoder FC(latent, 1024, softplus) - FC(1024, 64 s^2, softplus) -
    reshape (64, s, s) - 3 x ConvT(5x5, s2, 64, IGDN) - ConvT(9x9, s2, 3, IGDN), with
    s = image_size / 16 (4 at 64x64). ``config`` stores ``image_size``, so checkpoints rebuild it.
    """

    def __init__(
        self, latent: int = 32, channels: int = 64, image_size: int = 64, hidden: int = 1024, init: str = "scaled"
    ):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four stride-2 layers), got {image_size}")
        if init not in CONV_INITS:
            raise ValueError(f"ConvVAE: init: expected one of {CONV_INITS}, got {init!r}")
        self.config = {
            "kind": "conv",
            "latent": latent,
            "channels": channels,
            "image_size": image_size,
            "hidden": hidden,
            "init": init,
        }
        c, s = channels, image_size // 16
        flat = c * s * s
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 9, stride=2, padding=4),
            GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2),
            GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2),
            GDN(c),
            nn.Conv2d(c, c, 5, stride=2, padding=2),
            GDN(c),
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.Softplus(),
        )
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.Softplus(),
            nn.Linear(hidden, flat),
            nn.Softplus(),
            nn.Unflatten(1, (c, s, s)),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1),
            IGDN(c),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1),
            IGDN(c),
            nn.ConvTranspose2d(c, c, 5, stride=2, padding=2, output_padding=1),
            IGDN(c),
            nn.ConvTranspose2d(c, 3, 9, stride=2, padding=4, output_padding=1),
            IGDN(3),
        )
        if init == "scaled":
            scaled_init_(self)


# ConvVAE initialisations: "scaled" (ours, the default) or "torch" (PyTorch's layer defaults).
CONV_INITS = ("scaled", "torch")

# Mean and standard deviation of softplus(u), u ~ N(0, 1): what a layer after a softplus receives.
_SOFTPLUS_MEAN, _SOFTPLUS_STD = 0.805, 0.52
# Pixel spread of natural photographs in [0, 1] (scikit-image's: 0.27; CelebA's is similar).
_PIXEL_STD = 0.25
# Initial posterior: sigma(x) = exp(_LOGVAR_INIT / 2) (0.1), so z ~ mu(x) carries x from the
# first step, and mu(x) with spread _MU_STD across images (the prior's).
_LOGVAR_INIT, _MU_STD = -4.6, 1.0
# The encoder passes ~1/3 of an image's variation to its last hidden layer (measured at init).
_MU_SPREAD_LOSS = 3.0
# Latent draws that calibrate the decoder's layers at init (LSUV-style).
_CALIBRATION_BATCH = 64


def _fan_in(layer: nn.Module) -> float:
    """Inputs that reach one output unit: a stride-s transposed conv spreads each input over
    k*k outputs, so an output sees in * k*k / s**2 of them (PyTorch's default counts k*k)."""
    w = layer.weight
    if isinstance(layer, nn.ConvTranspose2d):
        return w.shape[0] * w.shape[2] * w.shape[3] / (layer.stride[0] * layer.stride[1])
    return w[0].numel()


def _normal_(layer: nn.Module, std_in: float, std_out: float, mean_in: float = 0.0) -> None:
    """Weights N(0, (std_out / std_in)**2 / fan_in), so an input of spread std_in gives an
    output of spread std_out; the bias cancels the offset an input of mean mean_in adds."""
    with torch.no_grad():
        layer.weight.normal_(0.0, std_out / (std_in * _fan_in(layer) ** 0.5))
        layer.bias.copy_(
            -mean_in * layer.weight.flatten(1).sum(1) if isinstance(layer, nn.Linear) else torch.zeros_like(layer.bias)
        )


@torch.no_grad()
def _calibrate_(layers: nn.Sequential, h: Tensor, targets: dict[int, tuple[float, float]]) -> None:
    """LSUV-style: run ``h`` through ``layers``; each layer ``i`` in ``targets`` gets its weight
    rescaled and its bias shifted (per output unit) so its output has spread and mean
    ``targets[i]`` over the batch, before the next layer sees it."""
    for i, layer in enumerate(layers):
        if i in targets:
            std, mean = targets[i]
            out = layer(h)
            dims = [0] + list(range(2, out.dim()))
            layer.weight.mul_(std / out.std().clamp_min(1e-12))
            out = layer(h)
            layer.bias.add_(mean - out.mean(dims))
        h = layer(h)


def scaled_init_(model: "ConvVAE") -> None:
    """Initialise so that variations of x reach mu, and variations of z reach the image, at unit
    gain (docs/image_results.md, "What we changed and why").

    PyTorch's defaults shrink a signal's spread by ~2 per conv and ~4 per stride-2 transposed
    conv (their fan-in overcounts by s**2 = 4): at init the decoder's output moves by 0.002 when
    z moves by 1, mu(x) by 0.003 across images, and Adam at 1e-3 collapses the posterior onto
    the prior before the decoder learns to use z. Here the encoder's layers keep the spread of
    their input (the first conv lifts the pixel spread to 1; biases after a softplus cancel its
    mean), mu(x) starts with spread ~1 across images and sigma(x) = 0.1, so z carries the image
    from the first step (with the lr warm-up of the image runs; without it Adam's first steps
    undo any init within ~25 steps). The decoder is calibrated on latents
    drawn from the prior: every hidden layer's output gets spread 1 and mean 0 (IGDN acts near
    identity there and would blow larger spreads up), the output spread _PIXEL_STD around 0.5,
    the middle of the [0, 1] image range. Uses the global torch RNG (seed it for a fixed init).
    """
    enc = [m for m in model.encoder if isinstance(m, (nn.Conv2d, nn.Linear))]
    _normal_(enc[0], _PIXEL_STD, 1.0)
    for layer in enc[1:]:
        _normal_(layer, 1.0, 1.0)
    _normal_(model.mu, _SOFTPLUS_STD / _MU_SPREAD_LOSS, _MU_STD, mean_in=_SOFTPLUS_MEAN)
    _normal_(model.logvar, _SOFTPLUS_STD, 0.1, mean_in=_SOFTPLUS_MEAN)
    with torch.no_grad():
        model.logvar.bias.add_(_LOGVAR_INIT)
    layers = list(model.decoder)
    idx = [i for i, m in enumerate(layers) if isinstance(m, (nn.ConvTranspose2d, nn.Linear))]
    for i in idx:
        layers[i].reset_parameters()
    targets = {i: (1.0, 0.0) for i in idx[:-1]}
    targets[idx[-1]] = (_PIXEL_STD, 0.5)
    z = torch.randn(_CALIBRATION_BATCH, model.latent)
    _calibrate_(model.decoder, z, targets)


class DigitsVAE(_VAE):
    """App. G: FC(P, 1024, relu) - FC(1024, 1024, relu) - FC(1024, latent) x 2; decoder
    FC(latent, 1024, relu) - FC(1024, 1024, relu) - FC(1024, P, sigmoid)."""

    def __init__(self, latent: int = 32, pixels: int = 784, hidden: int = 1024):
        super().__init__()
        self.config = {"kind": "digits", "latent": latent, "pixels": pixels, "hidden": hidden}
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, pixels),
            nn.Sigmoid(),
        )


MODEL_KINDS = {"toy": ToyVAE, "conv": ConvVAE, "digits": DigitsVAE}


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` dict (as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", "toy")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {sorted(MODEL_KINDS)}, got {kind!r}")
    return MODEL_KINDS[kind](**cfg)
