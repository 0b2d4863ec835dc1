"""The CUDA kernels' own index arithmetic (csrc/ssim/ssim_cuda_index.h,
csrc/distance/distance_cuda_index.h), checked on the CPU.

The headers are host-and-device and need neither torch nor CUDA, so tests/cuda_index_check.cpp
includes them as the kernels do and is built here with the system C++ compiler: the SSIM L1
term's tiles cover every image [0, H) x [0, W) exactly once for every padding, window up to 255
and image size from 1 (the first tiles' spans started before the image when the padding
exceeded the tile, issue 32), the rows the forward and the columns the backward stage per chunk
of taps hold what each tap reads, and pair_distances' blocks, warp tasks and lane runs sum
every element of a sample exactly once into its own partial.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.fail("no C++ compiler (g++, c++ or $CXX): the package cannot be built without one either")
    return shlex.split(cxx)


def test_cuda_index_arithmetic_on_cpu(tmp_path):
    exe = tmp_path / "cuda_index_check"
    build = subprocess.run(
        _compiler()
        + [
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Werror",
            f"-I{ROOT / 'csrc'}",
            str(ROOT / "tests" / "cuda_index_check.cpp"),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.stdout.startswith("ok "), run.stdout
    # every window 1..255 x both paddings x image sizes 1..605 x 4 tile lengths, at the least
    assert int(run.stdout.split()[1]) > 2 * 255 * 500 * 4
