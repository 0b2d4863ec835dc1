"""The derivative engine of the analysis (docs/ops.md, "The analysis"): ``D'_j`` and the isometry Gram, batched.

``D'_j(z) = D(Dec(z), Dec(z + eps e_j)) / eps**2`` for all latent dims j at once: the decodes
of all samples and directions go through the decoder as large batches (sized to the device's
budget), the distances through ``metric.pairs`` (one fused call for all K = n or 2n others of a
chunk of samples). ``method="jvp"`` takes the exact limit
``J_j^T G J_j`` from forward-mode AD (all n directions in one batched pass) and
``metric.gram``.

Forward mode and the fused GDN op: the op has no forward-mode rule; :class:`vaeiso_ext.nn.GDN`
sees a dual tensor and runs the pure-PyTorch reference instead, whose JVP is exact. The JVP
pass uses ``torch.autograd.forward_ad`` on a batch replicated n times (row ``(i, j)`` carries
tangent ``e_j``) rather than ``torch.func.jvp`` + ``vmap``: it works for any decoder whose
layers support forward AD, including custom ``autograd.Function``s applied to parameters only
(``nn.GDN``'s lower bound), which functorch transforms reject.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from ..metrics import Metric, as_metric
from .model import _modules_of, running

__all__ = ["dj_prime", "isometry_gram"]

METHODS = ("forward", "central", "jvp")

# Chunking has two budgets. Rows per decoder call: activations of about DECODE_BUDGET_BYTES
# (the largest activation of one row is measured on a one-row probe). Small on CPU, where
# batches larger than the caches make convolutions and element-wise layers slower per row;
# large elsewhere (GPUs want big batches). Samples per distance call: their decoded outputs
# (and tangents) take at most MEMORY_BUDGET_BYTES.
DECODE_BUDGET_BYTES = {"cpu": 2 * 2**20}
DEFAULT_DECODE_BUDGET_BYTES = 2**30
MEMORY_BUDGET_BYTES = 256 * 2**20

Decoder = Callable[[Tensor], Tensor]


def _check_z(fn: str, z: Tensor) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{fn}: z: expected a latent batch of shape (N, n), got {shape}")
    if not z.is_floating_point():
        raise ValueError(f"{fn}: z: expected a floating-point tensor, got {z.dtype}")


def _check_chunk(fn: str, chunk_size: int | None) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(
            f"{fn}: chunk_size: expected a positive int (rows per decoder call) or None, got {chunk_size!r}"
        )


class _Plan(NamedTuple):
    rows_per_call: int  # rows through the decoder at once
    samples_per_chunk: int  # samples whose decodes are held for one distance call


def _probe(decoder: Decoder, z: Tensor) -> tuple[int, int]:
    """Bytes per row of the decoder's output and of its largest module output (one-row probe)."""
    sizes: list[int] = []

    def hook(_module, _inputs, out):
        if isinstance(out, Tensor):
            sizes.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in decoder.modules()] if isinstance(decoder, nn.Module) else []
    try:
        out = decoder(z[:1])
    finally:
        for h in handles:
            h.remove()
    out_row = max(1, out.numel() * out.element_size())
    return out_row, max([out_row] + sizes)


def _plan(decoder: Decoder, z: Tensor, rows_per_sample: int, chunk_size: int | None, tangents: bool) -> _Plan:
    out_row, act_row = _probe(decoder, z)
    copies = 2 if tangents else 1  # forward AD carries a tangent beside every activation
    if chunk_size is None:
        budget = DECODE_BUDGET_BYTES.get(z.device.type, DEFAULT_DECODE_BUDGET_BYTES)
        chunk_size = max(1, budget // (act_row * copies))
    samples = max(1, MEMORY_BUDGET_BYTES // (out_row * rows_per_sample * copies))
    return _Plan(chunk_size, samples)


def _chunks(N: int, size: int):
    for start in range(0, N, size):
        yield slice(start, min(N, start + size))


def _decode(decoder: Decoder, zz: Tensor, rows: int) -> Tensor:
    if zz.shape[0] <= rows:
        return decoder(zz)
    return torch.cat([decoder(zz[sl]) for sl in _chunks(zz.shape[0], rows)])


def _make_dual(z: Tensor, t: Tensor) -> Tensor:
    # torch's first make_dual imports its jvp decompositions, which call the deprecated
    # torch.jit.script: a FutureWarning about torch's own code in every analysis. Only that
    # warning is silenced, only here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        return fwAD.make_dual(z, t)


def _decode_jvp(decoder: Decoder, zz: Tensor, tt: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    primals, tangents = [], []
    for sl in _chunks(zz.shape[0], rows):
        with fwAD.dual_level():
            p, t = fwAD.unpack_dual(decoder(_make_dual(zz[sl], tt[sl])))
        primals.append(p)
        tangents.append(torch.zeros_like(p) if t is None else t)  # None: no dependence on z
    if len(primals) == 1:
        return primals[0], tangents[0]
    return torch.cat(primals), torch.cat(tangents)


def _fd_chunk(decoder: Decoder, zc: Tensor, metric: Metric, eps: float, central: bool, rows: int) -> Tensor:
    """Finite-difference D'_j for one chunk: (c, n)."""
    c, n = zc.shape
    eye = torch.eye(n, dtype=zc.dtype, device=zc.device)
    steps = torch.cat([eye * eps, eye * -eps]) if central else eye * eps  # (n or 2n, n)
    zp = zc[:, None, :] + steps  # (c, m, n)
    m = zp.shape[1]
    # The step actually taken after rounding z + eps (it matters in float32 only).
    idx = torch.arange(m, device=zc.device)
    h = (zp - zc[:, None, :])[:, idx, idx % n]  # (c, m)
    out = _decode(decoder, torch.cat([zc, zp.reshape(c * m, n)]), rows)
    base = out[:c]
    others = out[c:].reshape((c, m) + tuple(out.shape[1:]))
    d = metric.pairs(base, others) / (h * h).to(out.dtype)
    return 0.5 * (d[:, :n] + d[:, n:]) if central else d


def _jvp_chunk(decoder: Decoder, zc: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """Dec(z) (c, *S) and its n directional derivatives J (c, n, *S) by forward-mode AD."""
    c, n = zc.shape
    zz = zc.repeat_interleave(n, dim=0)
    tt = torch.eye(n, dtype=zc.dtype, device=zc.device).repeat(c, 1)
    primal, tangent = _decode_jvp(decoder, zz, tt, rows)
    shape = (c, n) + tuple(primal.shape[1:])
    return primal.reshape(shape)[:, 0], tangent.reshape(shape)


def _jvp_parts(decoder: Decoder, z: Tensor, chunk_size: int | None):
    plan = _plan(decoder, z, z.shape[1], chunk_size, tangents=True)
    for sl in _chunks(z.shape[0], plan.samples_per_chunk):
        yield sl, _jvp_chunk(decoder, z[sl], plan.rows_per_call)


def _check_decoder(fn: str, decoder) -> tuple[nn.Module, ...]:
    """The modules to run in eval mode while ``decoder`` is called (none for a plain function)."""
    if not callable(decoder):
        raise TypeError(f"{fn}: decoder: expected a callable (B, n) -> (B, *S), got {type(decoder).__name__}")
    return _modules_of(decoder) or ()


def dj_prime(
    decoder: Decoder,
    z: Tensor,
    metric: Metric | str,
    *,
    eps: float = 1e-3,
    method: str = "forward",
    chunk_size: int | None = None,
) -> Tensor:
    """``D'_j(z) = D(Dec(z), Dec(z + eps e_j)) / eps**2`` for every sample and latent dim: ``(N, n)``.

    Args:
        decoder: maps ``(B, n)`` latents to ``(B, *S)`` outputs (any batch size, rows
            independent). A module, or a method of one, runs in eval mode (dropout off: a
            training-mode dropout would make D'_j noise) and gets its training flags back; a
            plain function is called as it is.
        z: ``(N, n)`` latents (the encoder means ``mu(x)``).
        metric: a :mod:`vaeiso_ext.metrics` object (the training metric) or its name
            (:data:`vaeiso_ext.metrics.METRIC_NAMES`).
        eps: finite-difference step (> 0); ignored by ``"jvp"``.
        method: ``"forward"`` (the paper's; n+1 decodes per sample, error O(eps)),
            ``"central"`` (``(D(Dec z, Dec(z - eps e_j)) + D(Dec z, Dec(z + eps e_j))) /
            (2 eps**2)``, base ``Dec(z)`` in both; 2n+1 decodes, error O(eps**2)), or
            ``"jvp"`` (the exact limit ``J_j^T G_x J_j`` by forward-mode AD and
            ``metric.gram``; about twice the cost of ``"forward"``).
        chunk_size: rows per decoder call (a sample needs n+1, 2n+1 or n rows; they may span
            calls). By default from :data:`DECODE_BUDGET_BYTES` for the device (small on CPU,
            where cache-sized batches run fastest; large on GPU). The decodes of up to
            :data:`MEMORY_BUDGET_BYTES` of samples go to one ``metric.pairs`` call. Results do
            not depend on either.

    The finite-difference forms divide by the step actually taken (``(z + eps) - z`` after
    rounding). Runs without building an autograd graph.
    """
    mods = _check_decoder("dj_prime", decoder)
    _check_z("dj_prime", z)
    metric = as_metric("dj_prime", metric)
    if method not in METHODS:
        raise ValueError(f"dj_prime: method: expected one of {METHODS}, got {method!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"dj_prime: eps: expected a positive finite number, got {eps!r}")
    _check_chunk("dj_prime", chunk_size)
    N, n = z.shape
    if N == 0 or n == 0:
        return z.new_zeros((N, n))
    with torch.no_grad(), running(mods):
        if method == "jvp":
            parts = [metric.gram(base, J, diagonal=True) for _, (base, J) in _jvp_parts(decoder, z, chunk_size)]
            return torch.cat(parts)
        central = method == "central"
        plan = _plan(decoder, z, (2 * n if central else n) + 1, chunk_size, tangents=False)
        return torch.cat(
            [
                _fd_chunk(decoder, z[sl], metric, float(eps), central, plan.rows_per_call)
                for sl in _chunks(N, plan.samples_per_chunk)
            ]
        )


def isometry_gram(
    decoder: Decoder, z: Tensor, sigma: Tensor, metric: Metric | str, beta: float, *, chunk_size: int | None = None
) -> Tensor:
    """The isometry Gram ``Gamma_jk(x) = (2/beta) sigma_j sigma_k J_j^T G_x J_k``: ``(N, n, n)``.

    ``J_j = dDec/dz_j`` at ``z = mu(x)`` (forward-mode AD, all n directions in one batched pass)
    and ``G_x`` the metric tensor of ``metric`` at ``Dec(z)``. Expected about the identity over
    the active dimensions (docs/ops.md, "The analysis"); its diagonal is the Eq. 20 norm ``(2/beta) sigma_j**2 D'_j``
    with the exact ``D'_j``.

    Args:
        decoder, z, metric, chunk_size: as in :func:`dj_prime`.
        sigma: ``(N, n)`` posterior standard deviations ``sigma(x)``.
        beta: the training beta (``1 / lambda``), > 0.
    """
    mods = _check_decoder("isometry_gram", decoder)
    _check_z("isometry_gram", z)
    metric = as_metric("isometry_gram", metric)
    if not isinstance(sigma, Tensor) or sigma.shape != z.shape:
        shape = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
        raise ValueError(f"isometry_gram: sigma: expected shape {tuple(z.shape)} (that of z), got {shape}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"isometry_gram: beta: expected a positive finite number, got {beta!r}")
    _check_chunk("isometry_gram", chunk_size)
    N, n = z.shape
    if N == 0 or n == 0:
        return z.new_zeros((N, n, n))
    with torch.no_grad(), running(mods):
        parts = []
        for sl, (base, J) in _jvp_parts(decoder, z, chunk_size):
            s = sigma[sl].to(base.dtype)
            parts.append((2.0 / beta) * s[:, :, None] * s[:, None, :] * metric.gram(base, J))
        return torch.cat(parts)
