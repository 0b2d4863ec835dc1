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


# ---------------------------------------------------------------- SSIM (docs/ops.md)


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


def _range(data_range, ndim: int = 4):
    """``data_range`` as a number or a tensor broadcasting over ``ndim``-D images: a
    ``(min, max)`` pair gives ``max - min``, a per-image ``(N,)`` tensor one range per image."""
    if isinstance(data_range, (tuple, list)):
        return float(data_range[1]) - float(data_range[0])
    if isinstance(data_range, Tensor) and data_range.dim() == 1:
        return data_range.reshape((-1,) + (1,) * (ndim - 1))
    return data_range


def ssim_map(
    x: Tensor,
    y: Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    padding: str = "valid",
) -> Tensor:
    """The per-position SSIM map ``(N, C, Ho, Wo)`` of docs/ops.md (windowed variances clamped at 0);
    ``data_range`` a number, a ``(min, max)`` pair or a per-image ``(N,)`` tensor."""
    f = lambda t: window_filter(t, window_size, sigma, padding)  # noqa: E731
    r = _range(data_range)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    mu_x, mu_y = f(x), f(y)
    s_xx = torch.clamp(f(x * x) - mu_x * mu_x, min=0)
    s_yy = torch.clamp(f(y * y) - mu_y * mu_y, min=0)
    s_xy = f(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * s_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (s_xx + s_yy + c2))


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    padding: str = "valid",
) -> Tensor:
    """Reference SSIM per image ``(N,)``: the mean of :func:`ssim_map`; see :func:`vaeiso_ext.ops.ssim`."""
    return ssim_map(x, y, window_size, sigma, k1, k2, data_range, padding).mean(dim=(1, 2, 3))


def ssim_pairs(base: Tensor, others: Tensor, **kw) -> Tensor:
    """Reference ``1 - SSIM(base[n], others[n, k])`` ``(N, K)`` by the plain formula (run it in
    float64: in float32 it cancels for tiny perturbations)."""
    n, k = others.shape[:2]
    xb = base.unsqueeze(1).expand(others.shape).reshape((n * k,) + tuple(base.shape[1:]))
    return (1 - ssim(xb, others.reshape(xb.shape), **kw)).view(n, k)


def ssim_metric_gram(
    x: Tensor,
    v: Tensor,
    *,
    diagonal: bool = False,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    padding: str = "valid",
) -> Tensor:
    """Reference ``v[n, j]^T G_x v[n, k]`` by the per-window formula of docs/ops.md, one product
    map ``w*(v_j v_k)`` per pair (K filter passes of K maps: slow, for testing)."""
    f = lambda t: window_filter(t, window_size, sigma, padding)  # noqa: E731
    r = _range(data_range)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
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


# ---------------------------------------------------------------- MS-SSIM, SSIM + L1 (docs/ops.md)


def ms_ssim(
    x: Tensor,
    y: Tensor,
    *,
    weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    normalize: str | None = "relu",
) -> Tensor:
    """Reference multi-scale SSIM ``(N,)``; see :func:`vaeiso_ext.ops.ms_ssim`.

    Per level the contrast-structure map (SSIM map at the last level) averaged per channel, the
    pyramid by ``avg_pool2d(2, padding=(H % 2, W % 2))``, the product over levels per channel and
    the mean over channels. "relu" and "simple" clamp at 0 with a zero gradient where clamped."""
    f = lambda t: window_filter(t, window_size, sigma)  # noqa: E731
    r = _range(data_range)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    m = len(weights)
    vals = []
    for level in range(m):
        mu_x, mu_y = f(x), f(y)
        s_xx = torch.clamp(f(x * x) - mu_x * mu_x, min=0)
        s_yy = torch.clamp(f(y * y) - mu_y * mu_y, min=0)
        s_xy = f(x * y) - mu_x * mu_y
        cs = (2 * s_xy + c2) / (s_xx + s_yy + c2)
        if level < m - 1:
            vals.append(cs.mean(dim=(2, 3)))
            pad = (x.shape[2] % 2, x.shape[3] % 2)
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
        else:
            vals.append(((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs).mean(dim=(2, 3)))
    v = torch.stack(vals)
    w = torch.tensor([float(t) for t in weights], dtype=v.dtype, device=v.device).view(-1, 1, 1)
    if normalize == "simple":
        v = (v + 1) / 2
    if normalize is None:
        terms = v**w
    else:
        pos = ~(v <= 0)  # NaN stays NaN
        terms = torch.where(pos, torch.where(pos, v, torch.ones_like(v)) ** w, (w == 0).to(v.dtype))
    return terms.prod(0).mean(1)


def ssim_l1_loss(x: Tensor, y: Tensor, *, ssim_weight: float = 0.2, **ssim_kwargs) -> Tensor:
    """Reference ``(1 - ssim_weight) * mean|x - y| + ssim_weight * (1 - SSIM)`` ``(N,)``, with
    ``padding="same"`` by default as :func:`vaeiso_ext.ops.ssim_l1_loss` (3DGS's convention)."""
    ssim_kwargs.setdefault("padding", "same")
    return (1 - ssim_weight) * (x - y).abs().mean(dim=(1, 2, 3)) + ssim_weight * (1 - ssim(x, y, **ssim_kwargs))


# ---------------------------------------------------------------- pair distances (docs/ops.md)


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
