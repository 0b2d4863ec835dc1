"""SSIM family: wrappers, fake implementations and autograd for ``torch.ops.vaeiso.ssim*``."""

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

from ._modes import HALF as _HALF
from ._modes import call_kernel, with_eager_twin, compiling, fused_ok, merge_batch, no_derivative, split_batch


def ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, data_range: float = 1.0, padding: str = "valid") -> Tensor:
    """Structural similarity per image, fused forward and backward (docs/ops.md).

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

    Every autograd mode works (docs/ops.md, conventions): the fused backward kernel in reverse mode; double
    backward and the ``torch.func`` transforms through the same derivative written with the
    fused window filter and torch ops; forward mode as the fused gradient contracted with the
    tangents; ``vmap`` folds its batch into ``N``. Under ``torch.compile`` the custom op is
    traced as one node (reverse mode and double backward only).
    """
    if compiling():
        return torch.ops.vaeiso.ssim(x, y, window_size=window_size, sigma=sigma, k1=k1, k2=k2,
                                     data_range=data_range, padding=padding)
    same = _parse_padding("ssim", padding)
    if no_derivative(x, y):
        return call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, False, False)[0]
    return _SSIMFunction.call(x, y, window_size, sigma, k1, k2, data_range, same, False,
                               _need_maps(x, y))[0]


def one_minus_ssim(x: Tensor, y: Tensor, *, window_size: int = 11, sigma: float = 1.5,
                   k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
                   padding: str = "valid") -> Tensor:
    """``1 - ssim(x, y)`` computed without cancellation (the loss; :class:`nn.SSIMLoss`).

    Same arguments and autograd modes as :func:`ssim`; dtypes as :func:`ssim`: a half
    prediction against a float32 target returns float32.
    """
    same = _parse_padding("ssim", padding)
    if compiling():
        return torch.ops.vaeiso.ssim_forward(x, y, window_size, sigma, k1, k2, data_range, same, True,
                                             _need_maps(x, y))[0]
    if no_derivative(x, y):
        return call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, True, False)[0]
    return _SSIMFunction.call(x, y, window_size, sigma, k1, k2, data_range, same, True,
                               _need_maps(x, y))[0]


def ssim_pairs(base: Tensor, others: Tensor, *, window_size: int = 11, sigma: float = 1.5,
               k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0,
               padding: str = "valid") -> Tensor:
    """``1 - SSIM(base[n], others[n, k])`` for K images per base, fused (docs/ops.md).

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
        the SSIM maps of the K pairs), in every autograd mode as :func:`ssim`.
    """
    if compiling() or no_derivative(base, others):
        return torch.ops.vaeiso.ssim_pairs(base, others, window_size=window_size, sigma=sigma, k1=k1,
                                           k2=k2, data_range=data_range, padding=padding)
    return _SSIMPairsFunction.call(base, others, window_size, sigma, k1, k2, data_range, padding)


def ssim_metric_gram(x: Tensor, v: Tensor, *, diagonal: bool = False, window_size: int = 11,
                     sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                     data_range: float = 1.0, padding: str = "valid") -> Tensor:
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
        window_size, sigma, k1, k2, data_range, padding: as in :func:`ssim`.

    Returns:
        ``(N, K, K)`` (symmetric, positive semi-definite up to round-off), or ``(N, K)`` when
        ``diagonal``, in the input dtype. Differentiable in ``x`` and ``v`` in every autograd
        mode: under forward AD or a ``torch.func`` transform the same composite runs in Python
        over the fused window filter (an autograd.Function with jvp and vmap rules).
    """
    if not compiling() and _transformed(x, v):
        return _metric_gram_composite(x, v, diagonal, window_size, sigma, k1, k2, data_range, padding)
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


def _check_device(op: str, ref: Tensor, ref_name: str, **others: Tensor) -> None:
    for name, t in others.items():
        torch._check(t.device == ref.device, lambda: f"{op}: {name}: expected a tensor on {ref.device} "
                     f"(the device of {ref_name}), got {t.device}")


def _out_hw(h, w, window_size: int, same: bool):
    pad = window_size // 2 if same else 0
    return h + 2 * pad - window_size + 1, w + 2 * pad - window_size + 1


@torch.library.register_fake("vaeiso::ssim_forward")
def _ssim_forward_fake(x, y, window_size, sigma, k1, k2, data_range, same_padding, loss, need_maps):
    _check_image("ssim", x, "x", window_size)
    torch._check(y.shape == x.shape, lambda: f"ssim: y: expected shape {tuple(x.shape)} (the shape of x), got {tuple(y.shape)}")
    _check_device("ssim", x, "x", y=y)
    dt = _loss_pair_dtype("ssim", x, y)
    N, C, H, W = x.shape
    ho, wo = _out_hw(H, W, window_size, same_padding)
    out = x.new_empty((N,), dtype=dt)
    maps = x.new_empty((N, C, 4, ho, wo) if need_maps else (0,), dtype=torch.float32 if dt in _HALF else dt)
    return out, maps


@torch.library.register_fake("vaeiso::ssim_backward")
def _ssim_backward_fake(grad, x, y, maps, window_size, sigma, same_padding):
    _check_device("ssim_backward", x, "x", grad=grad, y=y, maps=maps)
    return x.new_empty(x.shape), y.new_empty(y.shape)


@torch.library.register_fake("vaeiso::ssim_pairs")
def _ssim_pairs_fake(base, others, *, window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0,
                     padding="valid"):
    _parse_padding("ssim_pairs", padding)
    _check_image("ssim_pairs", base, "base", window_size)
    torch._check(others.dim() == 5 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
                 lambda: f"ssim_pairs: others: expected shape (N, K, C, H, W) matching base {tuple(base.shape)}, "
                         f"got {tuple(others.shape)}")
    _check_device("ssim_pairs", base, "base", others=others)
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

_FORWARD = torch.ops.vaeiso.ssim_forward.default

# Reverse mode runs the fused ssim_backward kernel. When the gradient must itself be
# differentiable or batchable (create_graph, forward AD, torch.func wrappers: _modes.fused_ok),
# the same derivative is evaluated by _grads_torch from the window filter (an autograd.Function
# with every rule) and torch ops. Forward mode contracts the fused per-image gradient with the
# tangents: each output depends on one image (pair), so the JVP is <dSSIM/dx, tx> + <dSSIM/dy, ty>.


def _need_maps(x: Tensor, y: Tensor) -> bool:
    """Whether the forward should keep the derivative maps (some derivative will be asked for)."""
    return ((torch.is_grad_enabled() and (x.requires_grad or y.requires_grad))
            or forward_ad._current_level >= 0
            or is_functorch_wrapped_tensor(x) or is_functorch_wrapped_tensor(y))


def _transformed(*ts: Tensor) -> bool:
    """Under forward AD or a torch.func transform (the C++ composites cannot follow there)."""
    return forward_ad._current_level >= 0 or any(is_functorch_wrapped_tensor(t) for t in ts)


@with_eager_twin
class _FilterFunction(torch.autograd.Function):
    """``ssim_filter`` in every mode: it is linear, so its derivative is itself (jvp) or its
    adjoint (backward, the same op with ``transpose`` flipped: differentiable to any order)."""

    @staticmethod
    def forward(t, window_size, sigma, same, transpose):
        return call_kernel(torch.ops.vaeiso.ssim_filter.default, t, window_size, sigma, same, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.args = inputs[1:]

    @staticmethod
    def backward(ctx, grad):
        ws, sigma, same, transpose = ctx.args
        return _FilterFunction.call(grad, ws, sigma, same, not transpose), None, None, None, None

    @staticmethod
    def jvp(ctx, tt, *_):
        return _FilterFunction.call(tt, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, t, window_size, sigma, same, transpose):
        # the filter takes any leading dims: the batch is one more
        return _FilterFunction.call(t.movedim(in_dims[0], 0), window_size, sigma, same, transpose), 0


def _grads_torch(g, x, y, window_size, sigma, k1, k2, data_range, same, loss):
    """d(sum_n g_n SSIM_n)/dx, /dy (of 1 - SSIM when ``loss``) with differentiable ops.

    With raw moments m_x = w*x, e_xx = w*(x x), e_xy = w*(x y) per position, chain the partials
    of SSIM = A1 A2 / (B1 B2) back to the pixels with the adjoint filter."""
    acc = _acc_dtype(x)
    xa, ya = x.to(acc), y.to(acc)

    def f(t, transpose=False):
        return _FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = f(xa), f(ya)
    vx, vy = f(xa * xa) - mx * mx, f(ya * ya) - my * my
    sxx, syy = torch.clamp(vx, min=0), torch.clamp(vy, min=0)  # as the kernels (docs/ops.md, conventions)
    sxy = f(xa * ya) - mx * my
    a1, a2 = 2 * mx * my + c1, 2 * sxy + c2
    b1, b2 = mx * mx + my * my + c1, sxx + syy + c2
    s = (a1 * a2) / (b1 * b2)
    n, c, ho, wo = s.shape
    scale = g.to(acc).reshape(n, 1, 1, 1) * ((-1.0 if loss else 1.0) / (c * ho * wo))
    d_a1, d_a2, d_b1, d_b2 = scale * s / a1, scale * s / a2, -scale * s / b1, -scale * s / b2
    d_sxx, d_syy = d_b2 * (vx > 0), d_b2 * (vy > 0)
    d_sxy = 2 * d_a2
    d_mx = 2 * my * d_a1 + 2 * mx * d_b1 - 2 * mx * d_sxx - my * d_sxy
    d_my = 2 * mx * d_a1 + 2 * my * d_b1 - 2 * my * d_syy - mx * d_sxy
    e_xy = f(d_sxy, True)
    gx = f(d_mx, True) + 2 * xa * f(d_sxx, True) + ya * e_xy
    gy = f(d_my, True) + 2 * ya * f(d_syy, True) + xa * e_xy
    return gx.to(x.dtype), gy.to(y.dtype)


def _grads_fused(g, x, y, maps, window_size, sigma, k1, k2, data_range, same, loss):
    if maps.numel() == 0 and x.shape[0] > 0:
        # the forward ran without maps (no derivative was expected then): recompute them
        _, maps = call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, loss, True)
    return call_kernel(torch.ops.vaeiso.ssim_backward.default, g, x, y, maps, window_size, sigma, same)


def _grads(g, x, y, maps, args):
    """Per-image gradients of ``sum_n g_n out_n``: fused when nothing differentiates through."""
    if fused_ok(g, x, y):
        return _grads_fused(g, x, y, maps, *args)
    return _grads_torch(g, x, y, *args)


def _forward_setup(ctx, inputs, output):
    x, y, window_size, sigma, k1, k2, data_range, same, loss, _need = inputs
    maps = output[1]
    ctx.save_for_backward(x, y, maps)
    ctx.args = (window_size, sigma, k1, k2, data_range, same, loss)
    ctx.mark_non_differentiable(maps)


def _forward_backward(ctx, grad_out, _grad_maps=None):
    x, y, maps = ctx.saved_tensors
    if grad_out is None or not any(ctx.needs_input_grad[:2]):
        return (None,) * 10
    gx, gy = _grads(grad_out, x, y, maps, ctx.args)
    return (gx if ctx.needs_input_grad[0] else None, gy if ctx.needs_input_grad[1] else None) + (None,) * 8


def _image_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=(-3, -2, -1))


@with_eager_twin
class _SSIMFunction(torch.autograd.Function):
    """``ssim_forward`` (SSIM or 1 - SSIM, and the maps) for eager mode and ``torch.func``."""

    @staticmethod
    def forward(x, y, window_size, sigma, k1, k2, data_range, same, loss, need_maps):
        return call_kernel(_FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, loss, need_maps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _forward_setup(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output[1])

    backward = staticmethod(_forward_backward)

    @staticmethod
    def jvp(ctx, tx, ty, *_):
        x, y, maps = ctx.saved_tensors
        ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        gx, gy = _grads(ones, x, y, maps, ctx.args)
        out = None
        for gr, t in ((gx, tx), (gy, ty)):
            if t is not None:
                out = _image_dot(gr, t) if out is None else out + _image_dot(gr, t)
        return out, None

    @staticmethod
    def vmap(info, in_dims, x, y, *args):
        # the vmapped batch joins N (an unbatched image is expanded): one fused call
        B = info.batch_size
        out, maps = _SSIMFunction.call(merge_batch(x, in_dims[0], B), merge_batch(y, in_dims[1], B), *args)
        if maps.dim() == 1:  # no maps were asked for: one empty (0,) tensor, unbatched
            return (split_batch(out, B), maps), (0, None)
        return (split_batch(out, B), split_batch(maps, B)), (0, 0)


# The custom op keeps its own autograd (torch.compile and direct torch.ops callers), with the
# same differentiable backward.
torch.library.register_autograd("vaeiso::ssim_forward", _forward_backward, setup_context=_forward_setup)


def _pairs_args(ctx_kw):
    window_size, sigma, k1, k2, data_range, padding = ctx_kw
    return (window_size, sigma, k1, k2, data_range, _parse_padding("ssim_pairs", padding), True)


def _pairs_grads(g, base, others, args):
    """Gradients of ``sum g[n, k] (1 - SSIM(base[n], others[n, k]))``: (N, ...) and (N, K, ...)."""
    gb, go = _pairs_grads_unsummed(g, base, others, args)
    return gb.sum(1), go


@with_eager_twin
class _SSIMPairsFunction(torch.autograd.Function):
    """``ssim_pairs`` for eager mode and ``torch.func``."""

    @staticmethod
    def forward(base, others, window_size, sigma, k1, k2, data_range, padding):
        return call_kernel(torch.ops.vaeiso.ssim_pairs.default, base, others, window_size=window_size,
                           sigma=sigma, k1=k1, k2=k2, data_range=data_range, padding=padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        base, others = inputs[:2]
        ctx.save_for_backward(base, others)
        ctx.save_for_forward(base, others)
        ctx.args = _pairs_args(inputs[2:])

    @staticmethod
    def backward(ctx, grad):
        base, others = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:2]):
            return (None,) * 8
        gb, go = _pairs_grads(grad, base, others, ctx.args)
        return (gb if ctx.needs_input_grad[0] else None, go if ctx.needs_input_grad[1] else None) + (None,) * 6

    @staticmethod
    def jvp(ctx, tb, to, *_):
        base, others = ctx.saved_tensors
        ones = torch.ones(others.shape[:2], dtype=base.dtype, device=base.device)
        gb_pairs, go = _pairs_grads_unsummed(ones, base, others, ctx.args)
        out = None
        if tb is not None:
            out = _image_dot(gb_pairs, tb.unsqueeze(1))
        if to is not None:
            out = _image_dot(go, to) if out is None else out + _image_dot(go, to)
        return out

    @staticmethod
    def vmap(info, in_dims, base, others, *args):
        B = info.batch_size
        out = _SSIMPairsFunction.call(merge_batch(base, in_dims[0], B), merge_batch(others, in_dims[1], B), *args)
        return split_batch(out, B), 0


def _pairs_grads_unsummed(g, base, others, args):
    N, K = others.shape[:2]
    xb = base.unsqueeze(1).expand(others.shape).reshape((N * K,) + tuple(base.shape[1:]))
    gx, gy = _grads(g.reshape(N * K), xb, others.reshape(xb.shape), base.new_empty((0,)), args)
    return gx.reshape(others.shape), gy.reshape(others.shape)


def _pairs_setup(ctx, inputs, keyword_only_inputs, output):
    base, others = inputs
    ctx.save_for_backward(base, others)
    kw = keyword_only_inputs
    ctx.args = _pairs_args((kw["window_size"], kw["sigma"], kw["k1"], kw["k2"], kw["data_range"], kw["padding"]))


def _pairs_backward(ctx, grad):
    base, others = ctx.saved_tensors
    if not any(ctx.needs_input_grad[:2]):
        return None, None
    gb, go = _pairs_grads(grad, base, others, ctx.args)
    return (gb if ctx.needs_input_grad[0] else None, go if ctx.needs_input_grad[1] else None)


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
    raise RuntimeError("vaeiso::ssim_backward: the raw backward kernel has no derivative of its own; "
                       "differentiate vaeiso_ext.ops.ssim (or torch.ops.vaeiso.ssim) instead, whose "
                       "backward is differentiable")


torch.library.register_autograd("vaeiso::ssim_backward", _no_double_backward,
                                setup_context=_no_double_backward_setup)


# ------------------------------------------------------------ metric Gram under transforms


def _metric_gram_composite(x, v, diagonal, window_size, sigma, k1, k2, data_range, padding):
    """The C++ composite ``ssim_metric_gram`` (csrc/ssim/ssim.cpp) step for step, over
    :class:`_FilterFunction`, for forward AD and the torch.func transforms."""
    op = "ssim_metric_gram"
    same = _parse_padding(op, padding)
    _check_image(op, x, "x", window_size)
    torch._check(v.dim() == 5 and v.shape[0] == x.shape[0] and v.shape[2:] == x.shape[1:],
                 lambda: f"{op}: v: expected shape ({x.shape[0]}, K, {x.shape[1]}, {x.shape[2]}, {x.shape[3]}) "
                         f"for x of shape {tuple(x.shape)}, got {tuple(v.shape)}")
    _check_device(op, x, "x", v=v)
    torch._check(v.dtype == x.dtype, lambda: f"{op}: v: expected dtype {x.dtype} (the dtype of x), got {v.dtype}")
    for name, val in (("data_range", data_range), ("k1", k1), ("k2", k2), ("sigma", sigma)):
        if not val > 0:
            raise RuntimeError(f"{op}: {name}: expected a positive number, got {val}")

    def f(t, transpose=False):
        return _FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    acc = _acc_dtype(x)
    xf, vf = x.to(acc), v.to(acc)
    N, K, C = x.shape[0], v.shape[1], x.shape[1]
    mu_x = f(xf)
    s_xx = torch.clamp(f(xf * xf) - mu_x * mu_x, min=0)
    a = torch.reciprocal(2 * mu_x * mu_x + c1)
    b = torch.reciprocal(2 * s_xx + c2)
    ab = (a - b).unsqueeze(1)
    c = f(b, True).unsqueeze(1)
    mu_v = f(vf)
    P, Q = C * mu_x.shape[2] * mu_x.shape[3], C * x.shape[2] * x.shape[3]
    scale = 1.0 / P
    if diagonal:
        out = (torch.bmm((mu_v * mu_v).reshape(N, K, P), ab.reshape(N, P, 1))
               + torch.bmm((vf * vf).reshape(N, K, Q), c.reshape(N, Q, 1)))
        out = out.squeeze(-1) * scale
    else:
        gram = torch.bmm((mu_v * ab).reshape(N, K, P), mu_v.reshape(N, K, P).transpose(1, 2))
        gram = torch.baddbmm(gram, (vf * c).reshape(N, K, Q), vf.reshape(N, K, Q).transpose(1, 2))
        out = (gram + gram.transpose(1, 2)) * (0.5 * scale)
    return out.to(x.dtype)
