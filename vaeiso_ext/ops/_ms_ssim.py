"""MS-SSIM and the fused SSIM + L1 loss (docs/ops.md): wrappers, fake implementation and
autograd of ``torch.ops.vaeiso.ssim_channels``, the per-(image, channel) SSIM pass they share.

One kernel pass per pyramid level reads both images once and returns the mean of ``1 - v`` per
channel (``v`` the contrast-structure term ``cs`` or SSIM, computed without cancellation), the
mean ``|y - x|`` when asked (the L1 term of :func:`ssim_l1_loss`, read in the same pass), and the
derivative maps for the backward. The average-pooling pyramid is ``torch.nn.functional.avg_pool2d``
(its adjoint in the backward is ATen's ``avg_pool2d_backward``, through autograd); the
normalisation and the product over levels act on ``(levels, N, C)`` numbers only and are plain
torch ops, run in float64.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._modes import HALF, call_kernel, dispatch, fused_ok, merge_batch, need_maps
from ._modes import register_no_double_backward, split_batch, with_eager_twin
from ._ssim import (channel_grads_torch, check_finite, check_pair, check_params, check_range_for, check_window_fits,
                    pad_small, scale_by_range)

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_NORMALIZE = ("relu", "simple", None)


def ms_ssim(x: Tensor, y: Tensor, *, weights: Sequence[float] = MS_SSIM_WEIGHTS, window_size: int = 11,
            sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, data_range=1.0,
            normalize: Optional[str] = "relu") -> Tensor:
    """Multi-scale SSIM per image (Wang, Simoncelli, Bovik 2003), fused (docs/ops.md).

    As ``pytorch_msssim.ms_ssim(x, y, data_range=..., size_average=False, win_size=...,
    weights=..., K=(k1, k2))`` computes it (the convention of CompressAI and most compression
    papers). With ``m = len(weights)`` levels: at levels ``1 .. m-1`` the contrast-structure term
    per channel ``cs_c = mean over valid positions of (2 s_xy + C2) / (s_xx + s_yy + C2)``, then
    both images go one level down by ``avg_pool2d(kernel_size=2, padding=(H % 2, W % 2))`` (zero
    padding counted in the average); at level ``m`` the SSIM per channel (:func:`ssim`, "valid").
    The value is ``mean over channels c of prod_l v_{l,c} ** w_l``.

    ``normalize``:

    - ``"relu"`` (default, pytorch_msssim): each ``v`` is clamped at 0 first. Where a clamped
      ``v`` is 0 its gradient is 0 (a subgradient), never ``0 * inf``: finite values and
      gradients for any finite input.
    - ``"simple"``: ``(v + 1) / 2`` (torchmetrics' option; smooth, in [0, 1]). It is clamped at 0
      like "relu" against round-off. Note that torchmetrics'
      ``multiscale_structural_similarity_index_measure`` differs in three conventions: it
      averages ``cs`` and SSIM over channels *before* the product over levels (we, like
      pytorch_msssim, take the product per channel, then the mean over channels); it pools with
      ``avg_pool2d(2)`` without padding (odd sizes lose their last row/column); and it takes the
      last level's SSIM over all ``H x W`` positions of the reflect-padded image (its ``cs``
      terms, like ours, over the valid positions). The tests check that these are the only
      differences.
    - ``None``: ``v`` as is. A negative ``v`` to a fractional power gives NaN (and ``v = 0`` an
      infinite gradient): for bit-compatibility studies only, never for training.

    Args:
        x, y: ``(N, C, H, W)``, same shape and device; float32, float64, float16 or bfloat16
            (the half types are computed in float32 and returned in their dtype; a half image
            against a float32 one is computed and returned in float32); any strides. The smaller
            side must exceed ``(window_size - 1) * 2**(m - 1)`` (160 for the defaults).
        weights: the exponents ``w_l``, one per level (any number >= 1, each finite and >= 0);
            one weight gives ``ssim ** w`` per channel.
        window_size (odd), sigma, k1, k2, data_range (a number, a ``(min, max)`` pair or a
            per-image ``(N,)`` tensor; the value does not change when ``x``, ``y`` and
            ``data_range`` are scaled together): as in :func:`ssim`.

    Returns:
        ``(N,)``. Every autograd mode works (docs/ops.md, conventions): the fused backward kernel per level in
        reverse mode; double backward (``create_graph=True``), ``hessian`` and ``vmap`` over a
        backward through the same derivative written with the fused window filter and torch
        ops; forward mode (``forward_ad``, ``jvp``, ``jacfwd``) as the fused per-channel
        gradient contracted with the tangents; ``vmap`` folds its batch into ``N``. Under
        ``torch.compile`` each level's kernel is one custom-op node.
    """
    fn = "ms_ssim"
    out_dtype = check_pair(fn, x, y)
    ws, sigma, k1, k2, rng, _ = check_params(fn, window_size, sigma, k1, k2, data_range)
    w = check_weights(fn, weights)
    if normalize not in _NORMALIZE:
        raise ValueError(f'{fn}: normalize: expected "relu", "simple" or None, got {normalize!r}')
    rng = check_range_for(fn, rng, x)
    m = len(w)
    need = (ws - 1) * 2 ** (m - 1)
    H, W = x.shape[2], x.shape[3]
    if min(H, W) <= need:
        raise ValueError(f"{fn}: x: the image ({H}x{W}) is too small for {m} levels with window_size={ws}: "
                         f"the smaller side must exceed (window_size - 1) * 2**(levels - 1) = {need}")
    xc, yc = _compute(x, y)
    (xc, yc), dr, _ = scale_by_range(rng, xc, yc)
    kw = (ws, sigma, k1, k2, dr)
    vals = []
    for level in range(m):
        last = level == m - 1
        om, _, _ = _channels(xc, yc, kw, same=False, cs_only=not last, with_l1=False)
        vals.append(1 - om.double())
        if not last:
            pad = (xc.shape[2] % 2, xc.shape[3] % 2)
            xc = F.avg_pool2d(xc, kernel_size=2, padding=pad)
            yc = F.avg_pool2d(yc, kernel_size=2, padding=pad)
    v = torch.stack(vals)  # (m, N, C)
    if normalize == "simple":
        v = (v + 1) / 2
    wt = torch.tensor(w, dtype=v.dtype, device=v.device).view(-1, 1, 1)
    if normalize is None:
        terms = v**wt
    else:
        # v**w where v > 0 (or NaN), else 0**w (1 for w = 0, else 0) with a zero gradient: the inner
        # where keeps pow's gradient (w v**(w-1)) finite where it is masked out.
        pos = ~(v <= 0)  # NaN stays NaN
        terms = torch.where(pos, torch.where(pos, v, torch.ones_like(v)) ** wt, (wt == 0).to(v.dtype))
    return terms.prod(0).mean(1).to(out_dtype)


def ssim_l1_loss(x: Tensor, y: Tensor, *, ssim_weight: float = 0.2, window_size: int = 11,
                 sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, data_range=1.0,
                 padding: str = "same") -> Tensor:
    """``(1 - ssim_weight) * mean|x - y| + ssim_weight * (1 - SSIM(x, y))`` per image, fused
    (docs/ops.md).

    The photometric loss of 3D Gaussian splatting and many image-restoration models (weight 0.2
    there), with 3DGS's and fused-ssim's convention by default: ``padding="same"`` (zero padding
    by ``window_size // 2``, the SSIM map averaged over all ``H x W`` pixels, images smaller
    than the window included) and one unbatched ``(C, H, W)`` image pair accepted. The L1 mean
    is over all channels and pixels and is accumulated in the same pass that reads ``x`` and
    ``y`` for the SSIM statistics; ``1 - SSIM`` is computed without cancellation
    (:func:`one_minus_ssim`). The gradient of ``|d|`` at ``d = 0`` is 0.

    Args:
        x, y: ``(N, C, H, W)``, or one ``(C, H, W)`` pair, dtypes and strides as in
            :func:`ms_ssim`.
        ssim_weight: the weight of ``1 - SSIM``, a finite number (usually in [0, 1]).
        window_size, sigma, k1, k2, data_range, padding ("same", the default, or "valid"): as in
            :func:`ssim`. The SSIM term does not change when ``x``, ``y`` and ``data_range`` are
            scaled together; the L1 term is in the images' units.

    Returns:
        ``(N,)``, or a 0-d tensor for an unbatched pair (3DGS's scalar loss), in every autograd
        mode as :func:`ms_ssim` (one kernel call instead of one per level; the L1 term's second
        derivative is 0 almost everywhere).
    """
    fn = "ssim_l1_loss"
    out_dtype = check_pair(fn, x, y, unbatched=True)
    ws, sigma, k1, k2, rng, same = check_params(fn, window_size, sigma, k1, k2, data_range, padding)
    sw = check_finite(fn, "ssim_weight", ssim_weight)
    unbatched = x.dim() == 3
    if unbatched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    rng = check_range_for(fn, rng, x)
    same = check_window_fits(fn, x, ws, same)
    xc, yc = _compute(x, y)
    (xc, yc), dr, scale = scale_by_range(rng, xc, yc)
    hw = xc.shape[2] * xc.shape[3]
    (xc, yc), same = pad_small(xc, yc, window_size=ws, same=same)
    om, l1, _ = _channels(xc, yc, (ws, sigma, k1, k2, dr), same=same, cs_only=False, with_l1=True)
    # the kernel's L1 is of the scaled images (mean over the padded ones for a small image):
    # back to the images' units and to the mean over their own H x W pixels
    l1 = l1.mean(1) * (xc.shape[2] * xc.shape[3] / hw)
    l1 = l1 * (scale if not isinstance(scale, Tensor) else scale.to(l1.dtype))
    out = ((1 - sw) * l1 + sw * om.mean(1)).to(out_dtype)
    return out.squeeze(0) if unbatched else out


# ------------------------------------------------------------------------------ helpers


def _channels(x, y, kw, *, same, cs_only, with_l1):
    args = (*kw, same, cs_only, with_l1)
    return dispatch((x, y),
                    lambda: torch.ops.vaeiso.ssim_channels(x, y, *args, need_maps(x, y)),
                    lambda: call_kernel(torch.ops.vaeiso.ssim_channels.default, x, y, *args, False),
                    lambda: _ChannelsFn.call(x, y, *args, need_maps(x, y)))


def _channel_grads(g_om, g_l1, x, y, maps, args):
    """Per-channel gradients: the fused backward kernel when nothing differentiates through it,
    else channel_grads_torch (ops/_ssim.py). g_om or g_l1 may be None (no gradient for that output)."""
    window_size, sigma, k1, k2, data_range, same, cs_only, with_l1 = args
    if not with_l1:
        g_l1 = None
    if g_om is None:
        g_om = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
    if not fused_ok(g_om, g_l1, x, y):
        return channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only)
    if maps.numel() == 0 and x.shape[0] > 0:
        # The forward ran without maps (no gradient was expected then): recompute them.
        _, _, maps = call_kernel(torch.ops.vaeiso.ssim_channels.default, x, y, window_size, sigma, k1, k2,
                                 data_range, same, cs_only, False, True)
    gl1 = g_l1 if g_l1 is not None else x.new_empty((0,))
    return call_kernel(torch.ops.vaeiso.ssim_channels_backward.default, g_om.contiguous(), gl1.contiguous(),
                       x, y, maps, window_size, sigma, same)


def _plane_dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products per (image, channel) plane: ``(N, C, H, W)`` pairs to ``(N, C)``."""
    return (a * b).sum(dim=(-2, -1))


@with_eager_twin
class _ChannelsFn(torch.autograd.Function):
    """``ssim_channels`` in every autograd mode: the fused backward kernel in reverse mode,
    channel_grads_torch where the derivative is itself differentiated or batched, forward mode
    as the per-channel gradient contracted with the tangents, vmap folded into N."""

    @staticmethod
    def forward(x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, need_maps):
        return call_kernel(torch.ops.vaeiso.ssim_channels.default, x, y, window_size, sigma, k1, k2,
                           data_range, same, cs_only, with_l1, need_maps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _channels_setup(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output[2])

    @staticmethod
    def backward(ctx, grad_om, grad_l1, _grad_maps):
        return _channels_backward(ctx, grad_om, grad_l1, _grad_maps)

    @staticmethod
    def jvp(ctx, tx, ty, *_):
        x, y, maps = ctx.saved_tensors
        # Each (image, channel) value depends on its own plane only, so the backward with unit
        # weights gives every row of the Jacobian at once.
        ones = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        gx, gy = _channel_grads(ones, None, x, y, maps, ctx.args[:7] + (False,))
        d_om = None
        for gr, t in ((gx, tx), (gy, ty)):
            if t is not None:
                d_om = _plane_dot(gr, t) if d_om is None else d_om + _plane_dot(gr, t)
        # no l1 asked for: a tangent for its empty output all the same (None there trips an
        # internal assert of forward AD in torch 2.14)
        d_l1 = x.new_zeros((0,))
        if ctx.args[7]:
            dt = (ty if ty is not None else 0) - (tx if tx is not None else 0)
            d_l1 = _plane_dot(torch.sign(y - x), dt) / (x.shape[2] * x.shape[3])
        return d_om, d_l1, None

    @staticmethod
    def vmap(info, in_dims, x, y, *args):
        # the vmapped batch joins N (an unbatched image is expanded): one fused call
        B = info.batch_size
        outs = _ChannelsFn.call(merge_batch(x, in_dims[0], B), merge_batch(y, in_dims[1], B), *args)
        res, dims = [], []
        for t in outs:
            if t.dim() == 1:  # an output not asked for: one empty (0,) tensor, unbatched
                res.append(t)
                dims.append(None)
            else:
                res.append(split_batch(t, B))
                dims.append(0)
        return tuple(res), tuple(dims)


def check_weights(op, weights) -> tuple[float, ...]:
    try:
        w = tuple(float(v) for v in weights)
    except TypeError:
        raise TypeError(f"{op}: weights: expected a sequence of numbers, got {weights!r}") from None
    if len(w) == 0 or not all(math.isfinite(v) and v >= 0 for v in w):
        raise ValueError(f"{op}: weights: expected one or more finite numbers >= 0, got {weights!r}")
    return w


def _compute(x: Tensor, y: Tensor):
    """``x, y`` in the compute dtype (the pair is checked): float32 for the half types and
    for autocast's half / float32 mix (the kernel takes float32 and float64 only)."""
    if x.dtype == y.dtype and x.dtype not in HALF:
        return x, y
    return x.float(), y.float()


# --------------------------------------------------------------------- fake and autograd


@torch.library.register_fake("vaeiso::ssim_channels")
def _channels_fake(x, y, window_size, sigma, k1, k2, data_range, same_padding, cs_only, with_l1, need_maps):
    torch._check(x.dim() == 4, lambda: f"ssim_channels: x: expected a 4-D tensor, got shape {tuple(x.shape)}")
    torch._check(y.shape == x.shape, lambda: f"ssim_channels: y: expected shape {tuple(x.shape)}, got {tuple(y.shape)}")
    N, C, H, W = x.shape
    pad = window_size // 2 if same_padding else 0
    ho, wo = H + 2 * pad - window_size + 1, W + 2 * pad - window_size + 1
    one_minus = x.new_empty((N, C))
    l1 = x.new_empty((N, C) if with_l1 else (0,))
    maps = x.new_empty((N, C, 4, ho, wo) if need_maps else (0,))
    return one_minus, l1, maps


@torch.library.register_fake("vaeiso::ssim_channels_backward")
def _channels_backward_fake(grad, grad_l1, x, y, maps, window_size, sigma, same_padding):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _channels_setup(ctx, inputs, output):
    x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, _need_maps = inputs
    _om, _l1, maps = output
    ctx.save_for_backward(x, y, maps)
    ctx.args = (window_size, sigma, k1, k2, data_range, same, cs_only, with_l1)
    ctx.mark_non_differentiable(maps)
    # No zero-filled gradient for maps (or for an unused output): the backward takes None.
    ctx.set_materialize_grads(False)


def _channels_backward(ctx, grad_om, grad_l1, _grad_maps=None):
    x, y, maps = ctx.saved_tensors
    none = (None,) * 9
    if not any(ctx.needs_input_grad[:2]) or (grad_om is None and grad_l1 is None):
        return (None, None) + none
    gx, gy = _channel_grads(grad_om, grad_l1, x, y, maps, ctx.args)
    return (gx if ctx.needs_input_grad[0] else None, gy if ctx.needs_input_grad[1] else None) + none


torch.library.register_autograd("vaeiso::ssim_channels", _channels_backward, setup_context=_channels_setup)


# ops.ms_ssim / ssim_l1_loss never reach this: with create_graph their backward runs
# channel_grads_torch instead of this kernel. Direct callers of the raw op get an error.
register_no_double_backward(
    "vaeiso::ssim_channels_backward",
    "vaeiso::ssim_channels_backward: the raw backward kernel is not differentiable; second derivatives "
    "of ms_ssim and ssim_l1_loss go through vaeiso_ext.ops")
