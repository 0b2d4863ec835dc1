"""INTERIM stand-ins for issue 4's ``vaeiso_ext.metrics`` and ``vaeiso_ext.analysis.dj_prime`` /
``isometry_gram`` (pure PyTorch, toy metrics only), written against exactly their interfaces.

Nothing imports this module except :mod:`vaeiso_ext._deps`; once issue 4 lands, switch the imports
there and delete this file.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


class SSE:
    """Square error summed over all non-batch dims; G_x = I."""

    name = "sse"

    def scale(self, x: Tensor) -> Tensor:
        """a_x with G_x = a_x I, from the base x: (N,)."""
        return x.new_ones(x.shape[0])

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        """D(x, y) -> (N,); x is the base (a_x is taken from it)."""
        return self.scale(x) * (y - x).pow(2).flatten(1).sum(1)

    def pairs(self, base: Tensor, others: Tensor) -> Tensor:
        """D(base[n], others[n, k]) -> (N, K)."""
        d = (others - base.unsqueeze(1)).pow(2).flatten(2).sum(2)
        return self.scale(base).unsqueeze(1) * d

    def gram(self, x: Tensor, v: Tensor, diagonal: bool = False) -> Tensor:
        """v[n, j]^T G_x v[n, k] -> (N, K, K), or (N, K) if diagonal."""
        vf = v.flatten(2)
        a = self.scale(x)
        if diagonal:
            return a.unsqueeze(1) * vf.pow(2).sum(2)
        return a.view(-1, 1, 1) * (vf @ vf.transpose(1, 2))

    def __repr__(self):
        return f"{type(self).__name__}()"


class DownwardConvex(SSE):
    """a_x ||x - y||^2 with a_x = 2/3 + 2 ||x||^2 / 21 (Eq. 24)."""

    name = "downward"

    def scale(self, x: Tensor) -> Tensor:
        return 2.0 / 3.0 + 2.0 * x.pow(2).flatten(1).sum(1) / 21.0


class UpwardConvex(SSE):
    """||x - y||^2 / a_x with a_x of Eq. 24 (Eq. 66)."""

    name = "upward"

    def scale(self, x: Tensor) -> Tensor:
        return 1.0 / (2.0 / 3.0 + 2.0 * x.pow(2).flatten(1).sum(1) / 21.0)


def _decode_chunked(decoder, z: Tensor, chunk_size: int | None) -> Tensor:
    if chunk_size is None or z.shape[0] <= chunk_size:
        return decoder(z)
    return torch.cat([decoder(c) for c in z.split(chunk_size)])


def _jacobian_columns(decoder, z: Tensor) -> tuple[Tensor, Tensor]:
    """(Dec(z) (N, D...), J (N, n, D...)) with J[:, j] = dDec/dz_j, by forward-mode AD."""
    n = z.shape[1]
    eye = torch.eye(n, dtype=z.dtype, device=z.device)
    tangents = eye.unsqueeze(1).expand(n, *z.shape)  # (n, N, n)

    x = decoder(z)
    with warnings.catch_warnings():  # torch.func's internals warn about torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        jac = torch.func.vmap(lambda t: torch.func.jvp(decoder, (z,), (t,))[1])(tangents)  # (n, N, D...)
    return x, jac.movedim(0, 1)


def dj_prime(decoder, z: Tensor, metric, *, eps: float = 1e-3, method: str = "forward",
             chunk_size: int | None = None) -> Tensor:
    """D'_j(z) for all j -> (N, n); see SPEC §4."""
    if z.dim() != 2:
        raise ValueError(f"z: expected (N, n), got shape {tuple(z.shape)}")
    N, n = z.shape
    if method == "jvp":
        x, jac = _jacobian_columns(decoder, z.detach())
        return metric.gram(x.detach(), jac.detach(), diagonal=True)
    eye = torch.eye(n, dtype=z.dtype, device=z.device) * eps
    with torch.no_grad():
        if method == "forward":
            zs = torch.cat([z.unsqueeze(1), z.unsqueeze(1) + eye], dim=1)  # (N, n+1, n)
            out = _decode_chunked(decoder, zs.reshape(N * (n + 1), n), chunk_size)
            out = out.reshape(N, n + 1, *out.shape[1:])
            return metric.pairs(out[:, 0], out[:, 1:]) / eps**2
        if method == "central":
            zs = torch.cat([z.unsqueeze(1), z.unsqueeze(1) + eye, z.unsqueeze(1) - eye], dim=1)
            out = _decode_chunked(decoder, zs.reshape(N * (2 * n + 1), n), chunk_size)
            out = out.reshape(N, 2 * n + 1, *out.shape[1:])
            d = metric.pairs(out[:, 0], out[:, 1:])
            return (d[:, :n] + d[:, n:]) / (2 * eps**2)
    raise ValueError(f"method: expected 'forward', 'central' or 'jvp', got {method!r}")


def isometry_gram(decoder, z: Tensor, sigma: Tensor, metric, beta: float) -> Tensor:
    """Gamma_jk = (2/beta) sigma_j sigma_k J_j^T G_x J_k -> (N, n, n)."""
    x, jac = _jacobian_columns(decoder, z.detach())
    g = metric.gram(x.detach(), jac.detach())
    s = sigma.detach()
    return (2.0 / beta) * s.unsqueeze(2) * g * s.unsqueeze(1)
