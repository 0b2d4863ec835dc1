import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# A fixed-seed Hypothesis profile so CI runs are reproducible; `HYPOTHESIS_PROFILE=dev` explores.
settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
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

    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True,
                         text=True, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert done in out.stdout
    return out.stdout
