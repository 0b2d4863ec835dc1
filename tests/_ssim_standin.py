"""STAND-IN for the SSIM ops of issue 3 (ops.ssim, ops.ssim_pairs, ops.ssim_metric_gram).

Pure PyTorch, float64-capable, written from SPEC §3.2-3.3 only so that the SSIM metric and the
SSIM paths of the analysis can be tested before the fused ops land. The `ssim_ops` fixture at
the end uses it ONLY when `vaeiso_ext.ops` lacks the real ops; once they are merged, the
stand-in functions can be deleted and the fixture reduced to its first branch.
"""

import torch
import torch.nn.functional as F


def _window(window_size, sigma, dtype, device):
    i = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    w = torch.exp(-(i**2) / (2 * sigma**2))
    return (w / w.sum()).to(dtype=dtype, device=device)


def _filter(t, w, padding):
    # separable Gaussian filter per channel of (B, C, H, W)
    C = t.shape[1]
    k = w.numel()
    pad = k // 2 if padding == "same" else 0
    t = F.conv2d(t, w.view(1, 1, k, 1).expand(C, 1, k, 1), padding=(pad, 0), groups=C)
    return F.conv2d(t, w.view(1, 1, 1, k).expand(C, 1, 1, k), padding=(0, pad), groups=C)


def _consts(k1, k2, data_range):
    return (k1 * data_range) ** 2, (k2 * data_range) ** 2


def ssim(x, y, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0, padding="valid"):
    w = _window(window_size, sigma, x.dtype, x.device)
    C1, C2 = _consts(k1, k2, data_range)
    f = lambda t: _filter(t, w, padding)  # noqa: E731
    mx, my = f(x), f(y)
    sxx = (f(x * x) - mx * mx).clamp_min(0)
    syy = (f(y * y) - my * my).clamp_min(0)
    sxy = f(x * y) - mx * my
    s = (2 * mx * my + C1) * (2 * sxy + C2) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    return s.flatten(1).mean(1)


def ssim_pairs(base, others, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0, padding="valid"):
    N, K = others.shape[:2]
    w = _window(window_size, sigma, base.dtype, base.device)
    C1, C2 = _consts(k1, k2, data_range)
    f = lambda t: _filter(t, w, padding)  # noqa: E731
    x = base.unsqueeze(1).expand_as(others).reshape((N * K,) + tuple(base.shape[1:]))
    d = others.reshape(x.shape) - x
    mx, md = f(x), f(d)
    my = mx + md
    sxx = (f(x * x) - mx * mx).clamp_min(0)
    yy = x + d
    syy = (f(yy * yy) - my * my).clamp_min(0)
    sdd = (f(d * d) - md * md).clamp_min(0)
    num = md**2 * (sxx + syy + C2) + (2 * mx * my + C1) * sdd
    den = (mx**2 + my**2 + C1) * (sxx + syy + C2)
    return (num / den).flatten(1).mean(1).view(N, K)


def ssim_metric_gram(x, v, *, diagonal=False, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0,
                     padding="valid"):
    N, K = v.shape[:2]
    w = _window(window_size, sigma, x.dtype, x.device)
    C1, C2 = _consts(k1, k2, data_range)
    f = lambda t: _filter(t, w, padding)  # noqa: E731
    mx = f(x)
    sxx = (f(x * x) - mx * mx).clamp_min(0)
    a = (1 / (2 * mx**2 + C1)).unsqueeze(1)  # (N, 1, C, h, w)
    b = (1 / (2 * sxx + C2)).unsqueeze(1)
    vf = v.reshape((N * K,) + tuple(v.shape[2:]))
    mv = f(vf).view((N, K) + tuple(mx.shape[1:]))
    P = mx[0].numel()
    if diagonal:
        vv = f(vf * vf).view(mv.shape)
        return (a * mv**2 + b * (vv - mv**2)).flatten(2).sum(-1) / P
    out = x.new_empty((N, K, K))
    for j in range(K):
        uv = f((v[:, j : j + 1] * v).reshape(vf.shape)).view(mv.shape)
        out[:, j] = (a * mv[:, j : j + 1] * mv + b * (uv - mv[:, j : j + 1] * mv)).flatten(2).sum(-1) / P
    return out


# ---------------------------------------------------------------- fixture (delete with the stand-in)
import pytest  # noqa: E402

_SSIM_OPS = ("ssim", "ssim_pairs", "ssim_metric_gram")


@pytest.fixture
def ssim_ops(monkeypatch):
    """``{"ssim": differentiable float64-capable SSIM oracle, "real": bool}``.

    With the real fused ops (issue 3) in ``vaeiso_ext.ops`` they are used as they are and the
    oracle is ``vaeiso_ext.reference.ssim``; otherwise this module's stand-ins are patched into
    ``vaeiso_ext.ops`` for the duration of the test.
    """
    from vaeiso_ext import ops, reference

    if all(hasattr(ops, name) for name in _SSIM_OPS):
        return {"ssim": getattr(reference, "ssim", ssim), "real": True}
    for name in _SSIM_OPS:
        monkeypatch.setattr(ops, name, globals()[name], raising=False)
    return {"ssim": ssim, "real": False}
