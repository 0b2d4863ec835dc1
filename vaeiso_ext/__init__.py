"""vaeiso_ext: fused C++/CUDA ops for learned compression, and beta-VAE isometry analysis.

Ops live in :mod:`vaeiso_ext.ops` (and ``torch.ops.vaeiso``), modules in :mod:`vaeiso_ext.nn`,
pure-PyTorch references in :mod:`vaeiso_ext.reference`.
"""

import torch  # noqa: F401  (must be loaded before _C, which links against its libraries)

# The oldest torch whose LibTorch stable ABI the compiled extension targets (TORCH_TARGET_VERSION
# in CMakeLists.txt): one build runs under every torch from this one on.
MIN_TORCH = (2, 10)

try:
    from . import _build_info
except ImportError as e:  # a source checkout that was never built
    raise ImportError(
        "vaeiso_ext's compiled extension is missing: install the package with "
        "`pip install --no-build-isolation .` (or `make test`) instead of importing the source tree"
    ) from e


def _release(version: str) -> tuple:
    parts = []
    for p in version.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in p if c.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


if _release(torch.__version__) < MIN_TORCH:
    raise ImportError(
        f"vaeiso_ext needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]} (it was built against torch "
        f"{_build_info.TORCH_VERSION} on the stable ABI, and runs under any torch from "
        f"{MIN_TORCH[0]}.{MIN_TORCH[1]} on), but torch {torch.__version__} is running; upgrade torch, or build "
        "for this one with `pip install --no-build-isolation .`"
    )

from . import (  # noqa: E402,F401
    _C,  # noqa: E402,F401  (registers torch.ops.vaeiso.*)
    nn,
    ops,
    reference,
)

__version__ = "0.1.0"


def build_info() -> dict:
    """What the compiled extension was built with.

    Returns a dict with ``torch_version`` (the torch the kernels were compiled against),
    ``torch_cuda_version`` (torch's CUDA version, or ``""`` for a CPU build of torch),
    ``cuda`` (whether the CUDA kernels are compiled in), ``cuda_archs`` (the CMake CUDA
    architectures, e.g. ``["80-real", "90"]``; empty without CUDA), ``nvcc_version`` (the nvcc
    that compiled the CUDA kernels; empty without CUDA), ``openmp`` (whether the CPU kernels'
    tasks run on an OpenMP pool: they run on torch's intra-op pool, so this is torch's answer)
    and ``cpu_isa`` (the CPU kernel build in use: ``"avx512"``,
    ``"avx2"`` or ``"baseline"``, the best this processor runs unless ``VAEISO_CPU_ISA`` caps it).
    """
    return {
        "torch_version": _build_info.TORCH_VERSION,
        "torch_cuda_version": _build_info.TORCH_CUDA_VERSION,
        "cuda": bool(_C.CUDA_COMPILED),
        "cuda_archs": list(_build_info.CUDA_ARCHS),
        "nvcc_version": _build_info.NVCC_VERSION,
        "openmp": bool(_C.OPENMP) and torch.backends.openmp.is_available(),
        "cpu_isa": _C.CPU_ISA,
    }
