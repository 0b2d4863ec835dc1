"""The resource gate of the CUDA kernels (scripts/cuda_resources.py), on the built extension and
without a GPU: no kernel may have local memory, a stack frame (spills) on sm_90, nor more static
shared memory than the SSIM planner budgets. Skipped only when the build has no CUDA kernels."""

import importlib.util
from pathlib import Path

import pytest

import vaeiso_ext

ROOT = Path(__file__).resolve().parents[1]


def _gate():
    spec = importlib.util.spec_from_file_location("cuda_resources", ROOT / "scripts" / "cuda_resources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kernel_names_parsed():
    gate = _gate()
    assert gate.split_name(
        "void vaeiso::ssim::(anonymous namespace)::forward_kernel<false, c10::Half, float>"
        "(c10::Half const*, vaeiso::ssim::cuda_tile::Window<float>)"
    ) == ("ssim::forward_kernel<false, c10::Half, float>", "forward_kernel", ["false", "c10::Half", "float"])
    assert gate.split_name(
        "void vaeiso::distance::(anonymous namespace)::partials_kernel<(vaeiso::distance::Metric)0, double, "
        "double, true>(double const*)"
    )[1:] == ("partials_kernel", ["(vaeiso::distance::Metric)0", "double", "double", "true"])
    # every kernel of the sources is found by the declaration scan the gate checks against
    assert {
        "forward_kernel",
        "backward_kernel",
        "pairs_kernel",
        "filter_kernel",
        "filter_transpose_kernel",
        "finish_kernel",
        "partials_kernel",
        "finalize_kernel",
        "fx_kernel",
    } <= gate.declared_kernels()


def test_cuda_kernels_have_no_local_memory_and_fit_the_planner(capsys):
    if not vaeiso_ext.build_info()["cuda"]:
        pytest.skip("built without the CUDA kernels")
    rc = _gate().main([])
    out = capsys.readouterr()
    assert rc == 0, out.out[-6000:] + out.err[-4000:]
