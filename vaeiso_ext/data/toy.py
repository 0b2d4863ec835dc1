"""The toy data of §4.1 and App. E.2: x = s1 v1 + s2 v2 + s3 v3 in R^16 with known density.

Each source s_i has a closed-form pdf, an inverse-CDF sampler and a closed-form differential
entropy; (v1, v2, v3) are orthonormal columns drawn from a seeded QR. The density of x on the
3-dimensional subspace is p(s1) p(s2) p(s3) with s = V^T x (the paper's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

SQRT3 = math.sqrt(3.0)


class Component:
    """A 1-D source distribution: pdf, log-pdf, inverse-CDF sampler, variance, entropy (nats)."""

    support: tuple[float, float] = (-math.inf, math.inf)

    def log_pdf(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def pdf(self, s: Tensor) -> Tensor:
        return self.log_pdf(s).exp()

    def cdf(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def icdf(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.icdf(u)

    variance: float
    entropy: float

    def _outside(self, s: Tensor) -> Tensor:
        lo, hi = self.support
        return (s < lo) | (s > hi)


class Triangular(Component):
    """p(s) = (w - |s|) / w**2 on [-w, w] (the paper's s1 of Mix: w = 1)."""

    def __init__(self, half_width: float = 1.0):
        self.w = float(half_width)
        self.support = (-self.w, self.w)
        self.variance = self.w**2 / 6.0
        self.entropy = 0.5 + math.log(self.w)

    def log_pdf(self, s: Tensor) -> Tensor:
        val = torch.log((self.w - s.abs()).clamp_min(0.0)) - 2.0 * math.log(self.w)
        return val.masked_fill(self._outside(s), -math.inf)

    def cdf(self, s: Tensor) -> Tensor:
        t = s.clamp(-self.w, self.w)
        lo = (t + self.w) ** 2 / (2 * self.w**2)
        return torch.where(t < 0, lo, 1.0 - (self.w - t) ** 2 / (2 * self.w**2))

    def icdf(self, u: Tensor) -> Tensor:
        lower = -self.w + self.w * torch.sqrt(2.0 * u)
        upper = self.w - self.w * torch.sqrt(2.0 * (1.0 - u))
        return torch.where(u < 0.5, lower, upper)

    def __repr__(self):
        return f"Triangular(half_width={self.w:g})"


class Uniform(Component):
    """Uniform on [-w, w] (s2 of Mix: w = sqrt 2)."""

    def __init__(self, half_width: float):
        self.w = float(half_width)
        self.support = (-self.w, self.w)
        self.variance = self.w**2 / 3.0
        self.entropy = math.log(2.0 * self.w)

    def log_pdf(self, s: Tensor) -> Tensor:
        return torch.full_like(s, -math.log(2.0 * self.w)).masked_fill(self._outside(s), -math.inf)

    def cdf(self, s: Tensor) -> Tensor:
        return ((s + self.w) / (2 * self.w)).clamp(0.0, 1.0)

    def icdf(self, u: Tensor) -> Tensor:
        return -self.w + 2.0 * self.w * u

    def __repr__(self):
        return f"Uniform(half_width={self.w:g})"


class DecreasingRamp(Component):
    """p(s) = 2 (b - s) / (b - a)**2 on [a, b] (s3 of Mix and all of Ramp; mean 0 when b = -2a)."""

    def __init__(self, a: float, b: float):
        self.a, self.b = float(a), float(b)
        self.support = (self.a, self.b)
        width = self.b - self.a
        self.width = width
        self.variance = width**2 / 18.0
        self.entropy = 0.5 + math.log(width / 2.0)

    def log_pdf(self, s: Tensor) -> Tensor:
        val = math.log(2.0) + torch.log((self.b - s).clamp_min(0.0)) - 2.0 * math.log(self.width)
        return val.masked_fill(self._outside(s), -math.inf)

    def cdf(self, s: Tensor) -> Tensor:
        t = s.clamp(self.a, self.b)
        return 1.0 - (self.b - t) ** 2 / self.width**2

    def icdf(self, u: Tensor) -> Tensor:
        # F(s) = 1 - (b - s)**2 / (b - a)**2
        return self.b - self.width * torch.sqrt(1.0 - u)

    def __repr__(self):
        return f"DecreasingRamp(a={self.a:.4f}, b={self.b:.4f})"


class Gaussian(Component):
    """N(0, variance)."""

    def __init__(self, variance: float):
        self.variance = float(variance)
        self.entropy = 0.5 * math.log(2.0 * math.pi * math.e * self.variance)

    def log_pdf(self, s: Tensor) -> Tensor:
        return -0.5 * s * s / self.variance - 0.5 * math.log(2.0 * math.pi * self.variance)

    def cdf(self, s: Tensor) -> Tensor:
        return 0.5 * (1.0 + torch.erf(s / math.sqrt(2.0 * self.variance)))

    def icdf(self, u: Tensor) -> Tensor:
        return math.sqrt(self.variance) * math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return math.sqrt(self.variance) * torch.randn(n, generator=generator, dtype=torch.float64)

    def __repr__(self):
        return f"Gaussian(variance={self.variance:g})"


def toy_components(name: str) -> list[Component]:
    """The three sources of dataset ``name`` ("mix", "ramp" or "norm"); variances 1/6, 2/3, 8/3."""
    name = name.lower()
    if name == "mix":
        return [Triangular(1.0), Uniform(math.sqrt(2.0)), DecreasingRamp(-4 * SQRT3 / 3, 8 * SQRT3 / 3)]
    if name == "ramp":
        return [DecreasingRamp(a, -2 * a) for a in (-SQRT3 / 3, -2 * SQRT3 / 3, -4 * SQRT3 / 3)]
    if name == "norm":
        return [Gaussian(v) for v in (1 / 6, 2 / 3, 8 / 3)]
    raise ValueError(f"dataset: expected one of {TOY_DATASETS}, got {name!r}")


TOY_DATASETS = ("mix", "ramp", "norm")


@dataclass
class ToyData:
    """A toy dataset: float32 samples for training, float64 sources and exact log-densities.

    ``x_train``/``x_test`` are (N, dim) float32; ``s_*`` the (N, 3) float64 sources;
    ``logp_*`` the exact log p(x) = sum_i log p_i(s_i) (the paper's p(x), on the 3-D subspace);
    ``basis`` the (dim, 3) float64 orthonormal (v1, v2, v3).
    """

    name: str
    components: list[Component]
    basis: Tensor
    x_train: Tensor
    s_train: Tensor
    logp_train: Tensor
    x_test: Tensor
    s_test: Tensor
    logp_test: Tensor
    seed: int
    config: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    @property
    def variances(self) -> list[float]:
        return [c.variance for c in self.components]

    @property
    def entropy(self) -> float:
        """Differential entropy H(s) in nats (closed form, sum over the independent sources)."""
        return sum(c.entropy for c in self.components)

    def sources(self, x: Tensor) -> Tensor:
        """s = V^T x in float64."""
        return x.to(torch.float64) @ self.basis.to(x.device)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) = sum_i log p_i(s_i) with s = V^T x (float64; -inf outside the support)."""
        s = self.sources(x).cpu()
        return log_prob_sources(self.components, s)

    def pdf(self, x: Tensor) -> Tensor:
        return self.log_prob(x).exp()

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n fresh samples: (x float32 (n, dim), s float64 (n, 3))."""
        s = torch.stack([c.sample(n, generator) for c in self.components], dim=1)
        return (s @ self.basis.T).to(torch.float32), s


def log_prob_sources(components: list[Component], s: Tensor) -> Tensor:
    return sum(c.log_pdf(s[:, i]) for i, c in enumerate(components))


def random_basis(dim: int, k: int, generator: torch.Generator) -> Tensor:
    """k orthonormal columns in R^dim (QR of a Gaussian matrix, signs fixed so R's diagonal > 0)."""
    a = torch.randn(dim, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def make_toy(
    name: str = "mix", n_train: int = 50_000, n_test: int = 10_000, *, dim: int = 16, seed: int = 0
) -> ToyData:
    """Build the toy dataset ``name`` deterministically from ``seed``.

    The training set is 50,000 samples as in the paper; the held-out set (``n_test``) is drawn
    from the same generator afterwards and is what the analysis uses.
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"n_train must be >= 1 and n_test >= 0, got {n_train}, {n_test}")
    if dim < 3:
        raise ValueError(f"dim: expected >= 3 (three sources), got {dim}")
    comps = toy_components(name)
    g = torch.Generator().manual_seed(int(seed))
    basis = random_basis(dim, 3, g)
    data = ToyData(
        name.lower(),
        comps,
        basis,
        *([None] * 6),
        seed=int(seed),
        config={"dataset": name.lower(), "n_train": n_train, "n_test": n_test, "dim": dim, "data_seed": int(seed)},
    )
    data.x_train, data.s_train = data.sample(n_train, g)
    data.x_test, data.s_test = data.sample(n_test, g)
    data.logp_train = log_prob_sources(comps, data.s_train)
    data.logp_test = log_prob_sources(comps, data.s_test)
    return data
