"""The SSIM family's horizontal window filter in each instruction-set build against the generic
path and a float64 oracle.

The AVX2 and AVX-512 builds filter rows read aligned, taking each tap's shifted vector from a
shuffle of two aligned vectors or from an unaligned load (``window_vec`` in csrc/cpu_simd.h,
``fir_h`` in csrc/ssim/ssim_cpu_fir.h); the baseline build takes the generic FIR (one load per
tap). ``ssim_filter`` runs the forward filter (the strip pipeline) and its transpose (the
adjoint of the backward), so it reaches that code in both directions: here for every odd window
the fast path takes (7 to 15 taps; even windows are refused by the ops), row widths 1 to 80 (no
full vector, single vectors, groups of vectors, and an overlapping last vector), both paddings,
float32 and float64. Each build runs in its own process (the build is chosen once per process,
``VAEISO_CPU_ISA``); every build is checked against ``reference.window_filter`` in float64, and
the vector builds against the baseline.
"""

from __future__ import annotations

import pathlib

import pytest
import torch
from conftest import run_python

from vaeiso_ext import reference

WINDOWS = (7, 9, 11, 13, 15)
WIDTHS = range(1, 81)
SIGMA = 1.7


def _cases():
    """(name, window, same, transpose, input shape): the filter's output rows have 1 .. 80
    values (forward; "same" needs an image at least as wide as the window) or the transpose's
    image rows have (its positions "valid" or "same")."""
    for ws in WINDOWS:
        for n in WIDTHS:
            yield f"fwd_valid_{ws}_{n}", ws, False, False, (2, ws + 4, n + ws - 1)
            if n >= ws:
                yield f"fwd_same_{ws}_{n}", ws, True, False, (2, ws + 1, n)
            yield f"adj_same_{ws}_{n}", ws, True, True, (2, 5, n)
            yield f"adj_valid_{ws}_{n}", ws, False, True, (2, 5, n)


def _inputs():
    g = torch.Generator().manual_seed(27)
    return {name: torch.rand(shape, generator=g, dtype=torch.float64) for name, _, _, _, shape in _cases()}


def _outputs(inputs):
    """Every case's filter output in float32 and float64 (called in the subprocess)."""
    out = {}
    for name, ws, same, transpose, _ in _cases():
        for dt in (torch.float32, torch.float64):
            t = inputs[name].to(dt)
            out[(name, str(dt))] = torch.ops.vaeiso.ssim_filter(t, ws, SIGMA, same, transpose).double()
    return out


def _run_build(isa: str, tmp_path: pathlib.Path):
    """The outputs of build `isa` (a subprocess with VAEISO_CPU_ISA=isa), or None when this CPU
    does not run that build."""
    src, dst = tmp_path / "in.pt", tmp_path / f"{isa}.pt"
    torch.save(_inputs(), src)
    code = (
        "import sys, torch, vaeiso_ext\n"
        f"sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
        "import test_ssim_isa_filter as t\n"
        "isa = vaeiso_ext.build_info()['cpu_isa']\n"
        f"torch.save((isa, t._outputs(torch.load({str(src)!r}))), {str(dst)!r})\n"
        "print('filter done')\n"
    )
    run_python(code, "filter done", VAEISO_CPU_ISA=isa)
    got_isa, out = torch.load(dst)
    return out if got_isa == isa else None


def _oracle(name, ws, same, transpose, t):
    """reference.window_filter in float64; the transpose as the adjoint of the forward (the
    vector-Jacobian product of the "valid" or "same" filter)."""
    padding = "same" if same else "valid"
    if not transpose:
        return reference.window_filter(t, ws, SIGMA, padding)
    h = t.shape[-2] + (0 if same else ws - 1)
    w = t.shape[-1] + (0 if same else ws - 1)
    img = torch.zeros(t.shape[0], h, w, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(reference.window_filter(img, ws, SIGMA, padding), img, t)
    return g


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("isa_filter")
    return {isa: _run_build(isa, tmp) for isa in ("baseline", "avx2", "avx512")}


@pytest.fixture(scope="module")
def oracle():
    inputs = _inputs()
    return {name: _oracle(name, ws, same, transpose, inputs[name]) for name, ws, same, transpose, _ in _cases()}


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_filter_matches_float64_oracle(builds, oracle, isa):
    out = builds[isa]
    if out is None:
        pytest.skip(f"this CPU does not run the {isa} build")
    # |output| <= 1 (a normalised window of values in [0, 1]): float32 rounds each of up to
    # 2 x 15 products and sums by ~6e-8, so 1e-6 absolute; float64 the same at 2e-15.
    tol = {str(torch.float32): 1e-6, str(torch.float64): 2e-15}
    for name, want in oracle.items():
        for dt, atol in tol.items():
            torch.testing.assert_close(
                out[(name, dt)], want, rtol=0, atol=atol, msg=lambda m: f"{isa} {name} {dt}: {m}"
            )


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_vector_filter_matches_generic_path(builds, isa):
    """The aligned-row filter against the baseline build's generic FIR: the same sums up to
    rounding (FMA contraction, summation order), so a wrong shift, tap or tail shows at once."""
    out, base = builds[isa], builds["baseline"]
    if out is None:
        pytest.skip(f"this CPU does not run the {isa} build")
    assert out.keys() == base.keys()
    tol = {str(torch.float32): 1e-6, str(torch.float64): 2e-15}
    for key, got in out.items():
        torch.testing.assert_close(got, base[key], rtol=0, atol=tol[key[1]], msg=lambda m: f"{isa} {key}: {m}")
