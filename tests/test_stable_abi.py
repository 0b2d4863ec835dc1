"""The compiled extension is on the LibTorch stable ABI and the Python limited API, so one wheel
runs under every torch from 2.10 on and every CPython from 3.10 on: the library imports no C++
symbol of libtorch (at::, c10::, torch::; only the stable C shim's functions), its file name
carries the abi3 tag, and the wheel build asks for the cp310 abi3 tag."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

import vaeiso_ext
from vaeiso_ext import _C

ROOT = Path(__file__).resolve().parent.parent


def _undefined_symbols() -> list[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed: the library's imports cannot be listed")
    out = subprocess.run([nm, "-D", "--undefined-only", "-C", _C.__file__], capture_output=True, text=True, check=True)
    # each line: "U name" or "w name" (a demangled name may contain spaces)
    return [line.split(None, 1)[1] for line in out.stdout.splitlines() if len(line.split(None, 1)) == 2]


def test_no_libtorch_cpp_symbols_imported():
    syms = _undefined_symbols()
    assert syms, "nm listed no undefined symbol at all: wrong file?"
    cpp = [s for s in syms if re.search(r"\b(at|c10|torch|caffe2)::", s)]
    assert not cpp, f"C++ symbols of libtorch imported (not the stable ABI): {cpp[:20]}"
    # what it does import from torch is the stable C shim
    assert any(s.startswith(("aoti_torch_", "torch_")) for s in syms)


def test_library_is_abi3():
    assert Path(_C.__file__).name.endswith(".abi3.so"), _C.__file__
    # the limited API's module: nothing from CPython's private or version-specific symbols
    syms = _undefined_symbols()
    private = [s for s in syms if s.startswith("_Py") and s != "_Py_Dealloc"]
    assert not private, private


def test_wheel_build_asks_for_abi3():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^wheel\.py-api\s*=\s*"cp310"', text, re.M), "pyproject.toml: wheel.py-api must be cp310"


def test_runs_under_the_torch_it_was_not_built_for():
    """The import check admits any torch >= 2.10 (the stable ABI's floor), not only the build's."""
    assert vaeiso_ext.MIN_TORCH == (2, 10)
    assert vaeiso_ext._release("2.13.0+cpu") >= vaeiso_ext.MIN_TORCH
    assert vaeiso_ext._release("2.9.1") < vaeiso_ext.MIN_TORCH
