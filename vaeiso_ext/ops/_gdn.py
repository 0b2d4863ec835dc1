"""GDN / IGDN: wrapper, fake implementations and autograd for ``torch.ops.vaeiso.gdn*``."""

import torch
from torch import Tensor

_HALF = (torch.float16, torch.bfloat16)


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False, simplified: bool = False) -> Tensor:
    """Generalized divisive normalization over channels (dim 1), fused forward and backward.

    ``norm_i = beta_i + sum_j gamma[i, j] * x_j**2`` per position (``|x_j|`` when
    ``simplified``); returns ``x_i / sqrt(norm_i)``, or ``x_i * sqrt(norm_i)`` when ``inverse``
    (IGDN); ``simplified`` drops the square root (``x / norm``, ``x * norm``).

    Args:
        x: ``(N, C, *)``, float32, float64, float16 or bfloat16 (the half types compute in
            float32 and return x's dtype), on CPU or CUDA; any strides. Channel-last dense input (channels_last images) is processed without a
            copy and the output keeps that layout; anything else gives a contiguous output.
        beta: ``(C,)``, same dtype and device as ``x``, or float32 with a half ``x`` (what
            ``torch.autocast`` passes: parameters stay float32); gamma likewise, in beta's dtype.
            Their gradients have their own dtype.
        gamma: ``(C, C)`` in CompressAI's layout: ``gamma[i, j]`` weights input channel ``j``
            for output channel ``i``.
        inverse: IGDN instead of GDN.
        simplified: the ``|x|``, no-square-root variant.

    Gradients flow to ``x``, ``beta`` and ``gamma``. ``norm`` must stay positive; the
    :class:`vaeiso_ext.nn.GDN` reparametrization guarantees it.
    """
    return torch.ops.vaeiso.gdn(x, beta, gamma, inverse, simplified)


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
        torch._check(t.device == x.device,
                     lambda: f"gdn: {name}: expected a tensor on {x.device} (the device of x), got {t.device}")
        torch._check(t.dtype == x.dtype or (x.dtype in _HALF and t.dtype == torch.float32),
                     lambda: f"gdn: {name}: expected dtype {x.dtype} (the dtype of x), got {t.dtype}")
    torch._check(gamma.dtype == beta.dtype,
                 lambda: f"gdn: gamma: expected dtype {beta.dtype} (the dtype of beta), got {gamma.dtype}")


@torch.library.register_fake("vaeiso::gdn_forward")
def _gdn_forward_fake(x, beta, gamma, inverse=False, simplified=False):
    _check(x, beta, gamma)
    return _empty_like_layout(x, x.dtype), _empty_like_layout(x, _acc_dtype(x))


@torch.library.register_fake("vaeiso::gdn_backward")
def _gdn_backward_fake(grad, x, norm, gamma, inverse, simplified, output_mask):
    C = x.shape[1]
    gx = _empty_like_layout(x, x.dtype) if output_mask[0] else x.new_empty((0,))
    gb = gamma.new_empty((C,)) if output_mask[1] else gamma.new_empty((0,))
    gg = gamma.new_empty((C, C)) if output_mask[2] else gamma.new_empty((0,))
    return gx, gb, gg


def _setup_context(ctx, inputs, output):
    x, _beta, gamma, inverse, simplified = inputs
    _out, norm = output
    ctx.save_for_backward(x, norm, gamma)
    ctx.inverse, ctx.simplified = inverse, simplified
    ctx.mark_non_differentiable(norm)


def _backward(ctx, grad_out, _grad_norm):
    x, norm, gamma = ctx.saved_tensors
    mask = [bool(m) for m in ctx.needs_input_grad[:3]]
    if grad_out is None or not any(mask):
        return None, None, None, None, None
    gx, gb, gg = torch.ops.vaeiso.gdn_backward(grad_out, x, norm, gamma, ctx.inverse, ctx.simplified, mask)
    return (gx if mask[0] else None, gb if mask[1] else None, gg if mask[2] else None, None, None)


torch.library.register_autograd("vaeiso::gdn_forward", _backward, setup_context=_setup_context)
