"""The build: what build_info reports, and the import-time torch version check."""

import subprocess
import sys

import torch

import vaeiso_ext


def test_build_info():
    info = vaeiso_ext.build_info()
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["cuda"], bool)
    assert info["cuda"] == bool(info["cuda_archs"])
    if info["cuda"]:
        assert torch.version.cuda, "CUDA kernels need a CUDA build of torch"
        assert info["torch_cuda_version"] == torch.version.cuda


def test_ops_registered():
    for name in ("gdn", "gdn_forward", "gdn_backward"):
        assert hasattr(torch.ops.vaeiso, name)


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
