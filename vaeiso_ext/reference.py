"""Pure-PyTorch reference implementations of every fused op.

They are the test oracle (run in float64), the benchmark baseline, and the fallback on devices
with no compiled kernel. Written for clarity, not speed; they depend on torch alone and support
autograd in both modes.
"""

import torch
from torch import Tensor


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False, simplified: bool = False) -> Tensor:
    """Reference GDN/IGDN over dim 1 of ``(N, C, *)`` input; see :func:`vaeiso_ext.ops.gdn`."""
    fx = x.abs() if simplified else x * x
    # norm[n, i, ...] = beta[i] + sum_j gamma[i, j] fx[n, j, ...]
    norm = torch.tensordot(gamma, fx, dims=([1], [1])).movedim(0, 1)
    norm = norm + beta.view((1, -1) + (1,) * (x.dim() - 2))
    scale = norm if simplified else torch.sqrt(norm)
    return x * scale if inverse else x / scale


# ---------------------------------------------------------------- SSIM (SPEC §3.2-3.3)


# ---------------------------------------------------------------- pair distances (SPEC §3.4)
