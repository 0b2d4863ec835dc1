"""SSIM family benchmark cases: ``ssim`` (fwd, fwd+bwd), ``ssim_pairs`` and ``ssim_metric_gram``.

Baselines: the eager reference, ``torch.compile`` of it, pytorch_msssim (when installed), K
separate SSIM calls for the pairs, and the Gram's GEMM form (docs/design.md) written in eager PyTorch.
``ssim_pairs`` against K calls of our own fused ``ssim`` is bounded by the filter count (five
filtered maps per pair in ``ssim``, three in ``ssim_pairs``): about 5/3 at best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops
from .. import reference as ref
from .core import Case, assert_close, fwd_bwd

try:
    from pytorch_msssim import ssim as _ms_ssim
except ImportError:  # a peer: optional
    _ms_ssim = None


def _images(n, c, h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.to(device), y.to(device)


def gram_gemm_eager(x, v, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0):
    """The GEMM form of the SSIM metric Gram ("valid" padding) in plain PyTorch."""
    f = lambda t: ref.window_filter(t, window_size, sigma)  # noqa: E731
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    N, K = v.shape[:2]
    mu_x = f(x)
    b = 1 / (2 * (f(x * x) - mu_x**2).clamp(min=0) + c2)
    ab = (1 / (2 * mu_x**2 + c1) - b).unsqueeze(1)
    pad = window_size - 1  # adjoint of a "valid" filter: a full correlation with the flipped window
    w = ref.gaussian_window(window_size, sigma, x.dtype, x.device)
    c = F.conv2d(b.reshape(-1, 1, *b.shape[-2:]), w.flip(0).view(1, 1, 1, -1), padding=(0, pad))
    c = F.conv2d(c, w.flip(0).view(1, 1, -1, 1), padding=(pad, 0)).reshape(x.shape).unsqueeze(1)
    mu_v = f(v)
    G = torch.bmm((mu_v * ab).reshape(N, K, -1), mu_v.reshape(N, K, -1).transpose(1, 2))
    G = G + torch.bmm((v * c).reshape(N, K, -1), v.reshape(N, K, -1).transpose(1, 2))
    return G / mu_x[0].numel()


def filter_flops(n, c, h, w, maps, window=11, same=False):
    """FLOPs of the textbook SSIM's filtering: ``maps`` separable ``window``-tap filterings of each
    (image, channel) plane (2 per tap: the row pass over h x wo values, the column pass over
    ho x wo). The textbook forward filters five maps (mu_x, mu_y, x^2, y^2, xy), its backward
    five more (their adjoints): the work pytorch_msssim's convolutions do. The small per-position
    SSIM formula is not counted: the figure is a floor on the work, for GFLOP/s."""
    ho, wo = (h, w) if same else (h - window + 1, w - window + 1)
    return maps * n * c * 2 * window * (h * wo + ho * wo)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _ssim_cases(device, quick, compiled):
    sizes = [(8, 3, 64, 64)] if quick else [(64, 3, 64, 64), (8, 3, 256, 256)]
    if device.startswith("cuda") and not quick:  # the GPU target's size (issue 14): 5 HD frames
        sizes.append((5, 3, 1080, 1920))
    out = []
    for N, C, H, W in sizes:
        x, y = _images(N, C, H, W, device)
        size = f"N={N} C={C} {H}x{W}"
        elt = x.numel() * x.element_size()

        def check_fwd(x=x, y=y):
            with torch.no_grad():
                assert_close(ops.ssim(x, y), ref.ssim(x.double(), y.double()), 0, 1e-5, "ssim")

        base = {"eager": lambda x=x, y=y: ref.ssim(x, y)}
        if compiled is not None:
            base["compile"] = lambda x=x, y=y: compiled(x, y)
        if _ms_ssim is not None:
            base["pytorch_msssim"] = lambda x=x, y=y: _ms_ssim(x, y, data_range=1, size_average=False)
        out.append(
            Case(
                "ssim",
                size,
                "fwd",
                _no_grad(lambda x=x, y=y: ops.ssim(x, y)),
                {k: _no_grad(v) for k, v in base.items()},
                check_fwd,
                bytes=2 * elt,
                flops=filter_flops(N, C, H, W, 5),
            )
        )

        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        gy = torch.rand(N, device=device)

        def check_bwd(xr=xr, yr=yr, gy=gy):
            got = fwd_bwd(ops.ssim, (xr, yr), gy)()
            r_in = (xr.detach().double().requires_grad_(), yr.detach().double().requires_grad_())
            want = fwd_bwd(ref.ssim, r_in, gy.double())()
            scale = max(w.abs().max().item() for w in want)
            assert_close(got, want, 0, 1e-4 * scale, "ssim grads")

        bb = {"eager": fwd_bwd(ref.ssim, (xr, yr), gy)}
        if compiled is not None:
            bb["compile"] = fwd_bwd(compiled, (xr, yr), gy)
        if _ms_ssim is not None:
            bb["pytorch_msssim"] = fwd_bwd(lambda a, b: _ms_ssim(a, b, data_range=1, size_average=False), (xr, yr), gy)
        # forward reads x, y; backward reads them again and writes both gradients
        out.append(
            Case(
                "ssim",
                size,
                "fwd+bwd",
                fwd_bwd(ops.ssim, (xr, yr), gy),
                bb,
                check_bwd,
                bytes=6 * elt,
                flops=filter_flops(N, C, H, W, 10),
            )
        )
    return out


def _pairs_and_gram_cases(device, quick, compile_baselines):
    N, K = (2, 8) if quick else (4, 32)
    base, _ = _images(N, 3, 64, 64, device, seed=1)
    g = torch.Generator().manual_seed(2)
    others = base.unsqueeze(1) + 1e-3 * torch.randn((N, K, 3, 64, 64), generator=g).to(device)
    v = torch.randn((N, K, 3, 64, 64), generator=g).to(device)
    size = f"N={N} K={K} 3x64x64"
    traffic = (K + 1) * base.numel() * base.element_size()
    out = []

    def check_pairs():
        with torch.no_grad():
            assert_close(
                ops.ssim_pairs(base, others), ref.ssim_pairs(base.double(), others.double()), 1e-3, 0, "ssim_pairs"
            )

    pb = {
        "eager": lambda: ref.ssim_pairs(base, others),
        "K x fused ssim": lambda: [1 - ops.ssim(base, others[:, k]) for k in range(K)],
        "K x eager ssim": lambda: [1 - ref.ssim(base, others[:, k]) for k in range(K)],
    }
    if compile_baselines:
        cp = torch.compile(ref.ssim_pairs, dynamic=False)
        pb["compile"] = lambda: cp(base, others)
    if _ms_ssim is not None:
        pb["K x pytorch_msssim"] = lambda: [
            1 - _ms_ssim(base, others[:, k], data_range=1, size_average=False) for k in range(K)
        ]
    out.append(
        Case(
            "ssim_pairs",
            size,
            "fwd",
            _no_grad(lambda: ops.ssim_pairs(base, others)),
            {k: _no_grad(f) for k, f in pb.items()},
            check_pairs,
            bytes=traffic,
        )
    )

    for diagonal in (False, True):
        name = "ssim_metric_gram" + (" diag" if diagonal else "")

        def check_gram(diagonal=diagonal):
            with torch.no_grad():
                want = ref.ssim_metric_gram(base.double(), v.double(), diagonal=diagonal)
                assert_close(
                    ops.ssim_metric_gram(base, v, diagonal=diagonal), want, 1e-4, 1e-5 * want.abs().max().item(), name
                )

        gb = {"eager": lambda diagonal=diagonal: ref.ssim_metric_gram(base, v, diagonal=diagonal)}
        if not diagonal:
            gb["GEMM form eager"] = lambda: gram_gemm_eager(base, v)
        if compile_baselines:
            cg = torch.compile(ref.ssim_metric_gram, dynamic=False)
            gb["compile"] = lambda diagonal=diagonal, cg=cg: cg(base, v, diagonal=diagonal)
        out.append(
            Case(
                name,
                size,
                "fwd",
                _no_grad(lambda diagonal=diagonal: ops.ssim_metric_gram(base, v, diagonal=diagonal)),
                {k: _no_grad(f) for k, f in gb.items()},
                check_gram,
                bytes=traffic,
            )
        )
    return out


def cases(device: str, quick: bool, compile_baselines: bool) -> list[Case]:
    compiled = torch.compile(ref.ssim, dynamic=False) if compile_baselines else None
    return _ssim_cases(device, quick, compiled) + _pairs_and_gram_cases(device, quick, compile_baselines)
