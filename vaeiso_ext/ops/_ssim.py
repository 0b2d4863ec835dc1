"""SSIM family: wrappers, fake implementations and autograd for ``torch.ops.vaeiso.ssim*``."""

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, data_range: float = 1.0, padding: str = "valid") -> Tensor:
    """Structural similarity per image, fused forward and backward (SPEC §3.2).

    Gaussian window of ``window_size`` taps (odd) with std ``sigma``, normalised in float64,
    applied separably; ``C1 = (k1 * data_range)**2``, ``C2 = (k2 * data_range)**2``; windowed
    variances clamped at 0. The value per image is the mean of the SSIM map over channels and
    positions: ``padding="valid"`` uses the positions where the window fits (scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` and
    ``pytorch_msssim.ssim(size_average=False)``), ``"same"`` zero-pads by ``window_size // 2``
    and averages all ``H x W`` positions.

    Args:
        x, y: ``(N, C, H, W)``, same shape and device; float32, float64, float16 or bfloat16
            (the half types compute in float32); any strides. The window must fit in ``H`` and
            ``W``. Same dtype, or autocast's mix of a half type and float32 (a half prediction
            against a float32 target), which computes in float32.

    Returns:
        ``(N,)`` in the input dtype (float32 for the half/float32 mix). Gradients flow to both
        ``x`` and ``y``, each in its input's dtype.
    """
    return torch.ops.vaeiso.ssim(x, y, window_size=window_size, sigma=sigma, k1=k1, k2=k2,
                                 data_range=data_range, padding=padding)


def one_minus_ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5,
                   k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
                   padding: str = "valid") -> Tensor:
    """``1 - ssim(x, y)`` computed without cancellation (the loss; :class:`nn.SSIMLoss`).

    Dtypes as :func:`ssim`: a half prediction against a float32 target returns float32.
    """
    same = _parse_padding("ssim", padding)
    need_maps = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    out, _ = torch.ops.vaeiso.ssim_forward(x, y, window_size, sigma, k1, k2, data_range, same, True,
                                          need_maps)
    return out


def ssim_pairs(base: Tensor, others: Tensor, *, window_size: int = 11, sigma: float = 1.5,
               k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
               padding: str = "valid") -> Tensor:
    """``1 - SSIM(base[n], others[n, k])`` for K images per base, fused (SPEC §3.2).

    The window statistics of ``base`` are computed once per tile and reused for all K, and
    ``1 - SSIM`` is evaluated from ``d = other - base`` without cancellation, so float32 keeps
    about 1e-3 relative accuracy for perturbations as small as 1e-4 (the finite-difference
    ``D'_j`` of the SSIM metric).

    Args:
        base: ``(N, C, H, W)``; float32, float64, float16 or bfloat16 (the half types compute
            in float32).
        others: ``(N, K, C, H, W)``, same dtype and device as ``base``; any strides.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim`.

    Returns:
        ``(N, K)`` in the input dtype. Differentiable in both inputs (the backward recomputes
        the SSIM maps of the K pairs).
    """
    return torch.ops.vaeiso.ssim_pairs(base, others, window_size=window_size, sigma=sigma, k1=k1,
                                       k2=k2, data_range=data_range, padding=padding)


def ssim_metric_gram(x: Tensor, v: Tensor, *, diagonal: bool = False, window_size: int = 11,
                     sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                     data_range: float = 1.0, padding: str = "valid") -> Tensor:
    """Inner products of directions under the SSIM metric tensor ``G_x`` (SPEC §3.3).

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
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim`.

    Returns:
        ``(N, K, K)`` (symmetric, positive semi-definite up to round-off), or ``(N, K)`` when
        ``diagonal``, in the input dtype. Differentiable in ``x`` and ``v``.
    """
    return torch.ops.vaeiso.ssim_metric_gram(x, v, diagonal=diagonal, window_size=window_size,
                                             sigma=sigma, k1=k1, k2=k2, data_range=data_range,
                                             padding=padding)


# ------------------------------------------------------------------ shape rules (fake impls)


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _HALF else x.dtype


def _loss_pair_dtype(op: str, x: Tensor, y: Tensor) -> torch.dtype:
    # Mirrors loss_pair_dtype in csrc/common.h: the same dtype, or autocast's half / float32 mix
    # (computed in float32).
    if x.dtype == y.dtype:
        return x.dtype
    torch._check((x.dtype in _HALF and y.dtype == torch.float32) or (x.dtype == torch.float32 and y.dtype in _HALF),
                 lambda: f"{op}: y: expected dtype {x.dtype} (the dtype of x), or float32 against a "
                         f"float16/bfloat16 x (autocast's mix), got {y.dtype}")
    return torch.float32


def _parse_padding(op: str, padding: str) -> bool:
    if padding not in ("valid", "same"):
        raise ValueError(f'{op}: padding: expected "valid" or "same", got {padding!r}')
    return padding == "same"


def _check_image(op: str, x: Tensor, name: str, window_size: int) -> None:
    torch._check(x.dim() == 4, lambda: f"{op}: {name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    torch._check(window_size >= 1 and window_size % 2 == 1,
                 lambda: f"{op}: window_size: expected an odd positive integer, got {window_size}")
    torch._check(window_size <= x.shape[2] and window_size <= x.shape[3],
                 lambda: f"{op}: window_size: the window ({window_size}) is larger than the image "
                         f"(H={x.shape[2]}, W={x.shape[3]})")


def _out_hw(h, w, window_size: int, same: bool):
    pad = window_size // 2 if same else 0
    return h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1


@torch.library.register_fake("vaeiso::ssim_forward")
def _ssim_forward_fake(x, y, window_size, sigma, k1, k2, data_range, same_padding, loss, need_maps):
    _check_image("ssim", x, "x", window_size)
    torch._check(y.shape == x.shape, lambda: f"ssim: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}")
    dt = _loss_pair_dtype("ssim", x, y)
    N, C, H, W = x.shape
    ho, wo = _out_hw(H, W, window_size, same_padding)
    out = x.new_empty((N,), dtype=dt)
    maps = x.new_empty((N, C, 4, ho, wo) if need_maps else (0,), dtype=torch.float32 if dt in _HALF else dt)
    return out, maps


@torch.library.register_fake("vaeiso::ssim_backward")
def _ssim_backward_fake(grad, x, y, maps, window_size, sigma, same_padding):
    return x.new_empty(x.shape), y.new_empty(y.shape)


@torch.library.register_fake("vaeiso::ssim_pairs")
def _ssim_pairs_fake(base, others, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0,
                     padding="valid"):
    _parse_padding("ssim_pairs", padding)
    _check_image("ssim_pairs", base, "base", window_size)
    torch._check(others.dim() == 5 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
                 lambda: f"ssim_pairs: others: expected shape (N, K, C, H, W) matching base {tuple(base.shape)}, "
                         f"got {tuple(others.shape)}")
    return base.new_empty((base.shape[0], others.shape[1]))


@torch.library.register_fake("vaeiso::ssim_filter")
def _ssim_filter_fake(t, window_size, sigma, same_padding, transpose):
    h, w = t.shape[-2], t.shape[-1]
    pad = window_size // 2 if same_padding else 0
    if transpose:
        oh, ow = h + window_size - 1 - 2 * pad, w + window_size - 1 - 2 * pad
    else:
        oh, ow = h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1
    return t.new_empty(tuple(t.shape[:-2]) + (oh, ow))


# ------------------------------------------------------------------------------- autograd


def _forward_setup(ctx, inputs, output):
    x, y, window_size, sigma, k1, k2, data_range, same, loss, _need_maps = inputs
    _out, maps = output
    ctx.save_for_backward(x, y, maps)
    ctx.args = (window_size, sigma, k1, k2, data_range, same, loss)
    ctx.mark_non_differentiable(maps)


def _forward_backward(ctx, grad_out, _grad_maps):
    x, y, maps = ctx.saved_tensors
    window_size, sigma, k1, k2, data_range, same, loss = ctx.args
    if grad_out is None or not any(ctx.needs_input_grad[:2]):
        return (None,) * 10
    if maps.numel() == 0 and x.shape[0] > 0:
        # The forward ran without maps (no gradient was expected then): recompute them.
        _, maps = torch.ops.vaeiso.ssim_forward(x, y, window_size, sigma, k1, k2, data_range, same,
                                                loss, True)
    gx, gy = torch.ops.vaeiso.ssim_backward(grad_out, x, y, maps, window_size, sigma, same)
    return (gx if ctx.needs_input_grad[0] else None, gy if ctx.needs_input_grad[1] else None) + (None,) * 8


torch.library.register_autograd("vaeiso::ssim_forward", _forward_backward, setup_context=_forward_setup)


def _pairs_setup(ctx, inputs, keyword_only_inputs, output):
    base, others = inputs
    ctx.save_for_backward(base, others)
    ctx.kw = dict(keyword_only_inputs)


def _pairs_backward(ctx, grad):
    base, others = ctx.saved_tensors
    kw = ctx.kw
    if not any(ctx.needs_input_grad[:2]):
        return None, None
    N, K = others.shape[:2]
    same = _parse_padding("ssim_pairs", kw["padding"])
    xb = base.unsqueeze(1).expand(others.shape).reshape((N * K,) + tuple(base.shape[1:]))
    yo = others.reshape(xb.shape)
    args = (kw["window_size"], kw["sigma"], kw["k1"], kw["k2"], kw["data_range"], same)
    _, maps = torch.ops.vaeiso.ssim_forward(xb, yo, *args, True, True)
    gx, gy = torch.ops.vaeiso.ssim_backward(grad.reshape(N * K), xb, yo, maps, args[0], args[1], same)
    gb = gx.view(others.shape).sum(1) if ctx.needs_input_grad[0] else None
    go = gy.view(others.shape) if ctx.needs_input_grad[1] else None
    return gb, go


# The keyword-only arguments reach setup_context as their own dict.
torch.library.register_autograd("vaeiso::ssim_pairs", _pairs_backward, setup_context=_pairs_setup)


def _filter_setup(ctx, inputs, output):
    t, window_size, sigma, same, transpose = inputs
    ctx.args = (window_size, sigma, same, not transpose)


def _filter_backward(ctx, grad):
    # The filter is linear: its adjoint is the same op with `transpose` flipped.
    return (torch.ops.vaeiso.ssim_filter(grad, *ctx.args), None, None, None, None)


torch.library.register_autograd("vaeiso::ssim_filter", _filter_backward, setup_context=_filter_setup)


def _no_double_backward_setup(ctx, inputs, output):
    pass


def _no_double_backward(ctx, *grads):
    raise RuntimeError("vaeiso::ssim_backward: the second derivative of ssim is not implemented "
                       "(use vaeiso_ext.reference.ssim for higher-order derivatives)")


torch.library.register_autograd("vaeiso::ssim_backward", _no_double_backward,
                                setup_context=_no_double_backward_setup)
