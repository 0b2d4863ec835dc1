"""GDN / IGDN: the fused op against the float64 reference, CompressAI, autograd and the dispatcher."""

import pytest
import torch
from conftest import devices, run_python
from hypothesis import given
from hypothesis import strategies as st

from vaeiso_ext import nn as vnn
from vaeiso_ext import ops, reference

VARIANTS = [(inv, simp) for inv in (False, True) for simp in (False, True)]


def params(C, dtype=torch.float64, device="cpu", seed=0):
    """Positive beta and a random non-diagonal, non-symmetric gamma (a diagonal one hides
    transpose bugs)."""
    g = torch.Generator().manual_seed(seed)
    beta = 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    gamma = 0.3 * torch.rand(C, C, generator=g, dtype=torch.float64)
    return beta.to(device, dtype), gamma.to(device, dtype)


def scale_of(t):
    """Largest magnitude (at least 1): gradients of gamma sum over many positions."""
    return max(1.0, t.abs().max().item()) if t.numel() else 1.0


# float64 against the float64 reference: the channel sums (C terms) and the gamma gradient's sum
# over up to ~150 positions run in another order; the recursive-summation bound (terms x 2**-53 of
# the sum of magnitudes) stays below 1e-12 of the largest value, so 1e-10 holds on any machine.
F64 = dict(rtol=1e-10, atol=1e-10)


def check_against_reference(x, beta, gamma, inverse, simplified, rtol, atol):
    """Forward and all three gradients against the float64 reference (atol scaled by the
    gradient's largest magnitude)."""
    x = x.detach().requires_grad_()
    beta = beta.detach().requires_grad_()
    gamma = gamma.detach().requires_grad_()
    y = ops.gdn(x, beta, gamma, inverse, simplified)
    x64, b64, g64 = (t.detach().double().requires_grad_() for t in (x, beta, gamma))
    y64 = reference.gdn(x64, b64, g64, inverse, simplified)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y64, rtol=rtol, atol=atol)
    gy = torch.randn(y.shape, dtype=torch.float64, device=x.device)
    got = torch.autograd.grad(y, (x, beta, gamma), gy.to(y.dtype))
    want = torch.autograd.grad(y64, (x64, b64, g64), gy)
    for name, a, b in zip(("x", "beta", "gamma"), got, want):
        assert a.dtype == x.dtype, name
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol * scale_of(b), msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("inverse,simplified", VARIANTS)
@pytest.mark.parametrize("shape", [(2, 5), (3, 7, 9), (2, 6, 5, 4), (2, 3, 2, 3, 4)])
def test_matches_reference(device, inverse, simplified, shape):
    beta, gamma = params(shape[1], device=device)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    check_against_reference(x, beta, gamma, inverse, simplified, **F64)
    x32, b32, g32 = x.float(), beta.float(), gamma.float()
    check_against_reference(x32, b32, g32, inverse, simplified, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", devices())
def test_output_layout(device):
    """channels_last stays channels_last (no copy), other layouts come back contiguous (the
    values of every layout: tests/test_op_contract.py)."""
    beta, gamma = params(6, device=device)
    base = torch.randn(3, 6, 7, 5, dtype=torch.float64, device=device)
    y = ops.gdn(base.to(memory_format=torch.channels_last), beta, gamma)
    assert y.is_contiguous(memory_format=torch.channels_last)
    sliced = torch.randn(3, 12, 7, 10, dtype=torch.float64, device=device)[:, ::2, :, ::2]
    assert ops.gdn(sliced, beta, gamma).is_contiguous()


@given(
    n=st.integers(0, 3),
    c=st.integers(1, 9),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    inverse=st.booleans(),
    simplified=st.booleans(),
    layout=st.sampled_from(["contiguous", "channel_last", "strided"]),
)
def test_shapes_and_strides_property(n, c, spatial, inverse, simplified, layout):
    shape = (n, c, *spatial)
    x = torch.randn(shape, dtype=torch.float64)
    if layout == "channel_last":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    elif layout == "strided":
        x = torch.randn(n, 2 * c, *spatial, dtype=torch.float64)[:, 1::2]
    beta, gamma = params(c, seed=n + 7 * c)
    check_against_reference(x, beta, gamma, inverse, simplified, **F64)


@pytest.mark.parametrize("device", devices())
def test_empty_positions(device):
    """No positions besides N = 0 (tests/test_op_contract.py): (0, C) and an empty spatial dim."""
    beta, gamma = params(4, device=device)
    for shape in [(0, 4), (2, 4, 0, 3)]:
        x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
        b, g = beta.clone().requires_grad_(), gamma.clone().requires_grad_()
        y = ops.gdn(x, b, g)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape
        # exact: gradients summed over no positions are 0
        assert torch.equal(b.grad, torch.zeros_like(b)) and torch.equal(g.grad, torch.zeros_like(g))


# gradcheck, opcheck and torch.compile (of ops.gdn and of a GDN / IGDN model): tests/test_op_contract.py


def test_deterministic():
    beta, gamma = params(16, dtype=torch.float32)
    x = torch.randn(4, 16, 9, 9)
    outs = []
    for _ in range(2):
        xi, b, g = (t.clone().requires_grad_() for t in (x, beta, gamma))
        y = ops.gdn(xi, b, g, True)
        y.pow(2).sum().backward()
        outs.append((y, xi.grad, b.grad, g.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)  # bitwise: same input, same device (docs/ops.md's determinism promise)


# ------------------------------------------------------------------- CPU blocking
# The CPU kernels cut the positions into blocks of at most 256 (fewer for wide C), grouped in at
# most 32 groups for the parameter gradients: these shapes leave partial blocks, split groups
# unevenly and use a wide C. float64 against the float64 reference (sums over <= 600 positions:
# the F64 bound above still holds).
BLOCK_CASES = {
    "partial-blocks": lambda: torch.randn(2, 3, 17, 19, dtype=torch.float64),
    "channel-last": lambda: torch.randn(3, 5, 11, 13, dtype=torch.float64).to(memory_format=torch.channels_last),
    "wide-C": lambda: torch.randn(2, 300, 15, 15, dtype=torch.float64),
    "many-groups": lambda: torch.randn(40, 2, 300, dtype=torch.float64),
    "rows": lambda: torch.randn(600, 7, dtype=torch.float64),
}


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
@pytest.mark.parametrize("inverse,simplified", VARIANTS)
def test_cpu_blocks_match_reference(case, inverse, simplified):
    x = BLOCK_CASES[case]()
    beta, gamma = params(x.shape[1])
    check_against_reference(x, beta, gamma, inverse, simplified, **F64)


def _fwd_bwd(x, beta, gamma, inverse=False):
    xi, b, g = (t.clone().requires_grad_() for t in (x, beta, gamma))
    y = ops.gdn(xi, b, g, inverse)
    y.pow(2).sum().backward()
    return y, xi.grad, b.grad, g.grad


def test_cpu_thread_count_independent():
    """Every block and group is fixed by the shape alone: 1, 2 and 3 threads agree bit for bit."""
    beta, gamma = params(16, dtype=torch.float32)
    x = torch.randn(8, 16, 40, 40)  # 56 blocks in 32 groups
    before = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(_fwd_bwd(x, beta, gamma, True))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("inverse", [False, True])
def test_cpu_norm_outside_normal_range(inverse):
    """float32 runs take 1/sqrt from an estimate and a Newton step, which holds for normal norms
    only: norms of 0, subnormal, huge and inf (beta picks them per channel; 40 positions fill
    whole vectors) must give what float32 arithmetic gives, inf and NaN included."""
    tiny = torch.finfo(torch.float32).tiny
    beta = torch.tensor([0.0, tiny / 8, tiny, 3e38, float("inf"), 1.0])
    gamma = torch.zeros(6, 6)
    x = torch.randn(2, 6, 40)
    x[:, :, ::5] = 0.0
    got = ops.gdn(x, beta, gamma, inverse)
    s = beta.view(1, 6, 1).double().sqrt()
    want = (x.double() * (s if inverse else 1 / s)).float()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0, equal_nan=True)


def test_inference_skips_norm():
    """need_norm=False (what ops.gdn asks for when no gradient is needed) returns the same output
    and an empty norm, and refuses a backward through it with a clear error."""
    beta, gamma = params(6)
    for x in (
        torch.randn(2, 6, 5, 4, dtype=torch.float64),
        torch.randn(2, 6, 5, 4, dtype=torch.float64).to(memory_format=torch.channels_last),
    ):
        out, norm = torch.ops.vaeiso.gdn_forward(x, beta, gamma, False, False, True)
        out2, norm2 = torch.ops.vaeiso.gdn_forward(x, beta, gamma, False, False, False)
        assert torch.equal(out, out2) and out2.stride() == out.stride()
        assert norm.shape == x.shape and norm2.numel() == 0
        torch.library.opcheck(torch.ops.vaeiso.gdn_forward, (x, beta, gamma, True, False, False))
    xr = x.clone().requires_grad_()
    out, _ = torch.ops.vaeiso.gdn_forward(xr, beta, gamma, False, False, False)
    with pytest.raises(RuntimeError, match="need_norm=True"):
        out.sum().backward()


def test_cpu_blas_fallback_matches():
    """Where torch exports no BLAS symbols the blocks' GEMMs go through at::mm
    (VAEISO_BLAS_FALLBACK=1 forces that path): same values as the reference."""

    code = (
        "import torch\n"
        "from vaeiso_ext import ops, reference\n"
        "torch.manual_seed(0)\n"
        "for x in (torch.randn(2, 3, 17, 19, dtype=torch.float64),\n"
        "          torch.randn(3, 5, 11, 13, dtype=torch.float64).to(memory_format=torch.channels_last),\n"
        "          torch.randn(2, 300, 15, 15, dtype=torch.float64), torch.randn(8, 16, 40, 40)):\n"
        "  C = x.shape[1]\n"
        "  b = (0.5 + torch.rand(C, dtype=x.dtype)).requires_grad_()\n"
        "  g = (0.3 * torch.rand(C, C, dtype=x.dtype) / C).requires_grad_()\n"
        "  x.requires_grad_()\n"
        "  y = ops.gdn(x, b, g); r = reference.gdn(x.double(), b.double(), g.double())\n"
        "  tol = 1e-10 if x.dtype == torch.float64 else 1e-5\n"
        "  torch.testing.assert_close(y.double(), r, rtol=tol, atol=tol)\n"
        "  gy = torch.randn_like(r)\n"
        "  got = torch.autograd.grad(y, (x, b, g), gy.to(y.dtype))\n"
        "  want = torch.autograd.grad(r, (x, b, g), gy)\n"
        "  for a, c in zip(got, want):\n"
        "    a, c = a.double(), c.double()\n"
        "    torch.testing.assert_close(a, c, rtol=100 * tol, atol=100 * tol * c.abs().max().item())\n"
        "print('fallback ok')\n"
    )
    run_python(code, "fallback ok", VAEISO_BLAS_FALLBACK="1")


# ------------------------------------------------------------------------ bad input


def test_bad_inputs():
    beta, gamma = params(4)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    cases = [
        ((x, beta[:3], gamma), ValueError, "gdn: beta: expected shape"),
        ((x, beta.view(2, 2), gamma), ValueError, "gdn: beta: expected shape"),
        ((x, beta, gamma[:, :3]), ValueError, "gdn: gamma: expected shape"),
        ((x, beta, gamma.float()), TypeError, "gdn: gamma: expected dtype"),
        ((x, beta.float(), gamma), TypeError, "gdn: beta: expected dtype"),
        ((torch.randn(4, dtype=torch.float64), beta, gamma), ValueError, "gdn: x: expected a tensor of shape"),
        # half x takes float32 parameters (autocast), but no other mix
        ((x.half(), beta, gamma), TypeError, "gdn: beta: expected dtype"),
        ((x.half(), beta.float(), gamma.half()), TypeError, "gdn: gamma: expected dtype"),
        ((x.to(torch.int64), beta, gamma), TypeError, "gdn: x: expected float32"),
        ((x.tolist(), beta, gamma), TypeError, "gdn: x: expected a torch.Tensor, got list"),
        ((x, None, gamma), TypeError, "gdn: beta: expected a torch.Tensor, got NoneType"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            ops.gdn(*args)
        # a direct call of the custom op skips the wrapper and gets the kernel's check
        if all(isinstance(a, torch.Tensor) for a in args):
            with pytest.raises(RuntimeError, match=msg.split(": expected")[0]):
                torch.ops.vaeiso.gdn(*args, False, False)


# device mismatch (meta and CUDA beside CPU): tests/test_op_contract.py


# ------------------------------------------------------------------------ CUDA specifics


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_cuda_half_types(dtype, tol):
    beta, gamma = params(8, device="cuda")
    x = torch.randn(3, 8, 6, 5, device="cuda", dtype=torch.float64)
    check_against_reference(x.to(dtype), beta.to(dtype), gamma.to(dtype), False, False, rtol=tol, atol=tol)
    check_against_reference(x.to(dtype), beta.to(dtype), gamma.to(dtype), True, False, rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_second_device():
    beta, gamma = params(8, device="cuda:1", dtype=torch.float32)
    x = torch.randn(3, 8, 6, 5, device="cuda:1")
    y = ops.gdn(x, beta, gamma)
    assert y.device == x.device
    torch.testing.assert_close(y.cpu(), ops.gdn(x.cpu(), beta.cpu(), gamma.cpu()), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ nn modules


def _perturbed_compressai(C, inverse, seed):
    compressai_layers = pytest.importorskip("compressai.layers")
    ref = compressai_layers.GDN(C, inverse=inverse)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ref.beta.copy_(ref.beta_reparam.init(0.5 + torch.rand(C, generator=g)))
        ref.gamma.copy_(ref.gamma_reparam.init(0.2 * torch.rand(C, C, generator=g)))
    return ref


@pytest.mark.parametrize("inverse", [False, True])
def test_compressai_parity(inverse):
    C = 6
    ref = _perturbed_compressai(C, inverse, seed=3)
    ours = vnn.IGDN(C) if inverse else vnn.GDN(C)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(2, C, 5, 7)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), ours(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-6)
    gy = torch.randn_like(ya)
    ya.backward(gy)
    yb.backward(gy)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.beta.grad, ref.beta.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.gamma.grad, ref.gamma.grad, rtol=1e-4, atol=1e-4)
    # and back: a state_dict of ours loads strictly into CompressAI's layer
    ref2 = type(ref)(C, inverse=inverse)
    ref2.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(ref2(x), ours(x))


def test_compressai_default_init_matches():
    compressai_layers = pytest.importorskip("compressai.layers")
    ref, ours = compressai_layers.GDN(5), vnn.GDN(5)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, msg=k)


def test_lower_bound_gradient():
    # the bound passes gradient where stored >= bound or where the gradient pushes it up
    m = vnn.GDN(3)
    bound = m.gamma_reparam.lower_bound.bound
    with torch.no_grad():
        m.gamma.fill_(0.0)  # below the bound everywhere
    beta, gamma = m.effective_params()
    up = torch.autograd.grad(gamma.sum(), m.gamma, -torch.ones(()), retain_graph=True)[0]
    assert torch.all(up != 0), "a gradient that increases the stored value must pass"
    down = torch.autograd.grad(gamma.sum(), m.gamma, torch.ones(()))[0]
    assert torch.all(down == 0), "a gradient that would push it further below the bound must not"
    assert bound.item() > 0


def test_module_fallback_under_forward_ad():
    from torch.autograd import forward_ad as fwAD

    m = vnn.IGDN(4).double()
    x, t = torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with fwAD.dual_level():
        y = m(fwAD.make_dual(x, t))
        jvp = fwAD.unpack_dual(y).tangent
    beta, gamma = (p.detach() for p in m.effective_params())
    _, want = torch.func.jvp(lambda a: reference.gdn(a, beta, gamma, True), (x,), (t,))
    torch.testing.assert_close(jvp, want)


def test_baseline_cpu_build_matches():
    """The kernels are built twice (baseline and AVX2+FMA); run the baseline build in a
    subprocess and check it against the float64 reference too."""

    code = (
        "import torch, vaeiso_ext\n"
        "from vaeiso_ext import ops, reference\n"
        "torch.manual_seed(0)\n"
        "for inv in (False, True):\n"
        "  for simp in (False, True):\n"
        "    x = torch.randn(3, 6, 5, 7, dtype=torch.float64, requires_grad=True)\n"
        "    b = (0.5 + torch.rand(6, dtype=torch.float64)).requires_grad_()\n"
        "    g = (0.3 * torch.rand(6, 6, dtype=torch.float64)).requires_grad_()\n"
        "    y = ops.gdn(x, b, g, inv, simp); r = reference.gdn(x, b, g, inv, simp)\n"
        "    torch.testing.assert_close(y, r, rtol=1e-10, atol=1e-10)\n"
        "    gy = torch.randn_like(y)\n"
        "    for a, c in zip(torch.autograd.grad(y, (x, b, g), gy), torch.autograd.grad(r, (x, b, g), gy)):\n"
        "      torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)\n"
        "print('baseline ok')\n"
    )
    run_python(code, "baseline ok", VAEISO_CPU_ISA="baseline")


def test_output_layout_rule_matches_torch():
    """The kernel decides channel-last from the sizes and strides (csrc/stable_abi.h, no view
    made); the fake impl asks torch whether the moved view is contiguous. Same output strides on
    the layouts where the two rules could part: size-1 dims with stray strides, C = 1, empty and
    expanded tensors; values against the float64 reference."""
    from vaeiso_ext.ops._gdn import _empty_like_layout

    cases = [
        torch.randn(1, 8, 8, 8, dtype=torch.float64),
        torch.randn(1, 8, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last),
        torch.randn(2, 1, 3, 3, dtype=torch.float64),
        torch.randn(2, 1, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last),
        torch.randn(3, 4, 1, 1, dtype=torch.float64).to(memory_format=torch.channels_last),
        torch.randn(4, 3, dtype=torch.float64).t(),
        torch.randn(4, dtype=torch.float64).expand(3, 4),
        torch.randn(2, 4, 0, 3, dtype=torch.float64),
        torch.randn(3, 8, 5, dtype=torch.float64)[:, ::2],
        torch.as_strided(torch.randn(100, dtype=torch.float64), (1, 4, 1, 5), (7, 1, 3, 4)),
        torch.as_strided(torch.randn(100, dtype=torch.float64), (1, 4, 1, 5), (7, 5, 3, 1)),
    ]
    for x in cases:
        beta, gamma = params(x.shape[1])
        y = ops.gdn(x, beta, gamma)
        assert y.stride() == _empty_like_layout(x, x.dtype).stride(), (x.shape, x.stride())
        if x.numel() > 0:  # the reference's conv1d refuses an empty input under torch 2.10
            torch.testing.assert_close(y, reference.gdn(x, beta, gamma), **F64)
