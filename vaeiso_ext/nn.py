"""Modules built on the fused ops: drop-in GDN/IGDN for CompressAI's layers."""

import torch
from torch import Tensor, nn

from . import ops, reference
from .ops import one_minus_ssim
from .ops._modes import with_eager_twin
from .ops.checks import check_pair, check_params, check_weight, check_weights

_REPARAM_OFFSET = 2.0**-18


@with_eager_twin
class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x >= bound or where it pushes x upward.

    Separate ``setup_context`` and a generated vmap rule (the body is plain torch ops) so the
    ``torch.func`` transforms accept it; forward mode uses the derivative of ``max``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, bound):
        return torch.max(x, bound)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, bound = inputs
        ctx.save_for_backward(x, bound)
        ctx.save_for_forward(x, bound)

    @staticmethod
    def backward(ctx, grad):
        x, bound = ctx.saved_tensors
        return grad * ((x >= bound) | (grad < 0)).to(grad.dtype), None

    @staticmethod
    def jvp(ctx, tx, _tbound):
        x, bound = ctx.saved_tensors
        return tx * (x >= bound).to(tx.dtype)


class LowerBound(nn.Module):
    """Lower bound with a straight-through gradient (same buffer name as CompressAI's)."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    @torch.jit.unused
    def lower_bound(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.call(x, self.bound.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            # TorchScript cannot call an autograd.Function: plain max, as CompressAI's GDN
            # does when scripted (its gradient stops below the bound)
            return torch.max(x, self.bound.to(x.dtype))
        return self.lower_bound(x)


@with_eager_twin
class _BoundedSquareFn(torch.autograd.Function):
    """``max(p, bound)**2 - pedestal`` (:class:`LowerBound` then the square) as one node: one
    temporary forward and one backward node where the chain took three of each. The same
    values and derivatives as the chain: the backward differentiates through
    :class:`_LowerBoundFn` (its straight-through rule, also for double backward), the jvp
    through the bound's ``max``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(p, bound, pedestal):
        m = torch.max(p, bound)
        return m.mul_(m).sub_(pedestal)

    @staticmethod
    def setup_context(ctx, inputs, output):
        p, bound, _ = inputs
        ctx.save_for_backward(p, bound)
        ctx.save_for_forward(p, bound)

    @staticmethod
    def backward(ctx, grad):
        p, bound = ctx.saved_tensors
        # the square's derivative, then the bound's straight-through rule
        if torch.is_grad_enabled():  # differentiable (double backward): through _LowerBoundFn
            gm = grad * (2 * _LowerBoundFn.call(p, bound))
            return gm * ((p >= bound) | (gm < 0)).to(gm.dtype), None, None
        gm = torch.max(p, bound).mul_(2).mul_(grad)  # the same bits, one parameter-sized temporary
        return gm.mul_((p >= bound) | (gm < 0)), None, None

    @staticmethod
    def jvp(ctx, tp, _tbound, _tpedestal):
        p, bound = ctx.saved_tensors
        return tp * (p >= bound).to(tp.dtype) * (2 * torch.max(p, bound))


class NonNegativeParametrizer(nn.Module):
    """Stores a non-negative value v as sqrt(v + pedestal); reads max(p, bound)**2 - pedestal."""

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = _REPARAM_OFFSET):
        super().__init__()
        self.minimum = float(minimum)
        self.reparam_offset = float(reparam_offset)
        pedestal = self.reparam_offset**2
        self.register_buffer("pedestal", torch.tensor([pedestal]))
        self.lower_bound = LowerBound((self.minimum + pedestal) ** 0.5)

    def init(self, value: Tensor) -> Tensor:
        """The stored parameter that reads back as ``value``."""
        return torch.sqrt(torch.clamp(value + self.pedestal, min=self.pedestal.item()))

    def forward(self, p: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.lower_bound(p) ** 2 - self.pedestal.to(p.dtype)
        return self._forward_eager(p)

    @torch.jit.unused
    def _forward_eager(self, p: Tensor) -> Tensor:
        return _BoundedSquareFn.call(p, self.lower_bound.bound.to(p.dtype), self.pedestal.to(p.dtype))


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016), fused on CPU and CUDA.

    A drop-in for ``compressai.layers.GDN``: the same parameters (``beta``, ``gamma``), the
    same non-negative reparametrization and ``state_dict`` keys, so a CompressAI checkpoint
    loads with ``strict=True`` and gives the same output. Accepts any ``(N, C, *)`` input.

    Args:
        in_channels: C.
        inverse: IGDN (``x * sqrt(norm)``) instead of GDN.
        beta_min: lower bound on beta, keeping the normalizer positive.
        gamma_init: initial diagonal of gamma.
        simplified: the ``|x|``, no-square-root variant (CompressAI's ``GDN1``).

    Works in every autograd mode (double backward, forward AD, ``torch.func`` transforms with
    ``functional_call`` over ``beta``/``gamma``), under ``torch.compile``/``torch.export`` (one
    fused op node) and ``torch.jit.script`` (where the bound is a plain ``max``, as CompressAI's
    scripted GDN; its straight-through gradient is an eager-mode feature).
    """

    def __init__(
        self,
        in_channels: int,
        inverse: bool = False,
        beta_min: float = 1e-6,
        gamma_init: float = 0.1,
        simplified: bool = False,
    ):
        super().__init__()
        if in_channels <= 0:
            raise ValueError(f"GDN: in_channels must be positive, got {in_channels}")
        self.inverse = bool(inverse)
        self.simplified = bool(simplified)
        self.beta_reparam = NonNegativeParametrizer(minimum=float(beta_min))
        self.gamma_reparam = NonNegativeParametrizer()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(in_channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(float(gamma_init) * torch.eye(in_channels)))

    def effective_params(self) -> tuple[Tensor, Tensor]:
        """(beta, gamma) as the op sees them, after the reparametrization."""
        return self.beta_reparam(self.beta), self.gamma_reparam(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        beta, gamma = self.effective_params()
        if torch.jit.is_scripting():
            return torch.ops.vaeiso.gdn(x, beta, gamma, self.inverse, self.simplified)
        return self._forward_eager(x, beta, gamma)

    @torch.jit.unused
    def _forward_eager(self, x: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
        _check_tensor(type(self).__name__, "x", x)
        if x.device.type in ("cpu", "cuda"):
            return ops.gdn(x, beta, gamma, self.inverse, self.simplified)
        # no compiled kernel for this device (mps, xpu, ...)
        return reference.gdn(x, beta, gamma, self.inverse, self.simplified)

    def extra_repr(self) -> str:
        return f"{self.beta.numel()}, inverse={self.inverse}, simplified={self.simplified}"


class IGDN(GDN):
    """Inverse GDN (``x * sqrt(norm)``); a drop-in for ``compressai.layers.GDN(inverse=True)``."""

    def __init__(self, in_channels: int, beta_min: float = 1e-6, gamma_init: float = 0.1, simplified: bool = False):
        super().__init__(in_channels, inverse=True, beta_min=beta_min, gamma_init=gamma_init, simplified=simplified)


def _check_tensor(module: str, name: str, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{module}: {name}: expected a torch.Tensor, got {type(value).__name__}")


# ---------------------------------------------------------------- SSIM loss (docs/ops.md)

_SSIM_DEFAULTS = dict(window_size=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0)


def _check_ssim_kwargs(cls: str, kw: dict, allowed: set, padding_default=None) -> None:
    """The SSIM arguments of a loss module, checked at construction with the ops' rules
    (``TypeError`` / ``ValueError`` naming the module and the argument)."""
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(f"{cls}: unexpected arguments {sorted(unknown)}; expected some of {sorted(allowed)}")
    full = dict(_SSIM_DEFAULTS, **{k: v for k, v in kw.items() if k in _SSIM_DEFAULTS})
    padding = kw.get("padding", padding_default)
    check_params(cls, full["window_size"], full["sigma"], full["k1"], full["k2"], full["data_range"], padding)
    if "weights" in kw:
        check_weights(cls, kw["weights"])
    if "normalize" in kw and kw["normalize"] not in ("relu", "simple", None):
        raise ValueError(f'{cls}: normalize: expected "relu", "simple" or None, got {kw["normalize"]!r}')


class SSIMLoss(nn.Module):
    """``1 - SSIM(x, y)`` per image (docs/ops.md), fused on CPU and CUDA, gradients to both inputs.

    Computed from the difference ``y - x`` without cancellation, so the loss keeps its digits in
    float32 even when ``y`` is very close to ``x``.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` for ``(N,)``.
        window_size, sigma, k1, k2, data_range, padding: as in :func:`vaeiso_ext.ops.ssim`
            (``data_range``: a number, a ``(min, max)`` pair or a per-image tensor).

    Inputs are ``(N, C, H, W)`` images of the same shape, dtype and device, checked as by
    :func:`vaeiso_ext.ops.ssim` with this module's name in the message (a bad argument raises at
    construction). Every autograd mode works as for
    :func:`vaeiso_ext.ops.ssim` (double backward, forward AD, ``torch.func``).
    """

    def __init__(
        self,
        reduction: str = "mean",
        *,
        window_size: int = 11,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        data_range=1.0,
        padding: str = "valid",
    ):
        super().__init__()
        _check_reduction("SSIMLoss", reduction)
        window_size, sigma, k1, k2, rng, _ = check_params("SSIMLoss", window_size, sigma, k1, k2, data_range, padding)
        self.reduction = reduction
        self.ssim_kwargs = dict(window_size=window_size, sigma=sigma, k1=k1, k2=k2, data_range=rng, padding=padding)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_pair("SSIMLoss", x, y)
        if x.device.type in ("cpu", "cuda"):
            loss = one_minus_ssim(x, y, **self.ssim_kwargs)
        else:
            loss = 1 - reference.ssim(x, y, **self.ssim_kwargs)
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

    def extra_repr(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.ssim_kwargs.items())
        return f"reduction={self.reduction!r}, {kw}"


# ---------------------------------------------------------------- MS-SSIM and SSIM + L1 losses (docs/ops.md)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(cls: str, reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f'{cls}: reduction: expected "mean", "sum" or "none", got {reduction!r}')


class MSSSIMLoss(nn.Module):
    """``1 - MS-SSIM(x, y)`` per image (docs/ops.md), fused on CPU and CUDA, gradients to both inputs.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` for ``(N,)``.
        **kw: ``weights``, ``window_size``, ``sigma``, ``k1``, ``k2``, ``data_range``, ``normalize``
            as in :func:`vaeiso_ext.ops.ms_ssim` (checked at construction).
    """

    def __init__(self, reduction: str = "mean", **kw):
        super().__init__()
        _check_reduction("MSSSIMLoss", reduction)
        _check_ssim_kwargs("MSSSIMLoss", kw, {"weights", "window_size", "sigma", "k1", "k2", "data_range", "normalize"})
        self.reduction = reduction
        self.kw = kw

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_pair("MSSSIMLoss", x, y)
        return _reduce(1 - ops.ms_ssim(x, y, **self.kw), self.reduction)

    def extra_repr(self) -> str:
        return ", ".join([f"reduction={self.reduction!r}"] + [f"{k}={v!r}" for k, v in self.kw.items()])


class SSIML1Loss(nn.Module):
    """``(1 - ssim_weight) * mean|x - y| + ssim_weight * (1 - SSIM(x, y))`` per image (docs/ops.md):
    the photometric loss of 3D Gaussian splatting, with the L1 term read in the SSIM pass.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"`` for ``(N,)``.
        ssim_weight: the weight of ``1 - SSIM`` (0.2 in 3D Gaussian splatting).
        **ssim_kwargs: ``window_size``, ``sigma``, ``k1``, ``k2``, ``data_range``, ``padding`` as in
            :func:`vaeiso_ext.ops.ssim_l1_loss` (``padding="same"`` by default, as 3DGS; one
            unbatched ``(C, H, W)`` pair gives a 0-d loss).
    """

    def __init__(self, reduction: str = "mean", ssim_weight: float = 0.2, **ssim_kwargs):
        super().__init__()
        _check_reduction("SSIML1Loss", reduction)
        _check_ssim_kwargs(
            "SSIML1Loss",
            ssim_kwargs,
            {"window_size", "sigma", "k1", "k2", "data_range", "padding"},
            padding_default="same",
        )
        self.reduction = reduction
        self.ssim_weight = check_weight("SSIML1Loss", "ssim_weight", ssim_weight)
        self.ssim_kwargs = ssim_kwargs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_pair("SSIML1Loss", x, y, unbatched=True)
        loss = ops.ssim_l1_loss(x, y, ssim_weight=self.ssim_weight, **self.ssim_kwargs)
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        kw = [f"{k}={v!r}" for k, v in self.ssim_kwargs.items()]
        return ", ".join([f"reduction={self.reduction!r}", f"ssim_weight={self.ssim_weight!r}"] + kw)
