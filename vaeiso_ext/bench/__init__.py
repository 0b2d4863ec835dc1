"""``python -m vaeiso_ext.bench``: fused kernels against eager, torch.compile and peer libraries."""

from .core import Case, Result, copy_bandwidth_gbps, run_case  # noqa: F401
from .runner import CASE_FAMILIES, main, run  # noqa: F401
