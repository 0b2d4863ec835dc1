"""The analysis's model protocol (docs/analysis.md): what a VAE must provide, said explicitly.

A model is analysed through :class:`VAEAdapter`: an ``encode`` callable returning ``(mu, s)``,
two tensors of the latent's shape, where ``s`` is the posterior's spread in a stated
parametrisation (:data:`POSTERIORS`), and a ``decode`` callable mapping latents of that shape
to outputs the metric takes. The models of :mod:`vaeiso_ext.models` (``encode -> (mu, logvar)``)
are read as such an adapter; any other model must be wrapped: two conventions that both return
two tensors (``(mu, logvar)`` and ``(mu, sigma)``) cannot be told apart, so nothing is guessed.

Everything that can be checked is checked, with a TypeError / ValueError naming the public
function the user called: the encoder's output structure and shapes, ``sigma`` finite and > 0,
the decoder's output shape and its validity for the metric. Latents of any shape ``(N, *L)``
(e.g. a conv VAE's ``(N, C, h, w)``) are analysed over the flattened latent (the paper's n).

While an analysis runs, the adapter's modules are in eval mode (dropout off, batch-norm on its
running statistics) and, if asked, cast to another dtype; afterwards every module's training
flag, every parameter's ``requires_grad``, data and gradient, and every buffer are as they were.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["VAEAdapter", "POSTERIORS", "as_vae"]

# How the encoder's second output s gives the posterior's log-variance
POSTERIORS = {
    "logvar": lambda s: s,  # s = log sigma^2 (vaeiso_ext.models)
    "log_sigma": lambda s: 2.0 * s,  # s = log sigma
    "sigma": lambda s: 2.0 * torch.log(s),  # s = sigma > 0
    "var": lambda s: torch.log(s),  # s = sigma^2 > 0
}
EVAL_NOTE = (
    "the model ran in eval mode (dropout off, batch-norm running statistics); its training "
    "flags, requires_grad and weights were restored afterwards"
)


def _modules_of(fn) -> tuple[nn.Module, ...] | None:
    """The module a callable belongs to: itself, or the object of a bound method; None if neither."""
    if isinstance(fn, nn.Module):
        return (fn,)
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module):
        return (owner,)
    return None


class VAEAdapter:
    """A VAE as the analysis reads it.

    Args:
        encode: ``x (N, *X) -> (mu, s)``, two tensors of the latent's shape ``(N, *L)``.
        decode: ``z (B, *L) -> (B, *X)``, outputs the metric takes (e.g. in [0, 1] for BCE).
        posterior: what ``s`` is: ``"logvar"`` (log sigma^2), ``"log_sigma"``, ``"sigma"`` or
            ``"var"`` (sigma^2).
        modules: the ``nn.Module`` (or modules) whose parameters ``encode`` and ``decode`` use:
            the analysis runs them in eval mode (and casts them for ``dtype``), then restores
            them. By default the modules of bound methods (``model.encode``) or of callables that
            are modules themselves; pass it for other callables (``()`` for a model with no
            module at all).

    Example: a model whose ``forward`` returns ``(x_hat, mu, log_sigma)`` and whose decoder is
    ``model.dec``::

        vae = VAEAdapter(lambda x: model(x)[1:], model.dec, posterior="log_sigma", modules=model)
    """

    def __init__(
        self, encode: Callable, decode: Callable, *, posterior: str, modules: nn.Module | tuple | list | None = None
    ):
        for name, fn in (("encode", encode), ("decode", decode)):
            if not callable(fn):
                raise TypeError(f"VAEAdapter: {name}: expected a callable, got {type(fn).__name__}")
        if not isinstance(posterior, str) or posterior not in POSTERIORS:
            raise ValueError(
                f"VAEAdapter: posterior: expected one of {tuple(POSTERIORS)} (what the "
                f"encoder's second output is), got {posterior!r}"
            )
        if modules is None:
            found = [_modules_of(encode), _modules_of(decode)]
            if any(f is None for f in found):
                which = " and ".join(n for n, f in zip(("encode", "decode"), found) if f is None)
                raise TypeError(
                    f"VAEAdapter: modules: {which} is neither an nn.Module nor a method of "
                    "one; pass modules= (the nn.Module(s) whose parameters it uses, or () "
                    "if none) so that the analysis can run them in eval mode and restore them"
                )
            modules = tuple(dict.fromkeys(found[0] + found[1]))
        elif isinstance(modules, nn.Module):
            modules = (modules,)
        else:
            modules = tuple(modules)
            bad = [type(m).__name__ for m in modules if not isinstance(m, nn.Module)]
            if bad:
                raise TypeError(f"VAEAdapter: modules: expected nn.Modules, got {', '.join(bad)}")
        self.encode, self.decode, self.posterior, self.modules = encode, decode, posterior, modules

    def __repr__(self) -> str:
        return f"VAEAdapter(posterior={self.posterior!r}, modules={[type(m).__name__ for m in self.modules]})"


def as_vae(where: str, model) -> VAEAdapter:
    """``model`` as a :class:`VAEAdapter`: itself, or a model of :mod:`vaeiso_ext.models` read
    with its ``(mu, logvar)`` encoder. Anything else is a TypeError naming ``where`` that says
    how to wrap it."""
    if isinstance(model, VAEAdapter):
        return model
    ours = isinstance(model, nn.Module) and any(c.__module__ == "vaeiso_ext.models" for c in type(model).__mro__)
    if ours and callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return VAEAdapter(model.encode, model.decode, posterior="logvar", modules=model)
    kind = type(model).__name__
    raise TypeError(
        f"{where}: model: expected a vaeiso_ext.analysis.VAEAdapter or a model of "
        f"vaeiso_ext.models, got {kind}: say how it encodes, e.g. VAEAdapter(model.encode, "
        f"model.decode, posterior='logvar'|'log_sigma'|'sigma'|'var') (docs/analysis.md)"
    )


@contextmanager
def running(modules: tuple[nn.Module, ...], dtype: torch.dtype | None = None):
    """``modules`` (an adapter's) in eval mode (and cast to ``dtype`` if given) for the block; every
    training flag, ``requires_grad``, parameter (data and grad, the same tensors) and buffer
    restored afterwards, also after an error."""
    subs = list(dict.fromkeys(m for root in modules for m in root.modules()))
    params = list(dict.fromkeys(p for m in subs for p in m.parameters(recurse=False)))
    flags = [(m, m.training) for m in subs]
    # module.to() swaps .data of a parameter and of its grad in place: keep both tensors
    saved = [(p, p.data, p.grad, None if p.grad is None else p.grad.data, p.requires_grad) for p in params]
    buffers = [(m, k, b) for m in subs for k, b in m._buffers.items()]
    try:
        for root in modules:
            root.eval()  # through train(False), which a module may override
        if dtype is not None:
            for root in modules:
                root.to(dtype)
        yield
    finally:
        for p, data, grad, gdata, rg in saved:
            p.data = data
            if grad is not None:
                grad.data = gdata
            p.grad = grad
            p.requires_grad_(rg)
        for m, k, b in buffers:
            m._buffers[k] = b
        for m, t in flags:
            m.training = t


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


@torch.no_grad()
def encode_all(where: str, vae: VAEAdapter, x: Tensor, chunk: int) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """``(mu, logvar, latent_shape)``: the posterior of every sample of ``x``, flattened to
    ``(N, n)``, after checking what the encoder returned."""
    mus, lvs, lat = [], [], None
    conv = POSTERIORS[vae.posterior]
    for xc in x.split(chunk):
        out = vae.encode(xc)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
            got = (
                f"a {type(out).__name__} of {len(out)}: {', '.join(_shape(t) for t in out)}"
                if isinstance(out, (tuple, list))
                else f"a {type(out).__name__}" + (f" of shape {tuple(out.shape)}" if isinstance(out, Tensor) else "")
            )
            raise TypeError(
                f"{where}: model: expected encode(x) to return (mu, s), two tensors of the "
                f"latent's shape (s: the posterior's {vae.posterior}), got {got}; adapt it, e.g. "
                "VAEAdapter(lambda x: model.encode(x)[1:], ...) for (z, mu, logvar)"
            )
        mu, s = out
        if mu.shape != s.shape or mu.dim() < 2 or mu.shape[0] != xc.shape[0]:
            raise ValueError(
                f"{where}: model: expected encode(x) of {xc.shape[0]} samples to return mu and "
                f"s of one shape ({xc.shape[0]}, *latent), got {_shape(mu)} and {_shape(s)}"
            )
        if not (mu.is_floating_point() and s.is_floating_point()):
            raise TypeError(f"{where}: model: expected floating-point mu and s, got {mu.dtype} and {s.dtype}")
        if lat is None:
            lat = tuple(mu.shape[1:])
        elif tuple(mu.shape[1:]) != lat:
            raise ValueError(
                f"{where}: model: the latent's shape changed between batches: {lat} then {tuple(mu.shape[1:])}"
            )
        mus.append(mu.reshape(mu.shape[0], -1))
        lvs.append(conv(s).reshape(s.shape[0], -1))
    if lat is None:
        raise ValueError(f"{where}: x: expected at least one sample, got shape {tuple(x.shape)}")
    mu, logvar = torch.cat(mus), torch.cat(lvs)
    if not bool(torch.isfinite(mu).all()):
        raise ValueError(f"{where}: model: the encoder's mu is not finite for every sample")
    sigma = torch.exp(0.5 * logvar)
    if not bool((torch.isfinite(sigma) & (sigma > 0)).all()):
        bad = logvar[~(torch.isfinite(sigma) & (sigma > 0))]
        hint = (
            " (is s a log-variance or log-sigma? then say posterior='logvar' or 'log_sigma')"
            if vae.posterior in ("sigma", "var")
            else ""
        )
        raise ValueError(
            f"{where}: model: expected sigma finite and > 0 from the encoder's second output "
            f"read as {vae.posterior!r}, got {bad.numel()} values that are not (log-variance "
            f"{bad.flatten()[0].item():g}, ...){hint}"
        )
    return mu, logvar, lat


class FlatDecoder(nn.Module):
    """``z (B, n) -> decode(z.reshape(B, *latent_shape))``. A module holding the adapter's modules,
    so that :func:`vaeiso_ext.analysis.dj_prime`'s chunk planning sees their activations."""

    def __init__(self, vae: VAEAdapter, latent_shape: tuple[int, ...]):
        super().__init__()
        self.parts = nn.ModuleList(vae.modules)
        self._decode, self.latent_shape = vae.decode, tuple(latent_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self._decode(z.reshape((z.shape[0],) + self.latent_shape))


@torch.no_grad()
def check_decoder(where: str, decode: Callable, z: Tensor, x: Tensor, metric) -> None:
    """The decoder's output for a few latents: a tensor of the data's shape that ``metric`` takes."""
    k = min(4, z.shape[0])
    out = decode(z[:k])
    if not isinstance(out, Tensor):
        raise TypeError(f"{where}: model: expected decode(z) to return a tensor, got {type(out).__name__}")
    want = (k,) + tuple(x.shape[1:])
    if tuple(out.shape) != want:
        raise ValueError(
            f"{where}: model: expected decode(z) of {k} latents to have the data's shape {want}, got {tuple(out.shape)}"
        )
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{where}: model: decode(mu) is not finite")
    metric.check(where, "the decoder's output (model.decode)", out)


def check_positive(where: str, name: str, v) -> float:
    """TypeError / ValueError naming ``where`` unless ``v`` is a finite number > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{where}: {name}: expected a number, got {type(v).__name__}")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{where}: {name}: expected a finite number > 0, got {v!r}")
    return float(v)


def check_threshold(where: str, v) -> float:
    """``kl_threshold``: a finite number >= 0 (nats)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{where}: kl_threshold: expected a number, got {type(v).__name__}")
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{where}: kl_threshold: expected a finite number >= 0 (nats), got {v!r}")
    return float(v)


def check_count(where: str, name: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where}: {name}: expected an int, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{where}: {name}: expected an int >= {low}, got {v}")
    return v


def check_data(where: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: x: expected a tensor of samples (N, ...), got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{where}: x: expected samples of shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x
