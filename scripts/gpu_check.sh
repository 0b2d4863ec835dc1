#!/usr/bin/env bash
# One command for a GPU hour: build for the GPU present, run the CUDA tests (the code review's
# first: tests/test_cuda_kernels.py), the kernels' resource table (scripts/cuda_resources.py),
# compute-sanitizer over a short CUDA subset, and the CUDA benchmark; everything lands in OUTDIR
# with a summary.
#
#   bash scripts/gpu_check.sh [OUTDIR]        (default: out/gpu_check-<date>)
#
# Needs no network: torch, nvcc, CMake, ninja and scikit-build-core must already be installed
# (the build uses --no-build-isolation --no-deps). Environment: PYTHON (default: .venv/bin/python
# when present, else python3), SANITIZER (path of compute-sanitizer; found next to nvcc or in the
# CUDA toolkit otherwise), SKIP_BUILD=1 (test the installed package as it is), WHEELHOUSE
# (default wheelhouse/: wheels of pytest, hypothesis, numpy, tqdm, pytorch_msssim made by
# scripts/gpu_wheelhouse.sh on a machine with network; installed offline when missing here).
#
# Every step is one command, printed to OUTDIR/commands.sh so it can be rerun by hand; each
# step's output is OUTDIR/<step>.log. A failed step does not stop the others; the summary
# (OUTDIR/summary.md) says which failed, and the exit status is non-zero when any did.
# On a machine without a CUDA device it stops at once with one line and exit status 2.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ]; then
    py=$repo/.venv/bin/python
else
    py=python3
fi

# ---- is there a GPU at all? (one line, no traceback, when not)
if ! gpu_name=$("$py" -c "import torch, sys
if not torch.cuda.is_available(): sys.exit(1)
print(torch.cuda.get_device_name(0))" 2>/dev/null); then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False for $py); nothing to check" >&2
    exit 2
fi

out=${1:-$repo/out/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cmds=$out/commands.sh
printf '#!/usr/bin/env bash\n# The steps gpu_check.sh ran, in order (from %s).\n' "$repo" >"$cmds"
declare -A status=()
steps=()
failed=0

# run_step NAME CMD...: run CMD in the repo root, log to $out/NAME.log, record its exit status.
run_step() {
    local name=$1; shift
    steps+=("$name")
    { printf '\n# %s\n' "$name"; printf '%q ' "$@"; printf '\n'; } >>"$cmds"
    echo "== $name: $*"
    "$@" >"$out/$name.log" 2>&1
    local rc=$?
    status[$name]=$rc
    if [ "$rc" -ne 0 ]; then
        failed=1
        echo "   FAILED (exit $rc), see $out/$name.log"
    fi
    return 0
}

# ---- 1. the device, and the test tools (offline, from the wheelhouse, when missing)
run_step nvidia-smi nvidia-smi
missing=$("$py" -c "import importlib.util as u
print(' '.join(m for m in ('pytest', 'hypothesis', 'numpy', 'tqdm', 'pytorch_msssim') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
    wh=${WHEELHOUSE:-$repo/wheelhouse}
    if [ -d "$wh" ]; then
        # shellcheck disable=SC2086
        run_step test_deps "$py" -m pip install --no-index --find-links "$wh" $missing
    elif [ "$missing" = pytorch_msssim ]; then  # optional: the bench's SSIM peer
        echo "== test_deps: pytorch_msssim missing (no wheelhouse at $wh): the bench runs without that peer"
    else
        echo "== test_deps: missing $missing, and no wheelhouse at $wh (see scripts/gpu_wheelhouse.sh)"
        steps+=(test_deps); status[test_deps]="missing: $missing (no wheelhouse)"; failed=1
    fi
fi
cc=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))" 2>/dev/null)
echo "device: $gpu_name (compute capability $cc)"

# ---- 2. build for this GPU only (TORCH_CUDA_ARCH_LIST from its compute capability)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    run_step build env VAEISO_CUDA=ON TORCH_CUDA_ARCH_LIST="$cc" "$py" -m pip install -v \
        --no-build-isolation --no-deps "$repo" -Cbuild-dir="$repo/build/gpu_check"
fi
# The steps below run in $out so that `import vaeiso_ext` finds the installed package, not the
# source tree (which has no compiled _C).
run_step build_info env -C "$out" "$py" -c "import json, vaeiso_ext; i = vaeiso_ext.build_info()
print(json.dumps(i, indent=1)); assert i['cuda'], 'the CUDA kernels were not built'"

# ---- 3. the CUDA tests: first the review's (tests/test_cuda_kernels.py: each defect found by
#         reading the code before any GPU ran it), with the CPU checks of the kernels' index
#         arithmetic and the resource gate of the built kernels; then every other CUDA test
first=("$repo/tests/test_cuda_kernels.py" "$repo/tests/test_cuda_index.py" "$repo/tests/test_cuda_resources.py")
run_step pytest_cuda_first env -C "$out" "$py" -m pytest -q -rfEs -p no:cacheprovider \
    --junitxml="$out/pytest_cuda_first.xml" "${first[@]}"
run_step resources env -C "$out" "$py" "$repo/scripts/cuda_resources.py"
run_step pytest_cuda env -C "$out" "$py" -m pytest -m cuda -q -rfEs -p no:cacheprovider \
    --junitxml="$out/pytest_cuda.xml" --ignore="$repo/tests/test_cuda_kernels.py" "$repo/tests"

# ---- 4. compute-sanitizer over a short subset (the caching allocator off, so that memcheck
#         sees each allocation's real bounds)
san=${SANITIZER:-}
if [ -z "$san" ]; then
    for c in "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/nvcc)")/compute-sanitizer" \
             "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
             /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
        if [ -n "$c" ] && [ -x "$c" ]; then san=$c; break; fi
    done
fi
subset=("$repo/tests/test_cuda_kernels.py" "$repo/tests/test_ssim.py::test_cuda_matches_cpu")
tools=(memcheck racecheck synccheck initcheck)
if [ -z "$san" ]; then
    echo "== sanitizer: compute-sanitizer not found (set SANITIZER=/path/to/compute-sanitizer)"
    for t in "${tools[@]}"; do steps+=("sanitizer_$t"); status[sanitizer_$t]="compute-sanitizer not found"; done
    failed=1
else
    # No --leak-check: torch keeps its cuBLAS workspaces and context to the end of the process.
    # A finding in a kernel that is not ours (cuBLAS, torch) is reported too: read the log.
    for t in "${tools[@]}"; do
        run_step "sanitizer_$t" env -C "$out" PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$san" --tool "$t" \
            --error-exitcode 1 "$py" -m pytest -m cuda -q -x -p no:cacheprovider "${subset[@]}"
    done
fi

# ---- 5. the CUDA benchmark
run_step bench env -C "$out" "$py" -m vaeiso_ext.bench --device cuda --json "$out/bench.json"

# ---- summary
sum=$out/summary.md
{
    echo "# gpu_check: $gpu_name (sm ${cc/./}), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Repository: $repo ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    echo "Python: $py"
    echo
    echo "## Steps"
    echo
    echo "| step | status | log |"
    echo "|---|---|---|"
    for s in "${steps[@]}"; do
        st=${status[$s]}
        if [ "$st" = 0 ]; then st=ok; elif [[ $st =~ ^[0-9]+$ ]]; then st="FAILED (exit $st)"; else st="FAILED: $st"; fi
        echo "| $s | $st | $s.log |"
    done
    echo
    echo "Commands: commands.sh (each step as run)."
    echo
    for x in pytest_cuda_first pytest_cuda; do
        if [ $x = pytest_cuda_first ]; then
            echo "## CUDA tests: the review's first (test_cuda_kernels.py, test_cuda_index.py, test_cuda_resources.py)"
        else
            echo "## CUDA tests: the others"
        fi
        echo
        if [ -f "$out/$x.xml" ]; then
            "$py" - "$out/$x.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
print(f"{passed} passed, {tot['failures']} failed, {tot['errors']} errors, {tot['skipped']} skipped"
      f" (of {tot['tests']})")
if passed == 0:
    print("\n**No CUDA test ran**: is the package built with its CUDA kernels (build_info)?")
for s in suites:
    for case in s.iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                msg = (el.get("message") or "").splitlines()[0][:160] if el.get("message") else ""
                print(f"- {tag.upper()}: {case.get('classname')}::{case.get('name')}: {msg}")
PY
        else
            echo "no junit report (see $x.log)"
        fi
        echo
    done
    echo "## Resource usage (resources.log)"
    echo
    echo '```'
    cat "$out/resources.log" 2>/dev/null
    echo '```'
    echo
    echo "## compute-sanitizer"
    echo
    for t in "${tools[@]}"; do
        f=$out/sanitizer_$t.log
        if [ -f "$f" ]; then
            line=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$f" | tail -n 2 | tr '\n' ' ')
            tests=$(grep -E "[0-9]+ (passed|failed)" "$f" | tail -n 1)
            echo "- $t: ${line:-no summary line} (pytest: ${tests:-no result line})"
        else
            echo "- $t: not run"
        fi
    done
    echo
    echo "## Benchmark (bench.json)"
    echo
    if [ -f "$out/bench.log" ]; then
        grep -E "^(vaeiso_ext.bench on|speedup =|\|)" "$out/bench.log" || echo "no table (see bench.log)"
    fi
    echo
    echo "## build_info()"
    echo
    echo '```'
    cat "$out/build_info.log" 2>/dev/null
    echo '```'
    echo
    echo "## nvidia-smi"
    echo
    echo '```'
    cat "$out/nvidia-smi.log" 2>/dev/null
    echo '```'
} >"$sum"

echo
echo "summary: $sum"
grep -E "^\| [a-z_-]+ \| FAILED" "$sum" || true
exit $failed
