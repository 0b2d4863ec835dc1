"""What every op must satisfy (docs/ops.md, conventions shared by all ops), run over the one table
in tests/op_contract.py: layouts, N = 0, dtypes, gradcheck, gradgradcheck, opcheck,
torch.compile, device mismatch and generic bad input. Each property names its oracle and
tolerance; the per-op tolerances live in the table beside the reason for each.

Counts (pytest --collect-only, CPU build; issue 30, item 3). Whole suite 1,592 -> 2,169 items.
Per property, the written-out family tests this replaces -> the contract's items (20 rows):
  layouts        6 (test_ssim 1, test_ms_ssim 1, test_gdn 2, test_distance 2)  -> 216
  N = 0          4 (test_ssim 1, test_ms_ssim 1, test_gdn 2; test_distance's stays) -> 80
  dtypes         2 (test_ms_ssim's half types)                       -> 40 float + 40 half
  gradcheck     14 (ssim 2, ssim_pairs 1, gram 1, ms_ssim 3, ssim_l1 1, gdn 4, distance 2) -> 40
  gradgradcheck 20 (test_autograd_modes 15, test_ms_ssim 3, test_distance 2) -> 20
  opcheck        9 (test_ssim 1, test_gdn 4, test_distance 4)        -> 20
  compile        4 (test_ssim 1, test_ms_ssim 1, test_gdn 1, test_distance 1) -> 20 + 5 modules
  devices        5 (test_autograd_modes 3, test_gdn 2; 2 of them CUDA) -> 52 + 20 meta + 26 CUDA
  bad input      0 generic (the per-family message tests stay)       -> 46
Each former test is covered by a row checking the same thing against the same oracle at least
as strictly (bitwise layouts stay bitwise; tolerances are the families' own, in the table).
"""

import re

import pytest
import torch
from conftest import HAS_CUDA, pair
from op_contract import CASES, IDS, D, gen, rows
from torch.utils._python_dispatch import TorchDispatchMode

from vaeiso_ext import nn as vnn

# ---------------------------------------------------------------- helpers


def cotangent(out, seed=7):
    """A fixed random cotangent (every output entry weighted differently)."""
    return torch.randn(out.shape, generator=gen(seed), dtype=D).to(out.device, out.dtype)


def value_and_grads(f, args):
    """f(*args) and the gradients of <f(*args), cotangent> with respect to every argument."""
    leaves = tuple(a.detach().requires_grad_() for a in args)
    out = f(*leaves)
    grads = torch.autograd.grad(out, leaves, cotangent(out), allow_unused=True) if out.numel() else ()
    return out, grads


def assert_same(got, want, tol, what, grad=False):
    """Bitwise where tol is None; else |got - want| <= atol (times max(1, max|want|) when scaled,
    or for gradients only when scaled == "grads") + rtol |want|."""
    if tol is None:  # NaN where the oracle has NaN (normalize=None's negative cs), bitwise elsewhere
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num()), what
        return
    scaled = tol["scaled"] is True or (tol["scaled"] == "grads" and grad)
    atol = tol["atol"] * (max(1.0, want.abs().max().item()) if scaled and want.numel() else 1.0)
    torch.testing.assert_close(
        got.to(want.dtype), want, rtol=tol["rtol"], atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


def twin_layouts(a):
    """The same values (or, for 'expanded', the values of a[:1] repeated) in other memory
    layouts, each a view that is not the contiguous tensor; the contiguous twin is .contiguous()."""
    out = {}
    if a.dim() >= 3:  # channels innermost ((N, C, H, W) -> channels_last; (N, K, C, H, W) likewise)
        out["channels_last"] = a.movedim(-3, -1).contiguous().movedim(-1, -3)
    if a.dim() >= 2:
        out["transposed"] = a.transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major planes
        wide = torch.full(a.shape[:1] + (2 * a.shape[1],) + a.shape[2:], float("nan"), dtype=a.dtype)
        wide[:, ::2] = a
        out["strided_dim1"] = wide[:, ::2]  # channels (or K) sliced out of a bigger tensor
    if a.dim() >= 3:  # sliced in two dims at once
        wide = torch.full(
            a.shape[:1] + (2 * a.shape[1],) + a.shape[2:-1] + (2 * a.shape[-1],), float("nan"), dtype=a.dtype
        )
        wide[:, ::2, ..., ::2] = a
        out["strided_dim1_and_last"] = wide[:, ::2, ..., ::2]
    wide = torch.full(a.shape[:-1] + (2 * a.shape[-1],), float("nan"), dtype=a.dtype)
    wide[..., ::2] = a
    out["strided_last"] = wide[..., ::2]  # the NaN columns must never be read
    if a.dim() >= 2:  # every dim's order reversed in memory (torch has no negative strides)
        rev = tuple(reversed(range(a.dim())))
        out["all_dims_reversed"] = a.permute(rev).contiguous().permute(rev)
    out["dim0_innermost"] = a.movedim(0, -1).contiguous().movedim(-1, 0)
    out["expanded_dim0"] = a[:1].expand_as(a)  # stride 0
    return {k: v for k, v in out.items() if not v.is_contiguous()}  # 1-D or N = 1: some are no-ops


LAYOUTS = [
    "channels_last",
    "transposed",
    "strided_dim1",
    "strided_dim1_and_last",
    "strided_last",
    "all_dims_reversed",
    "dim0_innermost",
    "expanded_dim0",
]
LAYOUT_CASES = [
    pytest.param(c, dt, lay, id=f"{c.name}-{str(dt)[6:]}-{lay}")
    for c in CASES
    for dt in c.layout_tol
    for lay in LAYOUTS
]


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("case,dtype,layout", LAYOUT_CASES)
def test_layouts_give_the_contiguous_result(case, dtype, layout):
    """Any strides give the result of the contiguous input (values and every gradient), the
    layout on each argument alone and on all at once. Oracle: the op itself on the contiguous
    twin (bitwise for the SSIM family) or, for GDN, the float64 reference on it."""
    tol = case.layout_exceptions.get(layout, case.layout_tol)[dtype]
    # a batch of 2 at least, so that the batch layouts are not no-ops (rows with N = 1)
    args = tuple(torch.cat([a, a.roll(1, -1)]) if b and a.shape[0] == 1 else a for a, b in zip(case.args, case.batched))
    args = tuple(a.to(dtype) for a in args)
    views = [twin_layouts(a).get(layout) for a in args]
    trials = [tuple(v if j == i else a for j, a in enumerate(args)) for i, v in enumerate(views) if v is not None]
    trials.append(tuple(v if v is not None else a for a, v in zip(args, views)))
    oracle = case.fn if case.layout_oracle == "self" else case.ref
    for trial in trials:
        assert any(not t.is_contiguous() for t in trial)
        twin = tuple(t.contiguous() for t in trial)
        if case.layout_oracle == "ref":
            twin = tuple(t.double() for t in twin)
        got, got_g = value_and_grads(case.fn, trial)
        want, want_g = value_and_grads(oracle, twin)
        assert got.dtype == dtype
        assert_same(got, want, tol, f"{layout}: value")
        for k, (a, b) in enumerate(zip(got_g, want_g)):
            assert_same(a, b, tol, f"{layout}: grad {case.argnames[k]}", grad=True)


# ---------------------------------------------------------------- N = 0


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("case", rows("empty"))
def test_empty_batch(case, dtype, device):
    """N = 0 gives an empty result of the right shape and gradients of the inputs' shapes;
    the gradient of an argument without the batch (GDN's beta, gamma) is exactly 0 (a sum over
    no positions)."""
    args = tuple(a.to(device, dtype) for a in case.args)
    full = case.fn(*args)
    empty = tuple(a[:0] if b else a for a, b in zip(args, case.batched))
    leaves = tuple(a.clone().requires_grad_() for a in empty)
    out = case.fn(*leaves)
    assert out.shape == (0,) + full.shape[1:] and out.dtype == dtype and out.device == full.device
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    for a, g, b, name in zip(leaves, grads, case.batched, case.argnames):
        if g is None:
            continue
        assert g.shape == a.shape, name
        if not b:
            assert torch.equal(g, torch.zeros_like(g)), name


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float_dtypes_match_reference(case, dtype):
    """float32 and float64 results (and gradients) against the float64 reference on the same
    (rounded) inputs: float64 at 1e-10 relative to the largest entry (round-off of the same
    formula in another order), float32 at the row's float32 tolerance."""
    args = tuple(a.to(dtype) for a in case.args)
    got, got_g = value_and_grads(case.fn, args)
    want, want_g = value_and_grads(case.ref, tuple(a.double() for a in args))
    assert got.dtype == dtype and all(g is None or g.dtype == dtype for g in got_g)
    tol = dict(rtol=1e-10, atol=1e-10, scaled=True) if dtype == D else case.f32_tol
    assert_same(got, want, tol, "value")
    if dtype == D:  # float32 gradients: their budget is each family's (test_*_float32_gradients_*)
        for a, b, name in zip(got_g, want_g, case.argnames):
            assert_same(a, b, tol, f"grad {name}", grad=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_half_types_compute_in_float32(case, dtype):
    """float16 / bfloat16 inputs are widened exactly, computed in float32 and rounded once to the
    input dtype (docs/ops.md): bitwise the float32 result rounded; the gradients come back in the
    half type and finite."""
    args = tuple(a.to(dtype) for a in case.args)
    out, grads = value_and_grads(case.fn, args)
    assert out.dtype == dtype
    assert torch.equal(out, case.fn(*(a.float() for a in args)).to(dtype))
    for g, name in zip(grads, case.argnames):
        assert g.dtype == dtype and torch.isfinite(g).all(), name


# ---------------------------------------------------------------- finite differences


def channels_last(args):
    return tuple(a.movedim(-3, -1).contiguous().movedim(-1, -3) if a.dim() >= 4 else a for a in args)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck(case, layout):
    """Analytical gradients against finite differences (float64)."""
    args = case.args if layout == "contiguous" else channels_last(case.args)
    leaves = tuple(a.detach().requires_grad_() for a in args)
    assert torch.autograd.gradcheck(case.fn, leaves, fast_mode=case.gradcheck_fast)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradgradcheck(case):
    """Second derivatives against finite differences of the first (float64)."""
    args = case.args
    if case.name.startswith("ssim_metric_gram"):
        # smaller problem: gradgradcheck's numerical Jacobian of a (N, K, K) output is slow
        x, v = args
        args = (x[:1, :1], v[:1, :, :1])
    leaves = tuple(a.clone().requires_grad_() for a in args)
    assert torch.autograd.gradgradcheck(case.fn, leaves, fast_mode=case.gradgradcheck_fast)


# ---------------------------------------------------------------- the dispatcher


class RecordVaeisoOps(TorchDispatchMode):
    """Records the torch.ops.vaeiso calls that reach the kernels (op, args, kwargs)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith("vaeiso."):
            self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_opcheck(case):
    """torch.library.opcheck (schema, autograd registration, fake tensor, AOT dispatch) on every
    dispatcher op the wrapper reaches, forward and backward, as recorded, plus the row's explicit
    calls (other modes, requires_grad inputs)."""
    from torch.library import opcheck

    leaves = tuple(a.clone().requires_grad_() for a in case.args)
    with RecordVaeisoOps() as rec:
        out = case.fn(*leaves)
        torch.autograd.grad(out, leaves, cotangent(out))
    assert rec.calls, "the wrapper reached no torch.ops.vaeiso op"
    seen = set()
    calls = []
    for op, args, kwargs in rec.calls:
        if str(op) not in seen:  # one call per op: the same op with other values adds nothing
            seen.add(str(op))
            calls.append((op, tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args), kwargs))
    for op, args, kwargs in calls + (case.opcheck() if case.opcheck else []):
        opcheck(op, args, kwargs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_compile_fullgraph(case):
    """torch.compile(fullgraph=True) gives the eager value and gradients (float32; default
    assert_close tolerances, ~1e-6 relative: the same kernels, another graph around them)."""
    torch._dynamo.reset()
    args = tuple(a.float() for a in case.args)

    w = cotangent(case.fn(*args))

    def f(*a):
        return (case.fn(*a) * w).sum()

    compiled = torch.compile(f, fullgraph=True, backend=case.compile_backend)
    got, got_g = value_and_grads(compiled, args)
    want, want_g = value_and_grads(f, args)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b)


def _gdn_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), vnn.GDN(8), torch.nn.Conv2d(8, 8, 3, padding=1), vnn.IGDN(8)
    )
    with torch.no_grad():  # non-trivial, non-diagonal parameters
        for m in model:
            if isinstance(m, vnn.GDN):
                m.gamma.add_(0.05 * torch.rand_like(m.gamma))
    return model, (torch.randn(2, 3, 8, 8),), "inductor", dict(rtol=1e-5, atol=1e-6)


def _loss_module(cls, **kw):
    def build():
        x, y = pair((2, 3, 40, 36), dtype=torch.float32, seed=21)
        return cls(**kw), (x, y), "aot_eager", {}

    return build


MODULES = {
    "GDN-IGDN": _gdn_model,
    "SSIMLoss": _loss_module(vnn.SSIMLoss),
    "SSIMLoss-none": _loss_module(vnn.SSIMLoss, reduction="none", window_size=7),
    "MSSSIMLoss": _loss_module(vnn.MSSSIMLoss, weights=(0.3, 0.3, 0.4), window_size=5, sigma=1.0),
    "SSIML1Loss": _loss_module(vnn.SSIML1Loss, window_size=5),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_under_torch_compile(name):
    """The nn modules (parameters, reparametrization, reductions) compile in one graph and give
    the eager value and gradients."""
    torch._dynamo.reset()
    module, args, backend, tol = MODULES[name]()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    got, got_g = value_and_grads(compiled, args)
    want, want_g = value_and_grads(module, args)
    torch.testing.assert_close(got, want, **tol)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------- devices and bad input


def _argument_cases():
    """(case, i) for every argument but the first (whose device and dtype set the others' rule)."""
    return [pytest.param(c, i, id=f"{c.name}-{c.argnames[i]}") for c in CASES for i in range(1, len(c.args))]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("case,i", _argument_cases())
def test_device_mismatch_names_the_argument(case, i, requires_grad):
    """An argument on another device than x (meta beside CPU) raises ValueError naming the
    function and the argument, with or without gradients (the kernels would raise RuntimeError)."""
    args = [a.clone().requires_grad_(requires_grad) for a in case.args]
    args[i] = args[i].detach().to("meta")
    msg = f"{case.public}: {case.argnames[i]}: expected a tensor on cpu (the device of {case.argnames[0]}), got meta"
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        case.fn(*args)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device: the mismatch is a CUDA tensor beside a CPU one")
@pytest.mark.parametrize("case,i", _argument_cases())
def test_cuda_device_mismatch_names_the_argument(case, i):
    args = [a.cuda() for a in case.args]
    args[i] = args[i].cpu()
    with pytest.raises(ValueError, match=f"^{case.public}: {case.argnames[i]}: expected a tensor on cuda"):
        case.fn(*args)


@pytest.mark.parametrize("case", rows("meta"))
def test_meta_inputs_give_meta_outputs(case):
    args = tuple(a.to("meta") for a in case.args)
    out = case.fn(*args)
    assert out.device.type == "meta" and out.shape == case.fn(*case.args).shape


@pytest.mark.parametrize(
    "case,i", [pytest.param(c, i, id=f"{c.name}-{c.argnames[i]}") for c in CASES for i in range(len(c.args))]
)
def test_bad_arguments_name_the_function_and_argument(case, i):
    """A non-tensor and an integer tensor in place of a floating tensor: TypeError naming the
    function and the argument."""
    for bad, msg in (
        (case.args[i].tolist(), "expected a torch.Tensor, got list"),
        (case.args[i].to(torch.int64), "expected float32, float64, float16 or bfloat16, got torch.int64"),
    ):
        args = list(case.args)
        args[i] = bad
        with pytest.raises(TypeError, match=f"^{re.escape(f'{case.public}: {case.argnames[i]}: {msg}')}$"):
            case.fn(*args)
