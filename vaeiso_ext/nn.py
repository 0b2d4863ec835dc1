"""Modules built on the fused ops: drop-in GDN/IGDN for CompressAI's layers."""

import torch
from torch import Tensor, nn

from . import ops, reference

_REPARAM_OFFSET = 2.0**-18


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x >= bound or where it pushes x upward."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad):
        x, bound = ctx.saved_tensors
        return grad * ((x >= bound) | (grad < 0)).to(grad.dtype), None


class LowerBound(nn.Module):
    """Lower bound with a straight-through gradient (same buffer name as CompressAI's)."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.apply(x, self.bound.to(x.dtype))


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
        return self.lower_bound(p) ** 2 - self.pedestal.to(p.dtype)


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
    """

    def __init__(self, in_channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1, simplified: bool = False):
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
        if x.device.type in ("cpu", "cuda") and not _is_dual(x):
            return ops.gdn(x, beta, gamma, self.inverse, self.simplified)
        return reference.gdn(x, beta, gamma, self.inverse, self.simplified)

    def extra_repr(self) -> str:
        return f"{self.beta.numel()}, inverse={self.inverse}, simplified={self.simplified}"


class IGDN(GDN):
    """Inverse GDN (``x * sqrt(norm)``); a drop-in for ``compressai.layers.GDN(inverse=True)``."""

    def __init__(self, in_channels: int, beta_min: float = 1e-6, gamma_init: float = 0.1,
                 simplified: bool = False):
        super().__init__(in_channels, inverse=True, beta_min=beta_min, gamma_init=gamma_init,
                         simplified=simplified)


def _is_dual(x: Tensor) -> bool:
    # The fused op has no forward-mode rule; under forward AD the reference gives exact JVPs.
    from torch.autograd import forward_ad

    return forward_ad._current_level >= 0 and forward_ad.unpack_dual(x).tangent is not None
