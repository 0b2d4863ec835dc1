"""MS-SSIM and fused SSIM + L1 benchmark cases: ``ms_ssim`` (fwd, fwd+bwd) and ``ssim_l1_loss``.

Baselines for ``ms_ssim``: pytorch_msssim (what CompressAI trains with), the eager reference,
``torch.compile`` of it, and torchmetrics (whose conventions differ slightly, see
``ops.ms_ssim``: timed, not compared). For ``ssim_l1_loss``: our own fused ``1 - ssim`` plus a
separate eager L1 (the gain of reading the images once), pytorch_msssim's SSIM plus L1, and the
eager reference.
"""

from __future__ import annotations

import torch

from .. import ops
from .. import reference as ref
from ..ops._ssim import one_minus_ssim
from .cases_ssim import filter_flops
from .core import Case, assert_close, fwd_bwd

try:
    import pytorch_msssim as _pm
except ImportError:  # a peer: optional
    _pm = None
try:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as _tm_ms_ssim
except ImportError:
    _tm_ms_ssim = None

W_SSIM = 0.2  # the 3D Gaussian splatting mix


def _images(n, c, h, w, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x.to(device), y.to(device)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


def _l1(x, y):
    return (x - y).abs().mean(dim=(1, 2, 3))


def _baselines_ms(compiled):
    b = {"eager": lambda a, b: ref.ms_ssim(a, b)}
    if compiled is not None:
        b["compile"] = lambda a, b: compiled(a, b)
    if _pm is not None:
        b["pytorch_msssim"] = lambda a, b: _pm.ms_ssim(a, b, data_range=1.0, size_average=False)
    if _tm_ms_ssim is not None:
        b["torchmetrics"] = lambda a, b: _tm_ms_ssim(a, b, data_range=1.0, normalize="relu", reduction="none")
    return b


def _baselines_l1(compiled):
    b = {
        # the same "same" padding as ssim_l1_loss's default: the same work
        "fused 1-ssim + eager L1": lambda a, b: (
            (1 - W_SSIM) * _l1(a, b) + W_SSIM * one_minus_ssim(a, b, padding="same")
        ),
        "eager": lambda a, b: ref.ssim_l1_loss(a, b, ssim_weight=W_SSIM),
    }
    if compiled is not None:
        b["compile"] = lambda a, b: compiled(a, b)
    if _pm is not None:
        b["pytorch_msssim ssim + L1"] = lambda a, b: (
            (1 - W_SSIM) * _l1(a, b) + W_SSIM * (1 - _pm.ssim(a, b, data_range=1.0, size_average=False))
        )
    return b


def _ms_flops(N, C, H, W, maps):
    """filter_flops over the five levels (valid windows; each level halves, rounding up)."""
    total = 0
    for _ in range(5):
        total += filter_flops(N, C, H, W, maps)
        H, W = (H + H % 2) // 2, (W + W % 2) // 2
    return total


def _l1_flops(N, C, H, W, maps):
    return filter_flops(N, C, H, W, maps, same=True)  # ssim_l1_loss pads "same" (3DGS)


def _cases_for(op, fused, reference, baselines, sizes, device, flops):
    out = []
    for N, C, H, W in sizes:
        x, y = _images(N, C, H, W, device)
        size = f"N={N} C={C} {H}x{W}"
        elt = x.numel() * x.element_size()

        def check_fwd(x=x, y=y):
            with torch.no_grad():
                assert_close(fused(x, y), reference(x.double(), y.double()), 0, 1e-5, op)

        out.append(
            Case(
                op,
                size,
                "fwd",
                _no_grad(lambda x=x, y=y: fused(x, y)),
                {k: _no_grad(lambda f=f, x=x, y=y: f(x, y)) for k, f in baselines.items()},
                check_fwd,
                bytes=2 * elt,
                flops=flops(N, C, H, W, 5),
            )
        )

        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        gy = torch.rand(N, device=device)

        def check_bwd(xr=xr, yr=yr, gy=gy):
            got = fwd_bwd(fused, (xr, yr), gy)()
            r_in = (xr.detach().double().requires_grad_(), yr.detach().double().requires_grad_())
            want = fwd_bwd(reference, r_in, gy.double())()
            scale = max(w.abs().max().item() for w in want)
            assert_close(got, want, 0, 1e-4 * scale, f"{op} grads")

        out.append(
            Case(
                op,
                size,
                "fwd+bwd",
                fwd_bwd(fused, (xr, yr), gy),
                {k: fwd_bwd(f, (xr, yr), gy) for k, f in baselines.items()},
                check_bwd,
                bytes=6 * elt,
                flops=flops(N, C, H, W, 10),
            )
        )
    return out


def cases(device: str, quick: bool, compile_baselines: bool) -> list[Case]:
    sizes = [(2, 3, 176, 176)] if quick else [(4, 3, 256, 256), (16, 3, 256, 256), (4, 3, 512, 768)]
    c_ms = torch.compile(ref.ms_ssim, dynamic=False) if compile_baselines else None
    c_l1 = (
        torch.compile(lambda a, b: ref.ssim_l1_loss(a, b, ssim_weight=W_SSIM), dynamic=False)
        if compile_baselines
        else None
    )
    return _cases_for("ms_ssim", ops.ms_ssim, ref.ms_ssim, _baselines_ms(c_ms), sizes, device, _ms_flops) + _cases_for(
        "ssim_l1_loss",
        lambda a, b: ops.ssim_l1_loss(a, b, ssim_weight=W_SSIM),
        lambda a, b: ref.ssim_l1_loss(a, b, ssim_weight=W_SSIM),
        _baselines_l1(c_l1),
        sizes,
        device,
        _l1_flops,
    )
