#!/usr/bin/env bash
# Compatibility check (`make compat`): build vaeiso_ext with its CUDA kernels against older torch
# releases, each in its own virtual environment, and run the CPU tests there.
#
#   scripts/compat.sh [TORCH_VERSION ...]      default: 2.11.0 (the GPU machines' torch) and
#                                              2.10.0 (the floor pyproject.toml admits)
#
# Each version gets build/compat-<version>/ (venv in venv/, CMake tree in cmake/, log in *.log).
# It downloads each torch from PyPI once (a CUDA wheel and its libraries are several GB), so it
# is not part of every CI run. Environment: PYTHON (interpreter for the venvs, default python3),
# TORCH_CUDA_ARCH_LIST (default 9.0), COMPAT_TESTS (test paths, split on spaces; default: all of
# tests/), PYTEST_ARGS (extra pytest arguments, split on spaces). Tests marked cuda or slow are
# left out.
# Exit status: non-zero when any version failed to install, build or pass.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.11.0 2.10.0)
PYTHON=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export VAEISO_CUDA=ON
# Test extras, resolved together with the pinned torch so that no extra drags in another one.
TEST_DEPS="pytest hypothesis compressai scikit-image scikit-learn pytorch_msssim scipy"
BUILD_DEPS="scikit-build-core ninja numpy"

summary=()
failed=0
for v in "${versions[@]}"; do
    dir="$root/build/compat-$v"
    py="$dir/venv/bin/python"
    mkdir -p "$dir"
    echo "== torch $v: $dir"
    step() {  # step NAME CMD...: run, log, record the outcome; 0 or 1
        local name=$1; shift
        echo "-- $name: $*"
        if "$@" >"$dir/$name.log" 2>&1; then
            return 0
        fi
        echo "   FAILED (last lines of $dir/$name.log):"
        tail -n 25 "$dir/$name.log" | sed 's/^/   | /'
        summary+=("torch $v: $name FAILED (see $dir/$name.log)")
        failed=1
        return 1
    }
    if [ ! -x "$py" ]; then
        step venv "$PYTHON" -m venv "$dir/venv" || continue
    fi
    step deps "$py" -m pip install -q "torch==$v" $BUILD_DEPS $TEST_DEPS || continue
    step build env -C "$root" "$py" -m pip install -v --no-build-isolation --no-deps . \
        -Cbuild-dir="$dir/cmake" || continue
    # A neutral cwd: import the installed package, not the source tree's vaeiso_ext.
    step info env -C "$dir" "$py" -c "import torch, vaeiso_ext; i = vaeiso_ext.build_info(); print(i); \
assert i['cuda'], 'CUDA kernels not built'; assert i['torch_version'] == torch.__version__" || continue
    # shellcheck disable=SC2086
    step tests env -C "$dir" "$py" -m pytest -q -p no:cacheprovider -m "not cuda and not slow" \
        ${PYTEST_ARGS:-} ${COMPAT_TESTS:-"$root/tests"} || continue
    tail -n 1 "$dir/tests.log"
    summary+=("torch $v: ok ($(tail -n 1 "$dir/tests.log" | tr -d '='))")
done

echo "== compat summary"
printf '%s\n' "${summary[@]}"
exit $failed
