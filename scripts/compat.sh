#!/usr/bin/env bash
# One wheel, several torch releases (`make compat`, and CI's second environment): install the
# CPU wheel built in dist/ (`make wheel`, against the repository's torch) into a fresh virtual
# environment with another torch, and run the test suite there, from a neutral directory so that
# the installed package is tested, not the source tree. CUDA-marked tests skip without a GPU.
#
#   scripts/compat.sh TORCH_VERSION [TORCH_VERSION ...]    e.g. 2.13.0+cpu, 2.10.0
#
# Each version gets build/compat-<version>/ (venv in venv/, logs in *.log). Environment: PYTHON
# (interpreter for the venvs, default python3), WHEEL (default: the one dist/vaeiso_ext-*abi3*.whl),
# PYTEST_ARGS (extra pytest arguments, split on spaces).
# Exit status: non-zero when any version failed to install or pass.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

[ $# -gt 0 ] || { echo "usage: scripts/compat.sh TORCH_VERSION [...]" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
shopt -s nullglob
wheels=("$root"/dist/vaeiso_ext-*abi3*.whl)
WHEEL=${WHEEL:-${wheels[0]:-}}
[ -n "$WHEEL" ] && [ -f "$WHEEL" ] || { echo "compat: no abi3 wheel in dist/: run make wheel first" >&2; exit 2; }
echo "compat: wheel $WHEEL"
# The test extras (pyproject.toml), resolved together with the pinned torch.
TEST_DEPS="pytest hypothesis compressai scikit-image scikit-learn pytorch_msssim scipy torchmetrics matplotlib tqdm numpy"

summary=()
failed=0
for v in "$@"; do
    dir="$root/build/compat-$v"
    py="$dir/venv/bin/python"
    mkdir -p "$dir"
    echo "== torch $v: $dir"
    step() {  # step NAME CMD...: run, log, record the outcome
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
    step deps "$py" -m pip install -q "torch==$v" $TEST_DEPS || continue
    # The test extras pull torchvision (CompressAI needs it); a torchvision built for another
    # flavour of this torch (a CUDA one beside a +cpu torch) fails at import with a RuntimeError.
    # Without it CompressAI is absent, and the tests whose oracle it is skip, saying so.
    if ! "$py" -c "import torchvision" > /dev/null 2>&1; then
        echo "   note: no torchvision for torch $v here: removed, the CompressAI-oracle tests skip"
        "$py" -m pip uninstall -y -q torchvision > /dev/null 2>&1
    fi
    # --no-deps: the wheel's own requirement (torch >= 2.10) is met; nothing else may move torch.
    step install "$py" -m pip install -q --no-deps --force-reinstall "$WHEEL" || continue
    step info env -C "$dir" "$py" -c "import torch, vaeiso_ext; print(torch.__version__, vaeiso_ext.build_info())" \
        || continue
    # shellcheck disable=SC2086
    step tests env -C "$dir" "$py" -m pytest -q -p no:cacheprovider --rootdir "$root" -c "$root/pyproject.toml" \
        ${PYTEST_ARGS:-} "$root/tests" || continue
    tail -n 1 "$dir/tests.log"
    summary+=("torch $v: ok ($(tail -n 1 "$dir/tests.log" | tr -d '='))")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
