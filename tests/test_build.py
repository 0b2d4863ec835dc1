"""The build: what build_info reports, and the import-time torch version check."""

import os
import subprocess
import sys

import torch

import vaeiso_ext


def test_build_info():
    info = vaeiso_ext.build_info()
    # a stable-ABI build: compiled against some torch >= 2.10, running under any torch >= 2.10
    assert vaeiso_ext._release(info["torch_version"]) >= vaeiso_ext.MIN_TORCH
    assert vaeiso_ext._release(torch.__version__) >= vaeiso_ext.MIN_TORCH
    assert isinstance(info["cuda"], bool)
    assert info["cuda"] == bool(info["cuda_archs"])
    if info["cuda"]:
        assert torch.version.cuda, "CUDA kernels need a CUDA build of torch"
        assert info["torch_cuda_version"] == torch.version.cuda


def test_cpu_kernels_run_in_parallel():
    """at::parallel_for is a header template: in a unit built without OpenMP it runs every task
    on the calling thread. Wherever torch has OpenMP, the kernels must be built with it."""
    if not torch.backends.openmp.is_available():
        import pytest

        pytest.skip("this torch has no OpenMP")
    assert vaeiso_ext.build_info()["openmp"] is True


def test_cpu_isa_reported_and_cap_checked():
    """build_info names the CPU kernel build in use; a VAEISO_CPU_ISA that names no build fails
    the import with a message naming the variable and the values it takes."""
    assert vaeiso_ext.build_info()["cpu_isa"] in ("baseline", "avx2", "avx512")
    code = "try:\n    import vaeiso_ext\nexcept ValueError as e:\n    print('VALUE ERROR:', e)\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env=dict(os.environ, VAEISO_CPU_ISA="sse9"),
    )
    assert "VALUE ERROR" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "VAEISO_CPU_ISA" in out.stdout and "baseline, avx2 or avx512" in out.stdout and "sse9" in out.stdout


def test_ops_registered():
    for name in (
        "gdn",
        "gdn_forward",
        "gdn_backward",
        "ssim",
        "ssim_forward",
        "ssim_backward",
        "ssim_pairs",
        "ssim_filter",
        "ssim_pool",
        "ssim_metric_gram",
        "pair_distances",
    ):
        assert hasattr(torch.ops.vaeiso, name)
    # one SSIM forward / backward pair serves the whole SSIM family
    for name in ("ssim_channels", "ssim_channels_backward"):
        assert not hasattr(torch.ops.vaeiso, name)


def test_torch_mismatch_raises_clear_import_error():
    # Simulate running under another torch than the one the extension was built against.
    code = (
        "import torch\n"
        "torch.__version__ = '1.0.0+other'\n"
        "try:\n"
        "    import vaeiso_ext\n"
        "except ImportError as e:\n"
        "    print('IMPORT ERROR:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    msg = out.stdout
    assert "IMPORT ERROR" in msg, out.stderr[-2000:]
    assert "1.0.0+other" in msg and vaeiso_ext.build_info()["torch_version"] in msg
    assert "--no-build-isolation" in msg


def test_unbuilt_source_tree_raises_clear_import_error(tmp_path):
    """A source checkout that was never built (no _build_info.py, no _C) says how to build it."""
    import shutil
    from pathlib import Path

    src = Path(vaeiso_ext.__file__).parent
    shutil.copytree(src, tmp_path / "vaeiso_ext", ignore=shutil.ignore_patterns("_C*", "_build_info.py", "__pycache__"))
    # Drop the editable install's finder (it would supply the built parts) and import from tmp.
    code = (
        "import sys\n"
        "sys.meta_path = [f for f in sys.meta_path if 'ScikitBuild' not in type(f).__name__]\n"
        "try:\n"
        "    import vaeiso_ext\n"
        "except ImportError as e:\n"
        "    print('IMPORT ERROR:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "IMPORT ERROR" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "compiled extension is missing" in out.stdout and "--no-build-isolation" in out.stdout
