"""The paper's distance metrics as objects that training and analysis take.

A metric is a distance ``D(x, y)`` with ``D(x, x) = 0`` whose expansion
``D(x, x + d) = d^T G_x d + O(|d|^3)`` defines the metric tensor ``G_x`` (docs/ops.md).
Every metric has

- ``distance(x, y) -> (N,)``: ``D(x[n], y[n])``, differentiable (the training loss);
- ``pairs(base, others) -> (N, K)``: ``D(base[n], others[n, k])``, fused (the finite-difference
  ``D'_j`` kernel: the base is read once for all K);
- ``gram(x, v, diagonal=False) -> (N, K, K)`` (or ``(N, K)``): ``v[n, j]^T G_{x[n]} v[n, k]``,
  the exact limit used by ``dj_prime(method="jvp")`` and ``isometry_gram``.

The square-error family (:class:`SSE`, :class:`DownwardConvex`, :class:`UpwardConvex`) has
``G_x = a_x I`` and also ``scale(x) -> (N,)`` giving ``a_x`` (``isotropic`` is True): only these
have the scalar metric tensor the Eq. 22-23 density estimates need. ``check(where, name, t)``
refuses a tensor the metric cannot take (BCE: values outside [0, 1]; SSIM: not 4-D images).
:func:`as_metric` is how every function taking a metric reads its argument (an object or a name).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import ops

__all__ = ["Metric", "SSE", "DownwardConvex", "UpwardConvex", "BCE", "SSIM", "by_name", "as_metric", "METRIC_NAMES"]


def _flat(v: Tensor, lead: int) -> Tensor:
    """v with its first ``lead`` dims kept and the rest flattened into one (empty tensors too)."""
    return v.reshape(tuple(v.shape[:lead]) + (math.prod(v.shape[lead:]),))


def _check_pair(name: str, x: Tensor, y: Tensor) -> None:
    if x.dim() < 1 or x.shape != y.shape:
        raise ValueError(f"{name}.distance: y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")


def _check_dirs(name: str, x: Tensor, v: Tensor) -> None:
    if x.dim() < 1 or v.dim() != x.dim() + 1 or v.shape[0] != x.shape[0] or v.shape[2:] != x.shape[1:]:
        raise ValueError(
            f"{name}.gram: v: expected shape (N, K, *x.shape[1:]) for x of shape {tuple(x.shape)}, got {tuple(v.shape)}"
        )


def _gram(u: Tensor, diagonal: bool) -> Tensor:
    """Plain inner products of the K flattened directions per sample: (N, K, K) or (N, K)."""
    if diagonal:
        return (u * u).sum(-1)
    return torch.matmul(u, u.transpose(-1, -2))


class Metric:
    """Base class; see the module docstring for the interface."""

    name: str = ""
    isotropic: bool = False

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """``D(x[n], y[n])`` per sample, ``(N,)``; x is the reference (the base)."""
        _check_pair(type(self).__name__, x, y)
        return self.pairs(x, y.unsqueeze(1))[:, 0]

    def pairs(self, base: Tensor, others: Tensor) -> Tensor:
        """``D(base[n], others[n, k])``, ``(N, K)``."""
        raise NotImplementedError

    def gram(self, x: Tensor, v: Tensor, diagonal: bool = False) -> Tensor:
        """``v[n, j]^T G_{x[n]} v[n, k]``: ``(N, K, K)``, or ``(N, K)`` when ``diagonal``."""
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.distance(x, y)

    def check(self, where: str, name: str, t: Tensor) -> None:
        """ValueError naming ``where`` and ``name`` unless ``t`` is a valid input of this metric
        (here: any floating-point tensor with a batch dim)."""
        if not t.is_floating_point() or t.dim() < 1:
            raise ValueError(
                f"{where}: {name}: expected a floating-point tensor with a batch dim for "
                f"the {self.name} metric, got {t.dtype} of shape {tuple(t.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SSE(Metric):
    """Square error ``sum (x - y)**2`` over all non-batch dims (``G_x = I``)."""

    name = "sse"
    isotropic = True

    def scale(self, x: Tensor) -> Tensor:
        """``a_x`` of ``G_x = a_x I``, ``(N,)``: computed from the base."""
        return x.new_ones(x.shape[:1])

    def pairs(self, base: Tensor, others: Tensor) -> Tensor:
        # one fused call; the convex metrics below are the op's own "downward" / "upward", whose
        # factor a_x (the formula of their scale()) the kernel computes from base
        return ops.pair_distances(base, others, self.name)

    def gram(self, x: Tensor, v: Tensor, diagonal: bool = False) -> Tensor:
        _check_dirs(type(self).__name__, x, v)
        g = _gram(_flat(v, 2), diagonal)
        a = self.scale(x)
        return g * (a[:, None] if diagonal else a[:, None, None])


def _sq_norm(x: Tensor) -> Tensor:
    return (_flat(x, 1) ** 2).sum(-1)


class DownwardConvex(SSE):
    """``a_x ||x - y||^2`` with ``a_x = 2/3 + 2 ||x||^2 / 21`` (the paper's protocol, App. D; ``G_x = a_x I``)."""

    name = "downward"

    def scale(self, x: Tensor) -> Tensor:
        return 2.0 / 3.0 + 2.0 * _sq_norm(x) / 21.0


class UpwardConvex(DownwardConvex):
    """``||x - y||^2 / a_x`` with the ``a_x`` of :class:`DownwardConvex` (``G_x = I / a_x``)."""

    name = "upward"

    def scale(self, x: Tensor) -> Tensor:
        return 1.0 / super().scale(x)


class BCE(Metric):
    """Bernoulli KL ``sum x log(x/y) + (1-x) log((1-x)/(1-y))``: BCE minus the target's entropy.

    Zero at ``y = x``; ``G_x = diag(1 / (2 x (1 - x)))`` (Eq. 72). Targets ``x`` in ``[0, 1]``
    (exact 0s and 1s allowed: xlogy convention), predictions ``y`` in ``(0, 1)``. In ``gram``
    a component where the direction is exactly 0 contributes 0 even where ``x`` is 0 or 1 (a
    saturated sigmoid has zero derivative there); elsewhere ``x`` in ``{0, 1}`` gives ``inf``.
    """

    name = "bce"

    def check(self, where: str, name: str, t: Tensor) -> None:
        """Also: every value in [0, 1] (a probability; outside it the Bernoulli KL is NaN)."""
        super().check(where, name, t)
        if t.numel() and not torch.compiler.is_compiling():
            lo, hi = float(t.detach().min()), float(t.detach().max())
            if not (0.0 <= lo and hi <= 1.0):  # NaN fails too
                raise ValueError(
                    f"{where}: {name}: the BCE metric takes probabilities in [0, 1], got values in [{lo:g}, {hi:g}]"
                )

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair("BCE", x, y)
        self.check("BCE.distance", "x", x)
        self.check("BCE.distance", "y", y)
        return ops.pair_distances(x, y.unsqueeze(1), "bce")[:, 0]

    def pairs(self, base: Tensor, others: Tensor) -> Tensor:
        self.check("BCE.pairs", "base", base)
        self.check("BCE.pairs", "others", others)
        return ops.pair_distances(base, others, "bce")

    def gram(self, x: Tensor, v: Tensor, diagonal: bool = False) -> Tensor:
        _check_dirs("BCE", x, v)
        self.check("BCE.gram", "x", x)
        vf, xf = _flat(v, 2), _flat(x, 1).unsqueeze(1)
        u = torch.where(vf == 0, torch.zeros_like(vf), vf * torch.rsqrt(2 * xf * (1 - xf)))
        return _gram(u, diagonal)


class SSIM(Metric):
    """``1 - SSIM(x, y)`` on ``(N, C, H, W)`` images; ``ssim_kwargs`` go to the SSIM ops.

    ``distance`` is ``ops.one_minus_ssim`` (differentiable, no cancellation near x = y), ``pairs`` is ``ops.ssim_pairs``
    (cancellation-free), ``gram`` is ``ops.ssim_metric_gram`` (the exact windowed metric tensor).
    """

    name = "ssim"

    def __init__(self, **ssim_kwargs):
        self.ssim_kwargs = dict(ssim_kwargs)

    def check(self, where: str, name: str, t: Tensor) -> None:
        """Also: ``(N, C, H, W)`` images."""
        super().check(where, name, t)
        if t.dim() != 4:
            raise ValueError(f"{where}: {name}: the SSIM metric takes (N, C, H, W) images, got shape {tuple(t.shape)}")

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair("SSIM", x, y)
        return ops.one_minus_ssim(x, y, **self.ssim_kwargs)

    def pairs(self, base: Tensor, others: Tensor) -> Tensor:
        return ops.ssim_pairs(base, others, **self.ssim_kwargs)

    def gram(self, x: Tensor, v: Tensor, diagonal: bool = False) -> Tensor:
        return ops.ssim_metric_gram(x, v, diagonal=diagonal, **self.ssim_kwargs)

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.ssim_kwargs.items())
        return f"SSIM({kw})"


_BY_NAME = {cls.name: cls for cls in (SSE, DownwardConvex, UpwardConvex, BCE, SSIM)}
METRIC_NAMES = tuple(_BY_NAME)


def by_name(name: str, **kwargs) -> Metric:
    """The metric called ``name`` (one of :data:`METRIC_NAMES`); kwargs go to its constructor."""
    try:
        cls = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"metric: expected one of {METRIC_NAMES}, got {name!r}") from None
    return cls(**kwargs)


def as_metric(where: str, metric, arg: str = "metric") -> Metric:
    """``metric`` as a :class:`Metric`: an object of this module (or a subclass) is returned as
    it is, a name of :data:`METRIC_NAMES` gives that metric with its defaults. Anything else is a
    TypeError (a wrong name a ValueError) naming ``where``, the argument and the accepted names."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric in _BY_NAME:
            return _BY_NAME[metric]()
        raise ValueError(
            f"{where}: {arg}: expected a vaeiso_ext.metrics object or one of the names {METRIC_NAMES}, got {metric!r}"
        )
    if isinstance(metric, type) and issubclass(metric, Metric):
        hint = f" or {metric.name!r}" if metric.name else ""
        raise TypeError(
            f"{where}: {arg}: expected a metric object, got the class {metric.__name__}: pass {metric.__name__}(){hint}"
        )
    raise TypeError(
        f"{where}: {arg}: expected a vaeiso_ext.metrics object (SSE(), BCE(), ...) or one of "
        f"the names {METRIC_NAMES}, got {type(metric).__name__}"
    )
