"""Pair distances: wrapper, fake implementation and autograd for ``torch.ops.vaeiso.pair_distances``."""

import torch
from torch import Tensor

METRICS = ("sse", "bce")


def pair_distances(base: Tensor, others: Tensor, metric: str, *, weight: Tensor | None = None) -> Tensor:
    """Distances from each base to each of its K others, fused: ``(N, K)``.

    ``out[n, k] = weight[n] * D(base[n], others[n, k])``, with D summed over all non-batch dims:

    - ``"sse"``: ``sum (o - b)**2``; with ``weight`` this is the paper's ``a_x ||x - x'||^2``
      (``a_x`` computed from the base).
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
        metric: ``"sse"`` or ``"bce"``.
        weight: optional ``(N,)`` per-sample factor (same device; the dtype of ``base`` or of
            ``others``).

    Any strides (a unit stride in the flattened trailing dims avoids a copy). Deterministic.
    Gradients flow to ``base``, ``others`` and ``weight`` (computed with eager PyTorch ops).
    The BCE gradients use the xlogy convention of the value: finite wherever the value is (at
    ``o = b`` in ``{0, 1}`` too), equal to autograd through :func:`vaeiso_ext.reference.pair_distances`.
    """
    if metric not in METRICS:
        raise ValueError(f"pair_distances: metric: expected one of {METRICS}, got {metric!r}")
    return torch.ops.vaeiso.pair_distances(base, others, metric, weight)


def _check(base: Tensor, others: Tensor, metric: str, weight: Tensor | None) -> None:
    torch._check(metric in METRICS, lambda: f"pair_distances: metric: expected one of {METRICS}, got {metric!r}")
    torch._check(base.dim() >= 1, lambda: "pair_distances: base: expected shape (N, *), got a 0-dim tensor")
    torch._check(
        others.dim() == base.dim() + 1 and others.shape[0] == base.shape[0] and others.shape[2:] == base.shape[1:],
        lambda: f"pair_distances: others: expected shape (N, K, *) matching base {tuple(base.shape)}, "
        f"got {tuple(others.shape)}",
    )
    half = (torch.float16, torch.bfloat16)
    torch._check(
        others.dtype == base.dtype
        or (others.dtype in half and base.dtype == torch.float32)
        or (others.dtype == torch.float32 and base.dtype in half),
        lambda: f"pair_distances: others: expected dtype {base.dtype} (the dtype of base), or float32 against "
        f"a float16/bfloat16 base (autocast's mix), got {others.dtype}",
    )
    if weight is not None:
        torch._check(weight.dtype in (base.dtype, others.dtype),
                     lambda: f"pair_distances: weight: expected dtype {base.dtype} (the dtype of base), got {weight.dtype}")
        torch._check(
            tuple(weight.shape) == (base.shape[0],),
            lambda: f"pair_distances: weight: expected shape ({base.shape[0]},), got {tuple(weight.shape)}",
        )


@torch.library.register_fake("vaeiso::pair_distances")
def _pair_distances_fake(base, others, metric, weight=None):
    _check(base, others, metric, weight)
    dt = base.dtype if others.dtype == base.dtype else torch.float32
    return base.new_empty((base.shape[0], others.shape[1]), dtype=dt)


def _setup_context(ctx, inputs, output):
    base, others, metric, weight = inputs
    ctx.metric = metric
    ctx.save_for_backward(base, others, weight)


def _bce_grads(b: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    """dD/db, dD/do of one BCE term with the value's xlogy convention (a term whose weight b or
    1 - b is 0 is 0), so they are finite wherever the value is: dD/do = (1-b)/(1-o) - b/o and
    dD/db = log(b/o) - log((1-b)/(1-o)), each ratio taken as 0 (its log as -1, the derivative of
    the remaining q - p) where its weight is 0. The zero-weight entries get safe operands so
    that a second derivative through these ops sees no 0/0 either.
    """
    # In float32 at least: 1 - o and the logs lose digits in a half type, and with autocast's
    # mix one operand is float32 anyway (the gradients are cast back to each input's dtype).
    dt = torch.promote_types(torch.promote_types(b.dtype, o.dtype), torch.float32)
    b, o = b.to(dt), o.to(dt)
    zb, zc = b == 0, b == 1
    one = torch.ones((), dtype=dt, device=b.device)
    o_b = torch.where(zb, one, o)  # b / o_b = 0 where b = 0
    o_c = torch.where(zc, one - 1, o)  # (1 - b) / (1 - o_c) = 0 where b = 1
    b_b = torch.where(zb, one, b)
    b_c = torch.where(zc, one - 1, b)
    d_o = (1 - b) / (1 - o_c) - b / o_b
    d_b = torch.where(zb, -one, torch.log(b_b / o_b)) - torch.where(zc, -one, torch.log((1 - b_c) / (1 - o_c)))
    return d_b, d_o


def _backward(ctx, grad: Tensor):
    base, others, weight = ctx.saved_tensors
    # weight is absent from needs_input_grad when it was left at its default (None)
    needs = ctx.needs_input_grad
    need_b, need_o, need_w = needs[0], needs[1], len(needs) > 3 and needs[3]
    if not (need_b or need_o or need_w):
        return (None,) * len(needs)
    expand = (slice(None), slice(None)) + (None,) * (base.dim() - 1)
    g = grad if weight is None else grad * weight[:, None]
    b = base.unsqueeze(1)
    if ctx.metric == "sse":
        d_o = 2 * g[expand] * (others - b)
        d_b = -d_o.sum(1) if need_b else None
    else:
        grad_b, grad_o = _bce_grads(b, others)
        d_o = g[expand] * grad_o
        d_b = (g[expand] * grad_b).sum(1) if need_b else None
    d_w = None
    if need_w:
        unweighted = torch.ops.vaeiso.pair_distances(base, others, ctx.metric, None)
        d_w = (grad * unweighted).sum(1)
    return (d_b, d_o if need_o else None, None, d_w)[: len(needs)]


torch.library.register_autograd("vaeiso::pair_distances", _backward, setup_context=_setup_context)
