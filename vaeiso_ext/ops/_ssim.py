"""SSIM family: the public wrappers of ``torch.ops.vaeiso.ssim*`` and the one SSIM pass.

One kernel pass serves the whole family: ``ssim_forward`` / ``ssim_backward`` compute, per
(image, channel), the mean of ``1 - SSIM`` (or of ``1 - cs``, MS-SSIM's contrast-structure term)
without cancellation, the mean ``|y - x|`` when asked (the fused SSIM + L1 loss), and the
derivative maps for the backward. :func:`ssim`, :func:`one_minus_ssim` (here) and
``ms_ssim`` / ``ssim_l1_loss`` (``._ms_ssim``) are reductions of its ``(N, C)`` output
(:func:`ssim_pass`); ``ssim_pairs`` shares its staging, ``ssim_metric_gram`` its window filter.

Every SSIM-family entry point checks its arguments with ``.checks`` and divides the images by
their range (:func:`scale_by_range`) so that the kernels see values of order 1 at any scale. The
fake implementations are in ``._ssim_fake``, the autograd in ``._ssim_autograd``.

Sections: public wrappers; range and padding; the SSIM pass.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _ssim_fake  # noqa: F401  (registers the fake implementations)
from ._modes import acc_dtype, call_kernel, dispatch, need_maps
from ._ssim_autograd import FORWARD, SSIMFunction, SSIMPairsFunction, metric_gram_composite, transformed
from .checks import check_batch, check_pair, check_params, check_range_for, check_window_fits


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
    """Structural similarity per image, fused forward and backward (docs/ops.md).

    Gaussian window of ``window_size`` taps (odd) with std ``sigma``, normalised in float64,
    applied separably; ``C1 = (k1 * data_range)**2``, ``C2 = (k2 * data_range)**2``; windowed
    variances clamped at 0. The value per image is the mean of the SSIM map over channels and
    positions: ``padding="valid"`` uses the positions where the window fits (scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` and
    ``pytorch_msssim.ssim(size_average=False)``), ``"same"`` zero-pads by ``window_size // 2``
    and averages all ``H x W`` positions (an image smaller than the window included).

    Args:
        x, y: ``(N, C, H, W)``, same shape and device, or one unbatched ``(C, H, W)`` pair (a 0-d
            result; so in every SSIM-family function); float32, float64, float16 or bfloat16
            (the half types compute in float32); any strides. With ``"valid"`` the window must
            fit in ``H`` and ``W``. Same dtype, or autocast's mix of a half type and float32 (a
            half prediction against a float32 target), which computes in float32.
        data_range: the range of the pixel values: a number > 0, a ``(min, max)`` pair
            (range ``max - min``), or a per-image tensor of shape ``(N,)`` (positive, finite;
            differentiable). The images are divided by it before the kernel (by the nearest
            power of two for a number, which is exact), so the value does not change when
            ``x``, ``y`` and ``data_range`` are scaled together, at any scale the dtype holds.

    Returns:
        ``(N,)`` in the input dtype (float32 for the half/float32 mix). Gradients flow to both
        ``x`` and ``y``, each in its input's dtype.

    Bad arguments raise ``TypeError`` (not a tensor, not a floating dtype) or ``ValueError``
    (a wrong shape or value), naming this function and the argument.

    Every autograd mode works (docs/ops.md, conventions): the fused backward kernel in reverse mode; double
    backward and the ``torch.func`` transforms through the same derivative written with the
    fused window filter and torch ops; forward mode as the fused gradient contracted with the
    tangents; ``vmap`` folds its batch into ``N``. Under ``torch.compile`` the custom op is
    traced as one node (reverse mode and double backward only).
    """
    return _ssim_value("ssim", x, y, window_size, sigma, k1, k2, data_range, padding, loss=False)


def one_minus_ssim(
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
    """``1 - ssim(x, y)`` computed without cancellation (the loss; :class:`nn.SSIMLoss`).

    Same arguments (``data_range`` included), errors and autograd modes as :func:`ssim`;
    dtypes as :func:`ssim`: a half prediction against a float32 target returns float32.
    """
    return _ssim_value("one_minus_ssim", x, y, window_size, sigma, k1, k2, data_range, padding, loss=True)


def _ssim_value(fn, x, y, window_size, sigma, k1, k2, data_range, padding, loss):
    out_dtype = check_pair(fn, x, y, unbatched=True)
    unbatched = x.dim() == 3  # one (C, H, W) pair: a 0-d value, as every SSIM-family function gives
    if unbatched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    x, y, ws, sigma, k1, k2, dr, same = _prepare(fn, x, y, window_size, sigma, k1, k2, data_range, padding)
    one_minus, _ = ssim_pass(x, y, ws, sigma, k1, k2, dr, same, cs_only=False, with_l1=False)
    v = one_minus.mean(1)  # the mean over channels of the per-channel 1 - SSIM
    v = (v if loss else 1 - v).to(out_dtype)
    return v.squeeze(0) if unbatched else v


def ssim_pairs(
    base: Tensor,
    others: Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=1.0,
    padding: str = "valid",
) -> Tensor:
    """``1 - SSIM(base[n], others[n, k])`` for K images per base, fused (docs/ops.md).

    The window statistics of ``base`` are computed once per tile and reused for all K, and
    ``1 - SSIM`` is evaluated from ``d = other - base`` without cancellation, so float32 keeps
    about 1e-3 relative accuracy for perturbations as small as 1e-4 (the finite-difference
    ``D'_j`` of the SSIM metric).

    Args:
        base: ``(N, C, H, W)``; float32, float64, float16 or bfloat16 (the half types compute
            in float32).
        others: ``(N, K, C, H, W)``, same dtype and device as ``base``; any strides.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim` (a per-image
            ``data_range`` has shape ``(N,)``).

    Returns:
        ``(N, K)`` in the input dtype. Differentiable in both inputs (the backward recomputes
        the SSIM maps of the K pairs), in every autograd mode as :func:`ssim`.
    """
    fn = "ssim_pairs"
    out_dtype = check_batch(fn, base, others, "base", "others")
    base, others, ws, sigma, k1, k2, dr, same = _prepare(
        fn, base, others, window_size, sigma, k1, k2, data_range, padding
    )
    padding = "same" if same else "valid"

    def op():
        return torch.ops.vaeiso.ssim_pairs(
            base, others, window_size=ws, sigma=sigma, k1=k1, k2=k2, data_range=dr, padding=padding
        )

    out = dispatch((base, others), op, op, lambda: SSIMPairsFunction.call(base, others, ws, sigma, k1, k2, dr, padding))
    return out.to(out_dtype)


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
    """Inner products of directions under the SSIM metric tensor ``G_x`` (docs/ops.md).

    ``G_x = 1/2 Hessian_y (1 - SSIM(x, y))`` at ``y = x``, so that
    ``1 - SSIM(x, x + d) = d^T G_x d + O(|d|^3)``. Per window,
    ``u^T G v = mean of mu_u mu_v / (2 mu_x**2 + C1) + (w*(u v) - mu_u mu_v) / (2 s_xx + C2)``.
    Computed for all pairs at once as two weighted Gram products (GEMMs) after filtering the K
    directions once; never K**2 passes.

    Args:
        x: ``(N, C, H, W)``, the point where the metric is taken; float32, float64, float16 or
            bfloat16 (the half types compute in float32).
        v: ``(N, K, C, H, W)`` directions, same dtype and device as ``x``.
        diagonal: return only ``v[n, k]^T G v[n, k]``.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim` (``u^T G v`` does
            not change when ``x``, ``v`` and ``data_range`` are scaled together).

    Returns:
        ``(N, K, K)`` (symmetric, positive semi-definite up to round-off), or ``(N, K)`` when
        ``diagonal``, in the input dtype. Differentiable in ``x`` and ``v`` in every autograd
        mode: under forward AD or a ``torch.func`` transform the same composite runs in Python
        over the fused window filter (an autograd.Function with jvp and vmap rules).
    """
    fn = "ssim_metric_gram"
    out_dtype = check_batch(fn, x, v, "x", "v")
    x, v, ws, sigma, k1, k2, dr, same = _prepare(fn, x, v, window_size, sigma, k1, k2, data_range, padding)

    def op():
        return torch.ops.vaeiso.ssim_metric_gram(
            x,
            v,
            diagonal=bool(diagonal),
            window_size=ws,
            sigma=sigma,
            k1=k1,
            k2=k2,
            data_range=dr,
            padding="same" if same else "valid",
        )

    # The C++ composite differentiates through ATen and ssim_filter's registered autograd; under
    # forward AD or a torch.func transform the same composite runs in Python instead.
    out = dispatch(
        (x, v),
        op,
        op,
        lambda: metric_gram_composite(x, v, bool(diagonal), ws, sigma, k1, k2, dr, same) if transformed(x, v) else op(),
    )
    return out.to(out_dtype)


# --------------------------------------------------------------------- range and padding


def scale_by_range(rng, *ts: Tensor):
    """``(ts divided by the range's scale, the kernel's data_range, the scale)``.

    SSIM is unchanged when the images and the range are scaled together, but the kernels'
    intermediates (products of four moments, ``C1 = (k1 * range)**2``) overflow or underflow
    in float32 far from range 1. A number range is divided by its nearest lower power of two
    ``s`` (exact in binary floating point, so no digit is lost, and ``ssim_pairs`` keeps its
    cancellation-free accuracy) and the kernel sees ``range / s`` in ``[1, 2)``; a range
    already in ``[1, 2)`` (the usual 1.0) costs no pass. A per-image tensor range divides
    each image by its range (computed in float32 for the half types) and the kernel sees 1;
    the division is ordinary torch ops, so every autograd mode reaches ``data_range`` too.
    """
    if isinstance(rng, Tensor):
        out = []
        for t in ts:
            acc = acc_dtype(t)
            d = rng.to(acc).reshape((-1,) + (1,) * (t.dim() - 1)) if rng.dim() == 1 else rng.to(acc)
            out.append(t.to(acc) / d)
        return tuple(out), 1.0, rng
    _, e = math.frexp(rng)
    if e == 1:  # range in [1, 2)
        return ts, rng, 1.0
    s = math.ldexp(1.0, e - 1)
    return tuple(t / s for t in ts), rng / s, s


def _prepare(fn, x, y, window_size, sigma, k1, k2, data_range, padding):
    """The SSIM arguments checked and the pair ``(x, y)`` (images first) made ready for the
    kernel: scaled by the range and padded when small. Returns ``(x, y, window_size, sigma, k1,
    k2, kernel data_range, same)``."""
    ws, sigma, k1, k2, rng, same = check_params(fn, window_size, sigma, k1, k2, data_range, padding)
    rng = check_range_for(fn, rng, x)
    same = check_window_fits(fn, x, ws, same)
    (x, y), dr, _ = scale_by_range(rng, x, y)
    (x, y), same = pad_small(x, y, window_size=ws, same=same)
    return x, y, ws, sigma, k1, k2, dr, same


def pad_small(*ts: Tensor, window_size: int, same: bool):
    """``(ts, same)``, with images smaller than the window under "same" padding zero-padded by
    ``window_size // 2`` in torch and evaluated "valid": the ``H x W`` positions and their
    windowed statistics are those of "same" padding (the kernels require the window to fit)."""
    H, W = ts[0].shape[-2], ts[0].shape[-1]
    if not same or (window_size <= H and window_size <= W):
        return ts, same
    p = window_size // 2
    return tuple(F.pad(t, (p, p, p, p)) for t in ts), False


# ------------------------------------------------------------------------------ the SSIM pass


def ssim_pass(x, y, window_size, sigma, k1, k2, data_range, same, *, cs_only, with_l1):
    """The one SSIM kernel pass on checked, range-scaled images: ``(one_minus, l1)``.

    ``one_minus`` ``(N, C)``: the mean over positions of ``1 - v``, ``v`` = SSIM or (``cs_only``)
    the contrast-structure term; ``l1`` ``(N, C)`` (``with_l1``, else empty): the mean
    ``|y - x|``. Both in the accumulation dtype (float32 for the half types and autocast's mix).
    Differentiable in every autograd mode (:class:`SSIMFunction`)."""
    args = (window_size, sigma, k1, k2, data_range, same, cs_only, with_l1)
    one_minus, l1, _ = dispatch(
        (x, y),
        lambda: torch.ops.vaeiso.ssim_forward(x, y, *args, need_maps(x, y)),
        lambda: call_kernel(FORWARD, x, y, *args, False),
        lambda: SSIMFunction.call(x, y, *args, need_maps(x, y)),
    )
    return one_minus, l1
