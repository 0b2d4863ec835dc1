"""Python entry points of the fused ops (the only callers of ``torch.ops.vaeiso``).

Each op family lives in its own module here with its wrapper, fake (meta) implementation and
autograd registration.
"""

from ._gdn import gdn

__all__ = ["gdn"]
