"""Python entry points of the fused ops, which call ``torch.ops.vaeiso`` (as does ``nn.GDN`` under TorchScript).

Each op family lives in its own module here with its wrapper, fake (meta) implementation and
autograd registration (the SSIM family's in ``._ssim``, ``._ssim_fake`` and ``._ssim_autograd``);
``.checks`` holds the wrappers' argument checks.
"""

# The composite custom ops vaeiso::ssim and vaeiso::ssim_metric_gram (Python kernels): ._composites
from . import _composites  # noqa: F401,E402

# Pair distances (pair_distances): ._distance
from ._distance import pair_distances
from ._gdn import gdn

# MS-SSIM and the fused SSIM + L1 loss (ms_ssim, ssim_l1_loss): ._ms_ssim
from ._ms_ssim import ms_ssim, ssim_l1_loss

# SSIM family (ssim, ssim_pairs, ssim_metric_gram): ._ssim
from ._ssim import one_minus_ssim, ssim, ssim_metric_gram, ssim_pairs

__all__ = [
    "one_minus_ssim",
    "gdn",
    "ssim",
    "ssim_pairs",
    "ssim_metric_gram",
    "pair_distances",
    "ms_ssim",
    "ssim_l1_loss",
]
