import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# A fixed-seed Hypothesis profile so CI runs are reproducible; `HYPOTHESIS_PROFILE=dev` explores.
settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def devices():
    """Device parameters: cpu always, cuda marked (skipped without a GPU)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def run_python(code: str, done: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (the tests' own, from "/" so the installed package is
    imported) with ``env`` added to the environment, for checks that need a setting read once at
    start-up (VAEISO_CPU_ISA, VAEISO_BLAS_FALLBACK). It must exit 0 and print ``done``;
    returns its stdout."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True, text=True, cwd="/"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert done in out.stdout
    return out.stdout


def torchrun(args, cwd, timeout=120):
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 -m vaeiso_ext *args``
    (one thread per process), run in ``cwd``: the completed process, output captured."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        cmd + ["-m", "vaeiso_ext", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


# ---------------------------------------------------------------- shared image fixtures


def pair(shape, dtype=torch.float64, noise=0.2, seed=0, device="cpu"):
    """A random image x in [0, 1] and y = x plus Gaussian noise, clamped to [0, 1] (drawn in
    float64 from ``seed``, then converted: every dtype sees the same values)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def photo(name, size):
    """A centred crop of a photograph shipped inside scikit-image, (1, C, H, W) float64 in [0, 1]."""
    import numpy as np
    from skimage import data

    img = getattr(data, name)().astype(np.float64) / 255.0
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    crop = img[top : top + size[0], left : left + size[1]].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(crop)).unsqueeze(0)


def photos(size=(96, 128)):
    """Three colour photographs (astronaut, coffee, chelsea), (3, 3, H, W) float64 in [0, 1]."""
    return torch.cat([photo(name, size) for name in ("astronaut", "coffee", "chelsea")])


def degrade(x, seed=1):
    """A blurred, noisy version (a plausible reconstruction), clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    blurred = (x + x.roll(1, -1) + x.roll(1, -2)) / 3
    return (blurred + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)
