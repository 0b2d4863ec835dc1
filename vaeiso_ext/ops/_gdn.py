"""GDN / IGDN: wrapper, fake implementations and autograd for ``torch.ops.vaeiso.gdn*``."""

import torch
from torch import Tensor

from ._modes import HALF as _HALF
from ._modes import autograd_function, call_kernel, dispatch, fused_ok, merge_batch, split_batch, vmap_by_loop
from .checks import check_gdn


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False, simplified: bool = False) -> Tensor:
    """Generalized divisive normalization over channels (dim 1), fused forward and backward.

    ``norm_i = beta_i + sum_j gamma[i, j] * x_j**2`` per position (``|x_j|`` when
    ``simplified``); returns ``x_i / sqrt(norm_i)``, or ``x_i * sqrt(norm_i)`` when ``inverse``
    (IGDN); ``simplified`` drops the square root (``x / norm``, ``x * norm``).

    Args:
        x: ``(N, C, *)``, float32, float64, float16 or bfloat16 (the half types compute in
            float32 and return x's dtype), on CPU or CUDA; any strides. Channel-last dense input
            (channels_last images) is processed without a copy and the output keeps that layout;
            anything else gives a contiguous output.
        beta: ``(C,)``, same dtype and device as ``x``, or float32 with a half ``x`` (what
            ``torch.autocast`` passes: parameters stay float32); gamma likewise, in beta's dtype.
            Their gradients have their own dtype.
        gamma: ``(C, C)`` in CompressAI's layout: ``gamma[i, j]`` weights input channel ``j``
            for output channel ``i``.
        inverse: IGDN instead of GDN.
        simplified: the ``|x|``, no-square-root variant.

    Gradients flow to ``x``, ``beta`` and ``gamma``. ``norm`` must stay positive; the
    :class:`vaeiso_ext.nn.GDN` reparametrization guarantees it.

    Every autograd mode works (docs/ops.md, conventions): reverse mode runs the fused backward kernel; double
    backward (``create_graph=True``), forward mode (``torch.func.jvp``, ``jacfwd``,
    ``forward_ad``: one more channel-mixing GEMM with the saved ``norm``) and the ``torch.func``
    transforms (``vmap`` folds the batch into ``N`` for one fused call) are exact. Under
    ``torch.compile``/``torch.export`` the custom op ``torch.ops.vaeiso.gdn`` is traced as one
    node; its double backward is exact too, its forward mode is not available there.

    Raises ``TypeError`` for a non-tensor or a dtype outside these rules, ``ValueError`` for a
    wrong shape or device (each naming the argument).
    """
    check_gdn("gdn", x, beta, gamma)
    return dispatch(
        (x, beta, gamma),
        lambda: torch.ops.vaeiso.gdn(x, beta, gamma, inverse, simplified),
        lambda: call_kernel(torch.ops.vaeiso.gdn_forward.default, x, beta, gamma, inverse, simplified, False)[0],
        lambda: _gdn_apply(x, beta, gamma, inverse, simplified)[0],
    )


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _HALF else x.dtype


def _empty_like_layout(x: Tensor, dtype: torch.dtype) -> Tensor:
    # Mirrors use_channel_last / empty_in_layout in csrc/gdn/gdn.cpp.
    if x.movedim(1, -1).is_contiguous():
        return x.new_empty(x.movedim(1, -1).shape, dtype=dtype).movedim(-1, 1)
    return x.new_empty(x.shape, dtype=dtype)


def _check(x: Tensor, beta: Tensor, gamma: Tensor) -> None:
    torch._check(x.dim() >= 2, lambda: f"gdn: x: expected (N, C, *) with at least 2 dims, got {x.dim()}")
    C = x.shape[1]
    torch._check(tuple(beta.shape) == (C,), lambda: f"gdn: beta: expected shape ({C},), got {tuple(beta.shape)}")
    torch._check(
        tuple(gamma.shape) == (C, C), lambda: f"gdn: gamma: expected shape ({C}, {C}), got {tuple(gamma.shape)}"
    )
    for name, t in (("beta", beta), ("gamma", gamma)):
        torch._check(
            t.device == x.device,
            lambda: f"gdn: {name}: expected a tensor on {x.device} (the device of x), got {t.device}",
        )
        torch._check(
            t.dtype == x.dtype or (x.dtype in _HALF and t.dtype == torch.float32),
            lambda: f"gdn: {name}: expected dtype {x.dtype} (the dtype of x), got {t.dtype}",
        )
    torch._check(
        gamma.dtype == beta.dtype,
        lambda: f"gdn: gamma: expected dtype {beta.dtype} (the dtype of beta), got {gamma.dtype}",
    )


@torch.library.register_fake("vaeiso::gdn_forward")
def _gdn_forward_fake(x, beta, gamma, inverse=False, simplified=False, need_norm=True):
    _check(x, beta, gamma)
    norm = _empty_like_layout(x, _acc_dtype(x)) if need_norm else x.new_empty((0,), dtype=_acc_dtype(x))
    return _empty_like_layout(x, x.dtype), norm


@torch.library.register_fake("vaeiso::gdn_backward")
def _gdn_backward_fake(grad, x, norm, gamma, inverse, simplified, output_mask):
    for name, t in (("grad", grad), ("norm", norm), ("gamma", gamma)):
        torch._check(
            t.device == x.device,
            lambda: f"gdn_backward: {name}: expected a tensor on {x.device} (the device of x), got {t.device}",
        )
    C = x.shape[1]
    gx = _empty_like_layout(x, x.dtype) if output_mask[0] else x.new_empty((0,))
    gb = gamma.new_empty((C,)) if output_mask[1] else gamma.new_empty((0,))
    gg = gamma.new_empty((C, C)) if output_mask[2] else gamma.new_empty((0,))
    return gx, gb, gg


# ------------------------------------------------------------------------------- autograd
#
# y = x * n**p with n = beta + gamma @ f(x) per position, f(x) = x**2 (|x| when simplified),
# p = -1/2 (GDN), 1/2 (IGDN), -1 / 1 (simplified). The torch-op forms below are the same
# derivatives as the fused kernels, written so that autograd, forward AD and vmap see through
# them (double backward, forward-over-reverse, per-sample gradients).


def _exponent(inverse: bool, simplified: bool) -> float:
    return (1.0 if inverse else -1.0) * (1.0 if simplified else 0.5)


def _power(n: Tensor, p: float) -> Tensor:
    return {0.5: torch.sqrt, -0.5: torch.rsqrt, 1.0: lambda t: t, -1.0: torch.reciprocal}[p](n)


def _mix(m: Tensor, t: Tensor) -> Tensor:
    """``out[:, i] = sum_j m[i, j] t[:, j]`` over the channel dim 1 of ``(N, C, *)``."""
    return (t.movedim(1, -1) @ m.t()).movedim(-1, 1)


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((1, -1) + (1,) * (like.dim() - 2))


def _f(x: Tensor, simplified: bool) -> tuple[Tensor, Tensor]:
    """f(x) and f'(x)."""
    return (x.abs(), torch.sign(x)) if simplified else (x * x, 2 * x)


def _backward_torch(g, x, beta, gamma, inverse, simplified, mask):
    acc = _acc_dtype(x)
    xa, ga, gm = x.to(acc), g.to(acc), gamma.to(acc)
    fx, dfx = _f(xa, simplified)
    n = _per_channel(beta.to(acc), xa) + _mix(gm, fx)
    p = _exponent(inverse, simplified)
    s = _power(n, p)
    t = ga * xa * (p * s / n)  # dL/dn
    gx = (ga * s + dfx * _mix(gm.t(), t)).to(x.dtype) if mask[0] else None
    gb = t.sum([d for d in range(t.dim()) if d != 1]).to(beta.dtype) if mask[1] else None
    gg = None
    if mask[2]:
        C = x.shape[1]
        gg = (t.movedim(1, -1).reshape(-1, C).t() @ fx.movedim(1, -1).reshape(-1, C)).to(gamma.dtype)
    return gx, gb, gg


def _backward(ctx, grad_out, _grad_norm=None):
    """Shared by the autograd.Function and the custom op's registered autograd."""
    x, beta, gamma, norm = ctx.saved_tensors
    mask = [bool(m) for m in ctx.needs_input_grad[:3]]
    rest = (None,) * (len(ctx.needs_input_grad) - 3)  # the flags: inverse, simplified (, need_norm)
    if grad_out is None or not any(mask):
        return (None, None, None) + rest
    if norm.numel() != x.numel():
        raise RuntimeError(
            "gdn_forward: called with need_norm=False, so it has no gradient; "
            "call it with need_norm=True to differentiate it"
        )
    if fused_ok(grad_out, x, beta, gamma):
        gx, gb, gg = call_kernel(
            torch.ops.vaeiso.gdn_backward.default, grad_out, x, norm, gamma, ctx.inverse, ctx.simplified, mask
        )
        gx, gb, gg = (gx if mask[0] else None, gb if mask[1] else None, gg if mask[2] else None)
    else:
        gx, gb, gg = _backward_torch(grad_out, x, beta, gamma, ctx.inverse, ctx.simplified, mask)
    return (gx, gb, gg) + rest


def _setup_context(ctx, inputs, output):
    x, beta, gamma, inverse, simplified = inputs[:5]
    _out, norm = output
    ctx.save_for_backward(x, beta, gamma, norm)
    ctx.inverse, ctx.simplified = inverse, simplified
    ctx.mark_non_differentiable(norm)
    # norm never receives a gradient: do not let autograd fill a zero tensor of x's size for it
    ctx.set_materialize_grads(False)


def _forward(x, beta, gamma, inverse, simplified):
    return call_kernel(torch.ops.vaeiso.gdn_forward.default, x, beta, gamma, inverse, simplified)


def _function_setup(ctx, inputs, output):
    _setup_context(ctx, inputs, output)
    x, beta, gamma = inputs[:3]
    ctx.save_for_forward(x, beta, gamma, output[1])


def _jvp(ctx, tx, tbeta, tgamma, _ti, _ts):
    # dn = tbeta + tgamma @ f(x) + gamma @ (f'(x) tx); dy = tx n**p + p x n**(p-1) dn:
    # one more GEMM of the forward's shape (two with a gamma tangent).
    x, beta, gamma, norm = ctx.saved_tensors
    acc = _acc_dtype(x)
    xa, gm = x.to(acc), gamma.to(acc)
    fx, dfx = _f(xa, ctx.simplified)
    if not fused_ok(x, beta, gamma, tx, tbeta, tgamma):
        # the tangent may be differentiated further: recompute norm with tracked ops
        norm = _per_channel(beta.to(acc), xa) + _mix(gm, fx)
    p = _exponent(ctx.inverse, ctx.simplified)
    s = _power(norm, p)
    dn = torch.zeros_like(norm)
    if tx is not None:
        dn = dn + _mix(gm, dfx * tx.to(acc))
    if tbeta is not None:
        dn = dn + _per_channel(tbeta.to(acc), xa)
    if tgamma is not None:
        dn = dn + _mix(tgamma.to(acc), fx)
    dy = xa * (p * s / norm) * dn
    if tx is not None:
        dy = dy + tx.to(acc) * s
    return dy.to(x.dtype), None


def _vmap(info, in_dims, x, beta, gamma, inverse, simplified):
    bx, bb, bg = in_dims[:3]
    if bb is None and bg is None:
        # the vmapped batch joins N: one fused call
        B = info.batch_size
        out, norm = _gdn_apply(merge_batch(x, bx, B), beta, gamma, inverse, simplified)
        return (split_batch(out, B), split_batch(norm, B)), (0, 0)
    return vmap_by_loop(_gdn_apply, info, in_dims, (x, beta, gamma, inverse, simplified))


# gdn_forward for eager mode and torch.func: returns (out, norm)
_gdn_apply = autograd_function("GDNFunction", _forward, _function_setup, _backward, _jvp, _vmap)


# The custom op keeps its own autograd (the torch.compile / torch.export path and direct
# torch.ops callers): same backward, so its double backward is exact as well.
torch.library.register_autograd("vaeiso::gdn_forward", _backward, setup_context=_setup_context)
