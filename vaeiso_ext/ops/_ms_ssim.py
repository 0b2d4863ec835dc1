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
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

from ._modes import call_kernel, compiling, fused_ok, merge_batch, no_derivative, split_batch, with_eager_twin
from ._ssim import _FilterFunction

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_HALF = (torch.float16, torch.bfloat16)
_NORMALIZE = ("relu", "simple", None)


def ms_ssim(x: Tensor, y: Tensor, *, weights: Sequence[float] = MS_SSIM_WEIGHTS, window_size: int = 11,
            sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
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
        window_size (odd), sigma, k1, k2, data_range (> 0): as in :func:`ssim`.

    Returns:
        ``(N,)``. Every autograd mode works (docs/ops.md, conventions): the fused backward kernel per level in
        reverse mode; double backward (``create_graph=True``), ``hessian`` and ``vmap`` over a
        backward through the same derivative written with the fused window filter and torch
        ops; forward mode (``forward_ad``, ``jvp``, ``jacfwd``) as the fused per-channel
        gradient contracted with the tangents; ``vmap`` folds its batch into ``N``. Under
        ``torch.compile`` each level's kernel is one custom-op node.
    """
    op = "ms_ssim"
    ws = _check_common(op, x, y, window_size, sigma, k1, k2, data_range)
    w = _check_weights(op, weights)
    if normalize not in _NORMALIZE:
        raise ValueError(f'{op}: normalize: expected "relu", "simple" or None, got {normalize!r}')
    m = len(w)
    need = (ws - 1) * 2 ** (m - 1)
    H, W = x.shape[2], x.shape[3]
    if min(H, W) <= need:
        raise ValueError(f"{op}: x: the image ({H}x{W}) is too small for {m} levels with window_size={ws}: "
                         f"the smaller side must exceed (window_size - 1) * 2**(levels - 1) = {need}")
    out_dtype, xc, yc = _compute_dtypes(op, x, y)
    kw = (ws, float(sigma), float(k1), float(k2), float(data_range))
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
                 sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
                 padding: str = "valid") -> Tensor:
    """``(1 - ssim_weight) * mean|x - y| + ssim_weight * (1 - SSIM(x, y))`` per image, fused
    (docs/ops.md).

    The photometric loss of 3D Gaussian splatting and many image-restoration models (weight 0.2
    there). The L1 mean is over all channels and pixels and is accumulated in the same pass that
    reads ``x`` and ``y`` for the SSIM statistics; ``1 - SSIM`` is computed without cancellation
    (:func:`one_minus_ssim`). The gradient of ``|d|`` at ``d = 0`` is 0.

    Args:
        x, y: ``(N, C, H, W)`` as in :func:`ms_ssim` (dtypes, strides).
        ssim_weight: the weight of ``1 - SSIM``, a finite number (usually in [0, 1]).
        window_size, sigma, k1, k2, data_range, padding ("valid" or "same"): as in :func:`ssim`.

    Returns:
        ``(N,)``, in every autograd mode as :func:`ms_ssim` (one kernel call instead of one per
        level; the L1 term's second derivative is 0 almost everywhere).
    """
    op = "ssim_l1_loss"
    ws = _check_common(op, x, y, window_size, sigma, k1, k2, data_range)
    if not math.isfinite(float(ssim_weight)):
        raise ValueError(f"{op}: ssim_weight: expected a finite number, got {ssim_weight!r}")
    if padding not in ("valid", "same"):
        raise ValueError(f'{op}: padding: expected "valid" or "same", got {padding!r}')
    if ws > x.shape[2] or ws > x.shape[3]:
        raise ValueError(f"{op}: window_size: the window ({ws}) is larger than the image "
                         f"(H={x.shape[2]}, W={x.shape[3]}); use a smaller window_size or larger images")
    out_dtype, xc, yc = _compute_dtypes(op, x, y)
    kw = (ws, float(sigma), float(k1), float(k2), float(data_range))
    om, l1, _ = _channels(xc, yc, kw, same=padding == "same", cs_only=False, with_l1=True)
    sw = float(ssim_weight)
    return ((1 - sw) * l1.mean(1) + sw * om.mean(1)).to(out_dtype)


# ------------------------------------------------------------------------------ helpers


def _channels(x, y, kw, *, same, cs_only, with_l1):
    args = (*kw, same, cs_only, with_l1)
    if compiling():  # one opaque node with the op's registered autograd
        return torch.ops.vaeiso.ssim_channels(x, y, *args, _need_maps(x, y))
    if no_derivative(x, y):
        return call_kernel(torch.ops.vaeiso.ssim_channels.default, x, y, *args, False)
    return _ChannelsFn.call(x, y, *args, _need_maps(x, y))


def _need_maps(x: Tensor, y: Tensor) -> bool:
    """Whether the forward should keep the derivative maps (some derivative will be asked for)."""
    return ((torch.is_grad_enabled() and (x.requires_grad or y.requires_grad))
            or forward_ad._current_level >= 0
            or is_functorch_wrapped_tensor(x) or is_functorch_wrapped_tensor(y))


def _channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only):
    """d(sum_{n,c} g_om[n,c] one_minus[n,c] + g_l1[n,c] l1[n,c]) / dx, /dy with differentiable
    torch ops over the fused window filter: the path for double backward, forward-over-reverse
    and vmap over the backward (ops/_ssim.py's _grads_torch, per channel and with the cs term).

    one_minus = mean over positions of 1 - v, v = A1 A2 / (B1 B2) (SSIM) or A2 / B2 (cs); the
    L1 term's derivative is sign(y - x) / (H W) (0 at 0), whose own derivative is 0 a.e."""

    def f(t, transpose=False):
        return _FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = f(x), f(y)
    vx, vy = f(x * x) - mx * mx, f(y * y) - my * my
    sxx, syy = torch.clamp(vx, min=0), torch.clamp(vy, min=0)  # as the kernels (docs/ops.md, conventions)
    sxy = f(x * y) - mx * my
    a2, b2 = 2 * sxy + c2, sxx + syy + c2
    n, c, ho, wo = mx.shape
    scale = g_om.reshape(n, c, 1, 1) * (-1.0 / (ho * wo))  # of the mean of 1 - v
    if cs_only:
        v = a2 / b2
        d_mx = d_my = None
    else:
        a1, b1 = 2 * mx * my + c1, mx * mx + my * my + c1
        v = (a1 * a2) / (b1 * b2)
        d_a1, d_b1 = scale * v / a1, -scale * v / b1
        d_mx, d_my = 2 * my * d_a1 + 2 * mx * d_b1, 2 * mx * d_a1 + 2 * my * d_b1
    d_a2, d_b2 = scale * v / a2, -scale * v / b2
    d_sxx, d_syy = d_b2 * (vx > 0), d_b2 * (vy > 0)
    d_sxy = 2 * d_a2
    # the moments' partials: s_xx = e_xx - mx^2, s_xy = e_xy - mx my
    m_x = -2 * mx * d_sxx - my * d_sxy + (0 if d_mx is None else d_mx)
    m_y = -2 * my * d_syy - mx * d_sxy + (0 if d_my is None else d_my)
    e_xy = f(d_sxy, True)
    gx = f(m_x, True) + 2 * x * f(d_sxx, True) + y * e_xy
    gy = f(m_y, True) + 2 * y * f(d_syy, True) + x * e_xy
    if g_l1 is not None:
        t = g_l1.reshape(n, c, 1, 1) * torch.sign(y - x) / (x.shape[2] * x.shape[3])
        gx, gy = gx - t, gy + t
    return gx, gy


def _channel_grads(g_om, g_l1, x, y, maps, args):
    """Per-channel gradients: the fused backward kernel when nothing differentiates through it,
    else _channel_grads_torch. g_om or g_l1 may be None (no gradient for that output)."""
    window_size, sigma, k1, k2, data_range, same, cs_only, with_l1 = args
    if not with_l1:
        g_l1 = None
    if g_om is None:
        g_om = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
    if not fused_ok(g_om, g_l1, x, y):
        return _channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only)
    if maps.numel() == 0 and x.shape[0] > 0:
        # The forward ran without maps (no gradient was expected then): recompute them.
        _, _, maps = call_kernel(torch.ops.vaeiso.ssim_channels.default, x, y, window_size, sigma, k1, k2,
                                 data_range, same, cs_only, False, True)
    gl1 = g_l1 if g_l1 is not None else x.new_empty((0,))
    return call_kernel(torch.ops.vaeiso.ssim_channels_backward.default, g_om.contiguous(), gl1.contiguous(),
                       x, y, maps, window_size, sigma, same)


def _image_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=(-2, -1))  # per (image, channel)


@with_eager_twin
class _ChannelsFn(torch.autograd.Function):
    """``ssim_channels`` in every autograd mode: the fused backward kernel in reverse mode,
    _channel_grads_torch where the derivative is itself differentiated or batched, forward mode
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
                d_om = _image_dot(gr, t) if d_om is None else d_om + _image_dot(gr, t)
        # no l1 asked for: a tangent for its empty output all the same (None there trips an
        # internal assert of forward AD in torch 2.14)
        d_l1 = x.new_zeros((0,))
        if ctx.args[7]:
            dt = (ty if ty is not None else 0) - (tx if tx is not None else 0)
            d_l1 = _image_dot(torch.sign(y - x), dt) / (x.shape[2] * x.shape[3])
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


def _check_common(op, x, y, window_size, sigma, k1, k2, data_range) -> int:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name}: expected a Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name}: expected a floating-point tensor, got {t.dtype}")
    if y.shape != x.shape:
        raise ValueError(f"{op}: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"{op}: y: expected a tensor on {x.device} (the device of x), got {y.device}")
    if x.shape[1] < 1:
        raise ValueError(f"{op}: x: expected at least one channel, got shape {tuple(x.shape)}")
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"{op}: window_size: expected an odd positive integer, got {window_size!r}")
    for name, value in (("sigma", sigma), ("k1", k1), ("k2", k2), ("data_range", data_range)):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{op}: {name}: expected a positive number, got {value!r}")
    return window_size


def _check_weights(op, weights) -> tuple[float, ...]:
    try:
        w = tuple(float(v) for v in weights)
    except TypeError:
        raise TypeError(f"{op}: weights: expected a sequence of numbers, got {weights!r}") from None
    if len(w) == 0 or not all(math.isfinite(v) and v >= 0 for v in w):
        raise ValueError(f"{op}: weights: expected one or more finite numbers >= 0, got {weights!r}")
    return w


def _compute_dtypes(op, x, y):
    """(output dtype, x, y in the compute dtype): half types compute in float32; a half image
    against a float32 one (autocast's mix) computes and returns float32."""
    if x.dtype == y.dtype:
        if x.dtype in _HALF:
            return x.dtype, x.float(), y.float()
        return x.dtype, x, y
    if {x.dtype, y.dtype} <= set(_HALF) | {torch.float32}:
        return torch.float32, x.float(), y.float()
    raise TypeError(f"{op}: y: expected dtype {x.dtype} (the dtype of x), or a half type against float32, "
                    f"got {y.dtype}")


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


def _no_double_backward_setup(ctx, inputs, output):
    pass


def _no_double_backward(ctx, *grads):
    # ops.ms_ssim / ssim_l1_loss never reach this: with create_graph their backward runs
    # _channel_grads_torch instead of this kernel. Direct callers of the raw op get an error.
    raise RuntimeError("vaeiso::ssim_channels_backward: the raw backward kernel is not differentiable; "
                       "second derivatives of ms_ssim and ssim_l1_loss go through vaeiso_ext.ops")


torch.library.register_autograd("vaeiso::ssim_channels_backward", _no_double_backward,
                                setup_context=_no_double_backward_setup)
