"""Autograd of the SSIM family: the ``torch.autograd.Function``s around ``ssim_forward``,
``ssim_pairs``, ``ssim_filter`` and ``ssim_pool`` (every mode: reverse, double backward, forward, vmap), the
custom ops' own registered autograd (torch.compile and direct ``torch.ops.vaeiso`` callers), and
the metric Gram's composite under forward AD and the ``torch.func`` transforms.

The wrappers in ``._ssim`` and ``._ms_ssim`` reach the kernels through :class:`SSIMFunction`,
:class:`SSIMPairsFunction` and :func:`metric_gram_composite` (docs/autograd.md).
"""

import torch
from torch import Tensor
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.autograd import forward_ad

from ._modes import (
    acc_dtype,
    call_kernel,
    fused_ok,
    merge_batch,
    register_no_double_backward,
    split_batch,
    with_eager_twin,
)

FORWARD = torch.ops.vaeiso.ssim_forward.default
BACKWARD = torch.ops.vaeiso.ssim_backward.default

# Reverse mode runs the fused ssim_backward kernel. When the gradient must itself be
# differentiable or batchable (create_graph, forward AD, torch.func wrappers: _modes.fused_ok),
# the same derivative is evaluated by channel_grads_torch from the window filter (an
# autograd.Function with every rule) and torch ops. Forward mode contracts the fused
# per-channel gradient with the tangents: each output depends on one image plane (pair).


def transformed(*ts: Tensor) -> bool:
    """Under forward AD or a torch.func transform (the C++ composites cannot follow there)."""
    return forward_ad._current_level >= 0 or any(is_functorch_wrapped_tensor(t) for t in ts)


@with_eager_twin
class FilterFunction(torch.autograd.Function):
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
        return FilterFunction.call(grad, ws, sigma, same, not transpose), None, None, None, None

    @staticmethod
    def jvp(ctx, tt, *_):
        return FilterFunction.call(tt, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, t, window_size, sigma, same, transpose):
        # the filter takes any leading dims: the batch is one more
        return FilterFunction.call(t.movedim(in_dims[0], 0), window_size, sigma, same, transpose), 0


@with_eager_twin
class PoolFunction(torch.autograd.Function):
    """``ssim_pool`` (MS-SSIM's 2x2 average pooling, given the fine image's ``height`` and
    ``width``) in every mode: linear like the filter, so its jvp is itself and its backward the
    same op with ``transpose`` flipped (differentiable to any order)."""

    @staticmethod
    def forward(t, height, width, transpose):
        return call_kernel(torch.ops.vaeiso.ssim_pool.default, t, height, width, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.args = inputs[1:]

    @staticmethod
    def backward(ctx, grad):
        height, width, transpose = ctx.args
        return PoolFunction.call(grad, height, width, not transpose), None, None, None

    @staticmethod
    def jvp(ctx, tt, *_):
        return PoolFunction.call(tt, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, t, height, width, transpose):
        # the op takes any leading dims: the batch is one more
        return PoolFunction.call(t.movedim(in_dims[0], 0), height, width, transpose), 0


def _clamp0_identity_grad(v: Tensor) -> Tensor:
    """max(v, 0) whose derivative is the identity (to every order)."""
    return v + (torch.clamp(v, min=0) - v).detach()


def channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only):
    """d(sum_{n,c} g_om[n,c] one_minus[n,c] + g_l1[n,c] l1[n,c]) / dx, /dy with differentiable
    torch ops over the fused window filter: the path for double backward, forward-over-reverse
    and vmap over the backward, of the SSIM family's per-(image, channel) values.

    one_minus = mean over positions of 1 - v, v = A1 A2 / (B1 B2) (SSIM) or A2 / B2 (the
    contrast-structure term cs when ``cs_only``). With raw moments m_x = w*x, e_xx = w*(x x),
    e_xy = w*(x y) per position, the partials are chained back to the pixels with the adjoint
    filter. ``g_l1`` (or None) weighs l1 = mean |y - x| per channel, whose derivative is
    sign(y - x) / (H W) (0 at 0) and whose own derivative is 0 a.e."""
    acc = acc_dtype(x)
    xa, ya = x.to(acc), y.to(acc)

    def f(t, transpose=False):
        return FilterFunction.call(t, window_size, sigma, same, transpose)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = f(xa), f(ya)
    vx, vy = f(xa * xa) - mx * mx, f(ya * ya) - my * my
    # clamped at 0 as the kernels (docs/ops.md, conventions), and like them differentiated as the
    # identity: the clamp only acts on round-off. (torch.clamp's own derivative at exactly 0
    # changed between torch releases; a mask there broke the second order where a variance is
    # exactly 0 yet varies with the pixels, e.g. a 1x1 image of 0 with padding="same".)
    sxx, syy = _clamp0_identity_grad(vx), _clamp0_identity_grad(vy)
    sxy = f(xa * ya) - mx * my
    a2, b2 = 2 * sxy + c2, sxx + syy + c2
    n, c, ho, wo = mx.shape
    scale = g_om.to(acc).reshape(n, c, 1, 1) * (-1.0 / (ho * wo))  # of the mean of 1 - v
    if cs_only:
        v = a2 / b2
        d_mx = d_my = None
    else:
        a1, b1 = 2 * mx * my + c1, mx * mx + my * my + c1
        v = (a1 * a2) / (b1 * b2)
        d_a1, d_b1 = scale * v / a1, -scale * v / b1
        d_mx, d_my = 2 * my * d_a1 + 2 * mx * d_b1, 2 * mx * d_a1 + 2 * my * d_b1
    d_a2, d_b2 = scale * v / a2, -scale * v / b2
    d_sxx = d_syy = d_b2  # the clamp's derivative: the identity (above)
    d_sxy = 2 * d_a2
    # the moments' partials: s_xx = e_xx - mx^2, s_xy = e_xy - mx my
    m_x = -2 * mx * d_sxx - my * d_sxy + (0 if d_mx is None else d_mx)
    m_y = -2 * my * d_syy - mx * d_sxy + (0 if d_my is None else d_my)
    e_xy = f(d_sxy, True)
    gx = f(m_x, True) + 2 * xa * f(d_sxx, True) + ya * e_xy
    gy = f(m_y, True) + 2 * ya * f(d_syy, True) + xa * e_xy
    if g_l1 is not None:
        t = g_l1.to(acc).reshape(n, c, 1, 1) * torch.sign(ya - xa) / (x.shape[2] * x.shape[3])
        gx, gy = gx - t, gy + t
    return gx.to(x.dtype), gy.to(y.dtype)


def _grads(g_om, g_l1, x, y, maps, args):
    """Gradients of ``sum g_om * one_minus + g_l1 * l1``: the fused backward kernel when nothing
    differentiates through it, else channel_grads_torch. g_om or g_l1 may be None (no gradient
    for that output); ``args`` as :func:`ssim_pass` takes them."""
    window_size, sigma, k1, k2, data_range, same, cs_only, with_l1 = args
    if not with_l1:
        g_l1 = None
    if g_om is None:
        g_om = torch.zeros(x.shape[:2], dtype=acc_dtype(x) if x.dtype == y.dtype else torch.float32, device=x.device)
    if not fused_ok(g_om, g_l1, x, y):
        return channel_grads_torch(g_om, g_l1, x, y, window_size, sigma, k1, k2, data_range, same, cs_only)
    if maps.numel() == 0 and x.shape[0] > 0:
        # The forward ran without maps (no gradient was expected then): recompute them.
        _, _, maps = call_kernel(FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, cs_only, False, True)
    gl1 = g_l1.contiguous() if g_l1 is not None else g_om.new_empty((0,))
    return call_kernel(BACKWARD, g_om.contiguous(), gl1, x, y, maps, window_size, sigma, same)


def _forward_setup(ctx, inputs, output):
    x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, _need_maps = inputs
    _om, _l1, maps = output
    ctx.save_for_backward(x, y, maps)
    ctx.args = (window_size, sigma, k1, k2, data_range, same, cs_only, with_l1)
    ctx.mark_non_differentiable(maps)
    # No zero-filled gradient for maps (or for an unused output): the backward takes None.
    ctx.set_materialize_grads(False)


def _forward_backward(ctx, grad_om, grad_l1, _grad_maps=None):
    x, y, maps = ctx.saved_tensors
    none = (None,) * 9
    if not any(ctx.needs_input_grad[:2]) or (grad_om is None and grad_l1 is None):
        return (None, None) + none
    gx, gy = _grads(grad_om, grad_l1, x, y, maps, ctx.args)
    return (gx if ctx.needs_input_grad[0] else None, gy if ctx.needs_input_grad[1] else None) + none


def _plane_dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products per (image, channel) plane: ``(N, C, H, W)`` pairs to ``(N, C)``."""
    return (a * b).sum(dim=(-2, -1))


def _image_dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products per image: ``(.., C, H, W)`` pairs to ``(..)``."""
    return (a * b).sum(dim=(-3, -2, -1))


@with_eager_twin
class SSIMFunction(torch.autograd.Function):
    """``ssim_forward`` in every autograd mode: the fused backward kernel in reverse mode,
    channel_grads_torch where the derivative is itself differentiated or batched, forward mode
    as the per-channel gradient contracted with the tangents, vmap folded into N."""

    @staticmethod
    def forward(x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, need_maps):
        return call_kernel(FORWARD, x, y, window_size, sigma, k1, k2, data_range, same, cs_only, with_l1, need_maps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _forward_setup(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output[2])

    backward = staticmethod(_forward_backward)

    @staticmethod
    def jvp(ctx, tx, ty, *_):
        x, y, maps = ctx.saved_tensors
        acc = acc_dtype(x) if x.dtype == y.dtype else torch.float32
        # Each (image, channel) value depends on its own plane only, so the backward with unit
        # weights gives every row of the Jacobian at once.
        ones = torch.ones(x.shape[:2], dtype=acc, device=x.device)
        gx, gy = _grads(ones, None, x, y, maps, ctx.args[:7] + (False,))
        d_om = None
        for gr, t in ((gx, tx), (gy, ty)):
            if t is not None:
                d = _plane_dot(gr.to(acc), t.to(acc))
                d_om = d if d_om is None else d_om + d
        # no l1 asked for: a tangent for its empty output all the same (None there trips an
        # internal assert of forward AD in torch 2.14)
        d_l1 = x.new_zeros((0,), dtype=acc)
        if ctx.args[7]:
            dt = (ty.to(acc) if ty is not None else 0) - (tx.to(acc) if tx is not None else 0)
            d_l1 = _plane_dot(torch.sign(y.to(acc) - x.to(acc)), dt) / (x.shape[2] * x.shape[3])
        return d_om, d_l1, None

    @staticmethod
    def vmap(info, in_dims, x, y, *args):
        # the vmapped batch joins N (an unbatched image is expanded): one fused call
        B = info.batch_size
        outs = SSIMFunction.call(merge_batch(x, in_dims[0], B), merge_batch(y, in_dims[1], B), *args)
        res, dims = [], []
        for t in outs:
            if t.dim() == 1:  # an output not asked for: one empty (0,) tensor, unbatched
                res.append(t)
                dims.append(None)
            else:
                res.append(split_batch(t, B))
                dims.append(0)
        return tuple(res), tuple(dims)


# The custom op keeps its own autograd (torch.compile and direct torch.ops callers), with the
# same differentiable backward.
torch.library.register_autograd("vaeiso::ssim_forward", _forward_backward, setup_context=_forward_setup)


def _pairs_args(ctx_kw):
    window_size, sigma, k1, k2, data_range, padding = ctx_kw
    return (window_size, sigma, k1, k2, data_range, padding == "same", False, False)


def _pairs_grads(g, base, others, args):
    """Gradients of ``sum g[n, k] (1 - SSIM(base[n], others[n, k]))``: (N, ...) and (N, K, ...)."""
    gb, go = _pairs_grads_unsummed(g, base, others, args)
    return gb.sum(1), go


@with_eager_twin
class SSIMPairsFunction(torch.autograd.Function):
    """``ssim_pairs`` for eager mode and ``torch.func``."""

    @staticmethod
    def forward(base, others, window_size, sigma, k1, k2, data_range, padding):
        return call_kernel(
            torch.ops.vaeiso.ssim_pairs.default,
            base,
            others,
            window_size=window_size,
            sigma=sigma,
            k1=k1,
            k2=k2,
            data_range=data_range,
            padding=padding,
        )

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
        out = SSIMPairsFunction.call(merge_batch(base, in_dims[0], B), merge_batch(others, in_dims[1], B), *args)
        return split_batch(out, B), 0


def _pairs_grads_unsummed(g, base, others, args):
    # 1 - SSIM of a pair is the channel mean of the SSIM pass's (N, C) output: its gradient is
    # the pass's backward with g / C per channel, over the K pairs as N * K images.
    N, K, C = others.shape[:3]
    xb = base.unsqueeze(1).expand(others.shape).reshape((N * K,) + tuple(base.shape[1:]))
    g_om = (g.to(acc_dtype(base)).reshape(N * K, 1) / C).expand(N * K, C)
    gx, gy = _grads(g_om, None, xb, others.reshape(xb.shape), base.new_empty((0,)), args)
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


def _pool_setup(ctx, inputs, output):
    t, height, width, transpose = inputs
    ctx.args = (height, width, not transpose)


def _pool_backward(ctx, grad):
    # Linear: the adjoint is the same op with `transpose` flipped.
    return (torch.ops.vaeiso.ssim_pool(grad, *ctx.args), None, None, None)


torch.library.register_autograd("vaeiso::ssim_pool", _pool_backward, setup_context=_pool_setup)


register_no_double_backward(
    "vaeiso::ssim_backward",
    "vaeiso::ssim_backward: the raw backward kernel has no derivative of its own (it is not "
    "differentiable); differentiate vaeiso_ext.ops.ssim, ms_ssim or ssim_l1_loss (or torch.ops.vaeiso.ssim) "
    "instead, whose backward is differentiable",
)


# ------------------------------------------------------------ metric Gram under transforms


def metric_gram_composite(x, v, diagonal, window_size, sigma, k1, k2, data_range, same):
    """The composite ``vaeiso::ssim_metric_gram`` (``._composites``) over :class:`FilterFunction`,
    for forward AD and the torch.func transforms (arguments checked by the wrapper)."""
    from ._composites import metric_gram

    def f(t, transpose):
        return FilterFunction.call(t, window_size, sigma, same, transpose)

    return metric_gram(x, v, diagonal, window_size, sigma, k1, k2, data_range, same, f)
