"""Pure-PyTorch reference implementations of every fused op.

They are the test oracle (run in float64), the benchmark baseline, and the fallback on devices
with no compiled kernel. Written for clarity, not speed; they depend on torch alone and support
autograd in both modes.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gdn(x: Tensor, beta: Tensor, gamma: Tensor, inverse: bool = False, simplified: bool = False) -> Tensor:
    """Reference GDN/IGDN over dim 1 of ``(N, C, *)`` input; see :func:`vaeiso_ext.ops.gdn`.

    CompressAI's formulation: the channel mixing is a 1x1 convolution with weight ``gamma``
    and bias ``beta`` (here conv1d over the flattened positions, so any rank works).
    """
    N, C = x.shape[:2]
    fx = x.abs() if simplified else x * x
    S = math.prod(x.shape[2:])
    norm = F.conv1d(fx.reshape(N, C, S), gamma.unsqueeze(-1), beta).reshape(x.shape)
    scale = norm if simplified else torch.sqrt(norm)
    return x * scale if inverse else x / scale


# ---------------------------------------------------------------- SSIM (SPEC §3.2-3.3)


# ---------------------------------------------------------------- pair distances (SPEC §3.4)
