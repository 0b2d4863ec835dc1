"""Pair distances: wrapper, fake implementation and autograd for ``torch.ops.vaeiso.pair_distances``."""

import torch
from torch import Tensor

from ._modes import (
    call_kernel,
    dispatch,
    fused_ok,
    merge_batch,
    register_no_double_backward,
    split_batch,
    with_eager_twin,
)
from .checks import check_pair_distances

METRICS = ("sse", "bce", "downward", "upward")
# The paper's convex metrics (App. D): sse times a factor of the base, computed in the kernel.
SCALED = ("downward", "upward")


def pair_distances(base: Tensor, others: Tensor, metric: str, *, weight: Tensor | None = None) -> Tensor:
    """Distances from each base to each of its K others, fused: ``(N, K)``.

    ``out[n, k] = weight[n] * D(base[n], others[n, k])``, with D summed over all non-batch dims:

    - ``"sse"``: ``sum (o - b)**2``; with ``weight`` this is the paper's ``a_x ||x - x'||^2``
      (``a_x`` computed from the base).
    - ``"downward"``: ``a_x sum (o - b)**2`` with ``a_x = 2/3 + 2 ||b||^2 / 21`` computed from
      the base in the kernel (the paper's downward-convex metric, App. D;
      :class:`vaeiso_ext.metrics.DownwardConvex`); ``"upward"``: the same over ``a_x`` (upward-
      convex). Their ``weight`` must be None. One call instead of the weight's eager ops and
      their backward: the factor's share of the base's gradient is added in the kernel.
    - ``"bce"``: the Bernoulli KL divergence ``sum b log(b/o) + (1-b) log((1-b)/(1-o))`` with
      the base as the target: BCE minus the target's entropy, so ``D(b, b) = 0``. Evaluated
      without cancellation (float32 keeps ~1e-3 relative error or better for perturbations of
      1e-4); a term whose weight ``b`` or ``1 - b`` is 0 is 0, so binary targets give no NaN.
      Values ``o`` outside ``[0, 1]`` give NaN, ``o`` in ``{0, 1}`` opposite a target that is not
      give ``inf``.

    This is the finite-difference ``D'_j`` kernel: ``base`` is read from memory once for all K.

    Args:
        base: ``(N, *)``, float32, float64, float16 or bfloat16 (the half types compute in
            float32).
        others: ``(N, K, *)`` with the same trailing shape and device as ``base``, and its
            dtype, or autocast's mix: a half type against float32 (either way round), computed
            in float32 with a float32 output.
        metric: ``"sse"``, ``"bce"``, ``"downward"`` or ``"upward"``.
        weight: optional ``(N,)`` per-sample factor (same device; the dtype of ``base`` or of
            ``others``).

    Any strides (a unit stride in the flattened trailing dims avoids a copy). Deterministic.
    Gradients flow to ``base``, ``others`` and ``weight`` (computed with eager PyTorch ops, so
    double backward is exact; in float32 at least for the half types, then cast back to each
    input's dtype), in every autograd mode: forward mode (``jvp``, ``jacfwd``, ``forward_ad``)
    and the ``torch.func`` transforms (``vmap`` folds its batch into ``N``). The bce gradient is
    finite wherever the value is: with ``o == b`` in ``{0, 1}`` it is the reference's (the
    zero-weight convention), e.g. ``dD/do = 1`` at ``b = o = 0``.

    Raises ``TypeError`` for a non-tensor, a non-string ``metric`` or a dtype outside these
    rules, ``ValueError`` for an unknown ``metric``, a wrong shape or device (each naming the
    argument).
    """
    check_pair_distances("pair_distances", base, others, metric, weight, METRICS)
    return dispatch(
        (base, others, weight),
        lambda: torch.ops.vaeiso.pair_distances(base, others, metric, weight),
        lambda: call_kernel(torch.ops.vaeiso.pair_distances.default, base, others, metric, weight),
        lambda: _PairDistancesFunction.call(base, others, metric, weight),
    )


def _check(base: Tensor, others: Tensor, metric: str, weight: Tensor | None) -> None:
    torch._check(metric in METRICS, lambda: f"pair_distances: metric: expected one of {METRICS}, got {metric!r}")
    torch._check(base.dim() >= 1, lambda: "pair_distances: base: expected shape (N, *), got a 0-dim tensor")
    torch._check(
        others.dim() == base.dim() + 1 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
        lambda: (
            f"pair_distances: others: expected shape (N, K, *) matching base {tuple(base.shape)}, "
            f"got {tuple(others.shape)}"
        ),
    )
    half = (torch.float16, torch.bfloat16)
    torch._check(
        others.dtype == base.dtype
        or (others.dtype in half and base.dtype == torch.float32)
        or (others.dtype == torch.float32 and base.dtype in half),
        lambda: (
            f"pair_distances: others: expected dtype {base.dtype} (the dtype of base), or float32 against "
            f"a float16/bfloat16 base (autocast's mix), got {others.dtype}"
        ),
    )
    torch._check(
        others.device == base.device,
        lambda: f"pair_distances: others: expected a tensor on {base.device} (the device of base), got {others.device}",
    )
    torch._check(
        weight is None or metric not in SCALED,
        lambda: f'pair_distances: weight: expected None with metric "{metric}" (its factor a_x is computed from base)',
    )
    if weight is not None:
        torch._check(
            weight.device == base.device,
            lambda: (
                f"pair_distances: weight: expected a tensor on {base.device} (the device of base), got {weight.device}"
            ),
        )
        torch._check(
            weight.dtype in (base.dtype, others.dtype),
            lambda: f"pair_distances: weight: expected dtype {base.dtype} (the dtype of base), got {weight.dtype}",
        )
        torch._check(
            tuple(weight.shape) == (base.shape[0],),
            lambda: f"pair_distances: weight: expected shape ({base.shape[0]},), got {tuple(weight.shape)}",
        )


@torch.library.register_fake("vaeiso::pair_distances")
def _pair_distances_fake(base, others, metric, weight=None):
    _check(base, others, metric, weight)
    dt = base.dtype if others.dtype == base.dtype else torch.float32
    return base.new_empty((base.shape[0], others.shape[1]), dtype=dt)


@torch.library.register_fake("vaeiso::pair_distances_backward")
def _pair_distances_backward_fake(grad, base, others, metric, weight, output_mask):
    _check(base, others, metric, weight)
    torch._check(
        others.dtype == base.dtype,
        lambda: f"pair_distances_backward: others: expected dtype {base.dtype} (the dtype of base), got {others.dtype}",
    )
    torch._check(
        tuple(grad.shape) == (base.shape[0], others.shape[1]),
        lambda: (
            f"pair_distances_backward: grad: expected shape {(base.shape[0], others.shape[1])}, got {tuple(grad.shape)}"
        ),
    )
    none = base.new_empty((0,))
    gb = base.new_empty(base.shape) if output_mask[0] else none
    go = others.new_empty(others.shape) if output_mask[1] else none
    gw = base.new_empty((base.shape[0],)) if output_mask[2] and weight is not None else none
    return gb, go, gw


register_no_double_backward(
    "vaeiso::pair_distances_backward",
    "pair_distances_backward is not differentiable: differentiate ops.pair_distances instead",
)


# ------------------------------------------------------------------------------- autograd
#
# Per element, with b the base, o an other and D summed over the trailing dims:
#   sse: dD/do = 2 (o - b),                    dD/db = -2 (o - b)
#   bce: dD/do = (1-b)/(1-o) - b/o,            dD/db = log(b/o) - log((1-b)/(1-o))
# bce in the zero-weight convention of the value (reference._kl_half): a term whose weight b
# (or 1 - b) is 0 is the linear remainder of the KL half, whose derivatives are finite; so at
# o = b = 0 the gradient is dD/do = 1, dD/db = -1 (and mirrored at 1), never 0/0. Written with
# torch ops: autograd, forward AD and vmap see through it (double backward, per-sample grads).
# A plain backward takes the fused kernel instead (one pass writing both gradients, and the
# weight's from D computed in the same pass), the same derivatives in cancellation-free forms
# (csrc/distance/distance_math.h).


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where both are 0 (the term's weight ``num`` is 0 there)."""
    both = (num == 0) & (den == 0)
    return num / torch.where(both, torch.ones_like(den), den)


def _log_ratio(p: Tensor, q: Tensor) -> Tensor:
    """``log(p / q)`` where ``p > 0``; -1 where ``p == 0`` (the derivative of the convention's
    linear remainder ``q - p``)."""
    zero = p == 0
    ps = torch.where(zero, torch.ones_like(p), p)
    qs = torch.where(zero, torch.ones_like(q), q)
    return torch.where(zero, -torch.ones_like(p), torch.log(ps) - torch.log(qs))


def _scale(base: Tensor, metric: str) -> Tensor:
    """The convex metrics' factor ``(N,)`` (``a_x``, or ``1 / a_x`` for upward), in torch ops (so
    differentiable to any order), in float32 at least; the kernel computes the same from base."""
    b = base.to(torch.promote_types(base.dtype, torch.float32)).reshape(base.shape[0], -1)
    a = 2.0 / 3.0 + 2.0 * (b * b).sum(1) / 21.0
    return 1.0 / a if metric == "upward" else a


def _slope(factor: Tensor, metric: str) -> Tensor:
    """d factor / d base = slope * base (csrc/distance/distance_math.h, scale_slope)."""
    return -4.0 / 21.0 * factor * factor if metric == "upward" else torch.full_like(factor, 4.0 / 21.0)


def _unscaled(base: Tensor, others: Tensor, metric: str, weight: Tensor | None):
    """A convex metric as sse with its factor for the weight (the eager formulas' view of it)."""
    if metric in SCALED:
        return "sse", _scale(base, metric)
    return metric, weight


def _partials(base: Tensor, others: Tensor, metric: str, need_b: bool):
    """(dD/do per element of others, dD/db per element of the (N, K, *) pairs or None), in
    float32 at least: 1 - o and the logs lose digits in a half type, and with autocast's mix one
    operand is float32 anyway."""
    dt = torch.promote_types(torch.promote_types(base.dtype, others.dtype), torch.float32)
    base, others = base.to(dt), others.to(dt)
    b = base.unsqueeze(1)
    if metric == "sse":
        d_o = 2 * (others - b)
        return d_o, (-d_o if need_b else None)
    d_o = _safe_ratio(1 - b, 1 - others) - _safe_ratio(b, others)
    d_b = _log_ratio(b, others) - _log_ratio(1 - b, 1 - others) if need_b else None
    return d_o, d_b


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """(N, K) to (N, K, 1, ...) against the (N, K, *) pairs."""
    return v.reshape(tuple(v.shape) + (1,) * (like.dim() - 2))


def _setup_context(ctx, inputs, output):
    base, others, metric, weight = inputs
    ctx.metric = metric
    ctx.save_for_backward(base, others, weight)


def _backward(ctx, grad: Tensor):
    base, others, weight = ctx.saved_tensors
    # weight is absent from needs_input_grad when it was left at its default (None)
    needs = ctx.needs_input_grad
    need_b, need_o, need_w = needs[0], needs[1], len(needs) > 3 and needs[3]
    if not (need_b or need_o or need_w):
        return (None,) * len(needs)
    if base.dtype == others.dtype and fused_ok(grad, base, others, weight):
        mask = [bool(need_b), bool(need_o), bool(need_w)]
        d_b, d_o, d_w = call_kernel(
            torch.ops.vaeiso.pair_distances_backward.default, grad, base, others, ctx.metric, weight, mask
        )
        return (d_b if need_b else None, d_o if need_o else None, None, d_w if need_w else None)[: len(needs)]
    metric, factor = ctx.metric, None
    if metric in SCALED:  # sse with the factor as weight; the factor's own share of d/d base below
        metric, weight = _unscaled(base, others, metric, weight)
        factor, need_w = weight, False
    g = grad if weight is None else grad * weight[:, None]
    d_b = d_o = d_w = None
    if need_b or need_o:
        p_o, p_b = _partials(base, others, metric, need_b)
        ge = _expand(g, others)
        d_o = (ge * p_o).to(others.dtype) if need_o else None
        d_b = (ge * p_b).sum(1) if need_b else None
    if need_w:
        d_w = (grad * pair_distances(base, others, metric)).sum(1).to(weight.dtype)
    if factor is not None and need_b:
        # the factor's share: (sum over k of grad D) times its derivative, slope(a) * base
        gf = (grad * pair_distances(base, others, "sse")).sum(1) * _slope(factor, ctx.metric)
        d_b = d_b + gf.reshape((-1,) + (1,) * (base.dim() - 1)) * base.to(d_b.dtype)
    if d_b is not None:
        d_b = d_b.to(base.dtype)
    return (d_b, d_o, None, d_w)[: len(needs)]


@with_eager_twin
class _PairDistancesFunction(torch.autograd.Function):
    """``pair_distances`` for eager mode and ``torch.func``."""

    @staticmethod
    def forward(base, others, metric, weight):
        return call_kernel(torch.ops.vaeiso.pair_distances.default, base, others, metric, weight)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], inputs[3], output)

    backward = staticmethod(_backward)

    @staticmethod
    def jvp(ctx, tb, to, _tm, tw):
        base, others, weight, out = ctx.saved_tensors
        metric = ctx.metric
        if metric in SCALED:  # sse with the factor as weight, whose tangent is slope * <base, tb>
            metric, weight = _unscaled(base, others, metric, None)
            tw = None
            if tb is not None:
                bt = (base.to(weight.dtype) * tb.to(weight.dtype)).reshape(base.shape[0], -1).sum(1)
                tw = _slope(weight, ctx.metric) * bt
        p_o, p_b = _partials(base, others, metric, tb is not None)
        dims = tuple(range(2, others.dim()))

        def total(t):
            return t.sum(dims) if dims else t

        d = torch.zeros_like(out)
        if to is not None:
            d = d + total(p_o * to)
        if tb is not None:
            d = d + total(p_b * tb.unsqueeze(1))
        if weight is not None:
            d = d * weight[:, None]
            if tw is not None:
                d = d + tw[:, None] * pair_distances(base, others, metric)
        return d.to(out.dtype)

    @staticmethod
    def vmap(info, in_dims, base, others, metric, weight):
        B = info.batch_size
        out = _PairDistancesFunction.call(
            merge_batch(base, in_dims[0], B),
            merge_batch(others, in_dims[1], B),
            metric,
            merge_batch(weight, in_dims[3], B),
        )
        return split_batch(out, B), 0


# The custom op keeps its own autograd (torch.compile and direct torch.ops callers).
torch.library.register_autograd("vaeiso::pair_distances", _backward, setup_context=_setup_context)
