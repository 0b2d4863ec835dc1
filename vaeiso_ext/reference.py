"""Pure-PyTorch reference implementations of every fused op.

They are the test oracle (run in float64), the benchmark baseline, and the fallback on devices
with no compiled kernel. Written for clarity, not speed; they depend on torch alone and support
autograd in both modes.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False, simplified: bool = False) -> Tensor:
    """Reference GDN/IGDN over dim 1 of ``(N, C, *)`` input; see :func:`vaeiso_ext.ops.gdn`.

    CompressAI's formulation: the channel mixing is a 1x1 convolution with weight ``gamma``
    and bias ``beta`` (here conv1d over the flattened positions, so any rank works).
    """
    N, C = x.shape[:2]
    fx = x.abs() if simplified else x * x
    S = math.prod(x.shape[2:])
    norm = F.conv1d(fx.reshape(N, C, S), gamma.unsqueeze(-1), beta).reshape(x.shape)
    scale = norm if simplified else torch.sqrt(norm)
    return x * scale if inverse else x / scale


# ---------------------------------------------------------------- SSIM (SPEC §3.2-3.3)


# ---------------------------------------------------------------- pair distances (SPEC §3.4)


def _log1p_minus_x(t: Tensor) -> Tensor:
    """``log1p(t) - t`` without cancellation for small ``|t|`` (the atanh series below 1/4)."""
    small = t.abs() < 0.25
    ts = torch.where(small, t, torch.zeros_like(t))
    u = ts / (2 + ts)
    w = u * u
    s = torch.zeros_like(t)
    for k in range(10, 0, -1):  # 1/3 + w/5 + ... + w**9/21, Horner form
        s = 1.0 / (2 * k + 1) + w * s
    series = -ts * ts / (2 + ts) + 2 * u * w * s
    return torch.where(small, series, torch.log1p(t) - t)


def _kl_half(p: Tensor, q: Tensor, d: Tensor) -> Tensor:
    """``p log(p/q) + (q - p)`` with ``d = q - p``; the log term is 0 where ``p == 0`` (xlogy)."""
    zero = p == 0
    ps = torch.where(zero, torch.ones_like(p), p)
    return torch.where(zero, d, -ps * _log1p_minus_x(d / ps))


def pair_distances(base: Tensor, others: Tensor, metric: str, weight: Tensor | None = None) -> Tensor:
    """Reference ``(N, K)`` pair distances; see :func:`vaeiso_ext.ops.pair_distances`."""
    if metric not in ("sse", "bce"):
        raise ValueError(f"pair_distances: metric: expected 'sse' or 'bce', got {metric!r}")
    b = base.unsqueeze(1)
    if metric == "sse":
        terms = (others - b) ** 2
    else:
        terms = _kl_half(b, others, others - b) + _kl_half(1 - b, 1 - others, b - others)
    out = terms.sum(dim=tuple(range(2, terms.dim()))) if terms.dim() > 2 else terms
    return out if weight is None else out * weight[:, None]
