#!/usr/bin/env bash
# On a machine WITH network: download the wheels that scripts/gpu_check.sh needs on a GPU
# machine that has torch but no network and perhaps no test tools (pytest, hypothesis, numpy,
# tqdm, and pytorch_msssim as the benchmark's SSIM peer), for that machine's Python.
#
#   bash scripts/gpu_wheelhouse.sh [DIR] [PYTHON_VERSION]     defaults: wheelhouse/ and 3.12
#
# Copy DIR to the GPU machine beside the checkout (wheelhouse/ is what gpu_check.sh looks for;
# it is git-ignored); gpu_check.sh installs from it, offline, whatever is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheelhouse}
pyver=${2:-3.12}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$dir"
# Binary wheels for the target interpreter; their dependencies come along (torch excluded: the
# GPU machine has its own).
"$PYTHON" -m pip download -q -d "$dir" --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 pytest hypothesis numpy tqdm
# pytorch_msssim depends on torch, which the GPU machine has: no dependencies.
"$PYTHON" -m pip download -q -d "$dir" --no-deps --only-binary=:all: --python-version "$pyver" \
    pytorch_msssim
ls -1 "$dir"
du -sh "$dir"
