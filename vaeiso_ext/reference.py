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


def gaussian_window(window_size: int, sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """The 1-D Gaussian window of the SSIM family: ``window_size`` taps, std ``sigma``,
    normalised to sum 1 in float64, then cast to ``dtype``."""
    t = torch.arange(window_size, dtype=torch.float64) - (window_size // 2)
    g = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def window_filter(t: Tensor, window_size: int = 11, sigma: float = 1.5, padding: str = "valid") -> Tensor:
    """Separable Gaussian filter over the last two dims of ``t`` (any leading dims) by conv2d:
    ``(.., H, W)`` to ``(.., Ho, Wo)``; ``"same"`` zero-pads by ``window_size // 2``."""
    if padding not in ("valid", "same"):
        raise ValueError(f'padding: expected "valid" or "same", got {padding!r}')
    pad = window_size // 2 if padding == "same" else 0
    w = gaussian_window(window_size, sigma, t.dtype, t.device)
    h, wd = t.shape[-2:]
    out = t.reshape(-1, 1, h, wd)
    out = torch.nn.functional.conv2d(out, w.view(1, 1, 1, -1), padding=(0, pad))
    out = torch.nn.functional.conv2d(out, w.view(1, 1, -1, 1), padding=(pad, 0))
    return out.reshape(tuple(t.shape[:-2]) + tuple(out.shape[-2:]))


def ssim_map(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
             k2: float = 0.03, data_range: float = 1.0, padding: str = "valid") -> Tensor:
    """The per-position SSIM map ``(N, C, Ho, Wo)`` of SPEC §3.2 (windowed variances clamped at 0)."""
    f = lambda t: window_filter(t, window_size, sigma, padding)  # noqa: E731
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = f(x), f(y)
    s_xx = torch.clamp(f(x * x) - mu_x * mu_x, min=0)
    s_yy = torch.clamp(f(y * y) - mu_y * mu_y, min=0)
    s_xy = f(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (s_xx + s_yy + c2))


def ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, data_range: float = 1.0, padding: str = "valid") -> Tensor:
    """Reference SSIM per image ``(N,)``: the mean of :func:`ssim_map`; see :func:`vaeiso_ext.ops.ssim`."""
    return ssim_map(x, y, window_size, sigma, k1, k2, data_range, padding).mean(dim=(1, 2, 3))


def ssim_pairs(base: Tensor, others: Tensor, **kw) -> Tensor:
    """Reference ``1 - SSIM(base[n], others[n, k])`` ``(N, K)`` by the plain formula (run it in
    float64: in float32 it cancels for tiny perturbations)."""
    n, k = others.shape[:2]
    xb = base.unsqueeze(1).expand(others.shape).reshape((n * k,) + tuple(base.shape[1:]))
    return (1 - ssim(xb, others.reshape(xb.shape), **kw)).view(n, k)


def ssim_metric_gram(x: Tensor, v: Tensor, *, diagonal: bool = False, window_size: int = 11,
                     sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
                     padding: str = "valid") -> Tensor:
    """Reference ``v[n, j]^T G_x v[n, k]`` by the per-window formula of SPEC §3.3, one product
    map ``w*(v_j v_k)`` per pair (K filter passes of K maps: slow, for testing)."""
    f = lambda t: window_filter(t, window_size, sigma, padding)  # noqa: E731
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x = f(x)
    s_xx = torch.clamp(f(x * x) - mu_x * mu_x, min=0)
    a = (1 / (2 * mu_x**2 + c1)).unsqueeze(1)  # (N, 1, C, Ho, Wo)
    b = (1 / (2 * s_xx + c2)).unsqueeze(1)
    mu_v = f(v)  # (N, K, C, Ho, Wo)
    if diagonal:
        per = mu_v * mu_v * a + (f(v * v) - mu_v * mu_v) * b
        return per.mean(dim=(2, 3, 4))
    rows = []
    for j in range(v.shape[1]):
        mm = mu_v[:, j : j + 1] * mu_v
        per = mm * a + (f(v[:, j : j + 1] * v) - mm) * b
        rows.append(per.mean(dim=(2, 3, 4)))
    return torch.stack(rows, dim=1) if rows else v.new_zeros(v.shape[:2] + (v.shape[1],))


# ---------------------------------------------------------------- pair distances (SPEC §3.4)
