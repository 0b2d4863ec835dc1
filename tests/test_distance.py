"""pair_distances: the fused op against the float64 reference and an independent xlogy oracle,
precision for tiny perturbations, layouts, autograd and the dispatcher."""

import pytest
import torch
from conftest import devices, run_python
from hypothesis import given
from hypothesis import strategies as st

from vaeiso_ext import ops, reference

METRICS = ("sse", "bce")


def inputs(N, K, shape, dtype=torch.float64, device="cpu", seed=0, pert=0.3):
    """Base in (0.05, 0.95) and others = base + perturbation, clamped into (0, 1) for bce."""
    g = torch.Generator().manual_seed(seed)
    base = 0.05 + 0.9 * torch.rand((N,) + tuple(shape), generator=g, dtype=torch.float64)
    others = base.unsqueeze(1) + pert * torch.randn((N, K) + tuple(shape), generator=g, dtype=torch.float64)
    others = others.clamp(0.01, 0.99)
    w = 0.5 + torch.rand(N, generator=g, dtype=torch.float64)
    return base.to(device, dtype), others.to(device, dtype), w.to(device, dtype)


def naive(base, others, metric, weight=None):
    """Independent oracle (float64): the textbook formula with xlogy."""
    b, o = base.double().unsqueeze(1), others.double()
    if metric == "sse":
        t = (o - b) ** 2
    else:
        t = torch.xlogy(b, b) - torch.xlogy(b, o) + torch.xlogy(1 - b, 1 - b) - torch.xlogy(1 - b, 1 - o)
    out = t.reshape(t.shape[0], t.shape[1], -1).sum(-1) if t.numel() else t.new_zeros(t.shape[:2])
    return out if weight is None else out * weight.double()[:, None]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [(16,), (3, 5, 7), (2, 100, 90)])  # the last spans several segments
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(device, metric, shape, weighted):
    base, others, w = inputs(3, 4, shape, device=device)
    w = w if weighted else None
    got = ops.pair_distances(base, others, metric, weight=w)
    want = reference.pair_distances(base, others, metric, weight=w)
    assert got.shape == (3, 4) and got.dtype == base.dtype
    # Sums of L <= 18,000 non-negative float64 terms in another order: the recursive-summation
    # bound L * 2**-53 is 2e-12 relative; 1e-10 holds on any machine, and a wrong term fails it.
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    torch.testing.assert_close(got.cpu(), naive(base, others, metric, w).cpu(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("metric", METRICS)
def test_float32_matches_float64(device, metric):
    base, others, w = inputs(4, 5, (3, 9, 11), dtype=torch.float32, device=device)
    got = ops.pair_distances(base, others, metric, weight=w)
    want = reference.pair_distances(base.double(), others.double(), metric, weight=w.double())
    assert got.dtype == torch.float32
    # float32 terms (a few ulp = ~2e-7 each, no cancellation beyond a factor ~4 in the bce log
    # form) summed in a wider accumulator: 1e-5 relative is a 10x margin on any machine.
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("size", [1e-4, 1e-5])
def test_tiny_perturbations_keep_their_digits(device, metric, size):
    """docs/ops.md, pair_distances: float32 within 1e-3 relative error of float64 for perturbations ~1e-4.

    Both runs see the same (float32-representable) inputs, so the error measured is the op's own.
    """
    base, others, _ = inputs(3, 6, (3, 16, 16), dtype=torch.float32, device=device, pert=size)
    got = ops.pair_distances(base, others, metric)
    want = naive(base, others, metric)
    rel = ((got.double().cpu() - want.cpu()) / want.cpu()).abs().max().item()
    assert rel < 1e-3, rel
    # The float32 reference (the fallback) uses the same stable form.
    ref32 = reference.pair_distances(base, others, metric)
    assert ((ref32.double().cpu() - want.cpu()) / want.cpu()).abs().max().item() < 1e-3


def test_naive_float32_bce_would_fail():
    """The reason for the stable form: the textbook formula loses every digit in float32."""
    base, others, _ = inputs(2, 3, (3, 16, 16), dtype=torch.float32, pert=1e-4)
    b, o = base.unsqueeze(1), others
    t = torch.xlogy(b, b) - torch.xlogy(b, o) + torch.xlogy(1 - b, 1 - b) - torch.xlogy(1 - b, 1 - o)
    textbook = t.flatten(2).sum(-1)
    want = naive(base, others, "bce")
    assert ((textbook.double() - want) / want).abs().max().item() > 1e-2


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_zero_at_equality_and_binary_targets(device, dtype):
    base, _, _ = inputs(3, 1, (2, 5, 5), dtype=dtype, device=device)
    same = ops.pair_distances(base, base.unsqueeze(1).expand(3, 4, 2, 5, 5), "bce")
    # Exact: every term is computed as g(0) = 0 when other == base (docs/ops.md promises D(b, b) = 0).
    assert torch.equal(same, torch.zeros_like(same))
    # Exact 0/1 targets (binary digits): finite, no NaN, the xlogy values.
    b = torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.5]], dtype=dtype, device=device)
    o = torch.tensor([[[0.0, 1.0, 0.0, 1.0, 0.5], [0.1, 0.9, 1e-4, 1 - 2**-10, 0.5]]], dtype=dtype, device=device)
    got = ops.pair_distances(b, o, "bce")
    want = naive(b, o, "bce")
    assert torch.isfinite(got).all()
    assert got[0, 0].item() == 0  # exact: D(b, b) = 0 by construction, as above
    # A handful of terms, each a few ulp of its dtype, no cancellation.
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got.double().cpu(), want.cpu(), rtol=rtol, atol=0)
    # binary digits at a realistic size (the vectorised path falls back lane-group-wise)
    g = torch.Generator().manual_seed(3)
    b = (torch.rand(3, 1000, generator=g) < 0.3).to(dtype)
    b[:, ::7] = 0.5
    o = (0.02 + 0.96 * torch.rand(3, 4, 1000, generator=g)).to(dtype)
    o[:, 0] = b  # equality, binary included
    b, o = b.to(device), o.to(device)
    got = ops.pair_distances(b, o, "bce")
    assert torch.isfinite(got).all() and torch.equal(got[:, 0], torch.zeros_like(got[:, 0]))  # exact, as above
    # 1,000 non-negative terms of a few ulp each, accumulated wider than the dtype.
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got[:, 1:].double().cpu(), naive(b, o, "bce")[:, 1:].cpu(), rtol=rtol, atol=0)


@pytest.mark.parametrize("device", devices())
def test_nan_in_nan_out(device):
    base, others, _ = inputs(3, 4, (2, 6), device=device)
    others[1, 2, 0, 3] = float("nan")
    base[2, 1, 1] = float("nan")
    for metric in METRICS:
        got = ops.pair_distances(base, others, metric)
        nan = torch.zeros(3, 4, dtype=torch.bool, device=device)
        nan[1, 2] = True
        nan[2] = True
        assert torch.equal(torch.isnan(got), nan)


@pytest.mark.parametrize("device", devices())
def test_others_broadcast_from_base_is_exactly_zero(device):
    """base broadcast as others (K copies of base, stride 0) and an expanded weight: exactly zero,
    as every term of other == base is computed as 0 (other layouts: tests/test_op_contract.py)."""
    base, others, w = inputs(3, 8, (3, 6, 7), device=device)
    for metric in METRICS:
        got = ops.pair_distances(base, base.unsqueeze(1).expand_as(others), metric, weight=w[:1].expand(3))
        assert torch.equal(got, torch.zeros_like(got))


@given(
    N=st.integers(0, 3),
    K=st.integers(0, 5),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3),
    metric=st.sampled_from(METRICS),
    weighted=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_shapes_property(N, K, shape, metric, weighted, dtype):
    base, others, w = inputs(N, K, shape, dtype=dtype)
    w = w if weighted else None
    got = ops.pair_distances(base, others, metric, weight=w)
    assert got.shape == (N, K) and got.dtype == dtype
    torch.testing.assert_close(got.double(), naive(base, others, metric, w), rtol=1e-5, atol=1e-12)


def test_empty():
    # N = 0 (with gradients): tests/test_op_contract.py
    for shape, K in (((0, 3, 4, 4), 5), ((2, 3, 4, 4), 0), ((2, 0), 3)):
        base = torch.rand(shape)
        others = torch.rand((shape[0], K) + shape[1:])
        out = ops.pair_distances(base, others, "bce")
        assert out.shape == (shape[0], K)
        assert torch.equal(out, torch.zeros_like(out))  # exact: an empty sum is 0


def test_deterministic_and_thread_independent():
    base, others, w = inputs(5, 32, (3, 40, 40), dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        for metric in METRICS:
            outs = []
            for t in (1, 2, 1):
                torch.set_num_threads(t)
                outs.append(ops.pair_distances(base, others, metric, weight=w))
            # Bitwise, by design: segments of fixed length summed in a fixed order whatever the
            # thread count (csrc/distance/distance_entry.h; docs/ops.md's determinism promise).
            assert all(torch.equal(outs[0], o) for o in outs[1:])
    finally:
        torch.set_num_threads(threads)


# gradcheck, gradgradcheck, opcheck and torch.compile: tests/test_op_contract.py


def test_bad_inputs():
    base, others, w = inputs(2, 3, (4, 4))
    cases = [
        (lambda: ops.pair_distances(base, others, "l1"), ValueError, "metric"),
        # the raw dispatcher op is a stable-ABI kernel: it can raise only RuntimeError (same message);
        # the TypeError/ValueError convention is the Python wrappers' (docs/design.md)
        (lambda: torch.ops.vaeiso.pair_distances(base, others, "l1", None), RuntimeError, "metric"),
        (lambda: ops.pair_distances(base, others[:, 0], "sse"), ValueError, "others: expected shape"),
        (lambda: ops.pair_distances(base, others[:1], "sse"), ValueError, "others: expected 2 samples"),
        (lambda: ops.pair_distances(base, others[..., :3], "sse"), ValueError, "others: expected per-sample shape"),
        (lambda: ops.pair_distances(base[0, 0, 0], others, "sse"), ValueError, "base"),
        (lambda: ops.pair_distances(base, others.float(), "sse"), TypeError, "others: expected dtype"),
        (lambda: ops.pair_distances(base.int(), others.int(), "sse"), TypeError, "base: expected float32"),
        (lambda: ops.pair_distances(base, others, "sse", weight=w[:1]), ValueError, "weight: expected shape"),
        (lambda: ops.pair_distances(base, others, "sse", weight=w.float()), TypeError, "weight: expected dtype"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fn()


@pytest.mark.cuda
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_matches_cpu_and_half_types(metric):
    base, others, w = inputs(3, 32, (3, 20, 33), dtype=torch.float32, pert=1e-2)
    cpu = ops.pair_distances(base, others, metric, weight=w)
    cuda = ops.pair_distances(base.cuda(), others.cuda(), metric, weight=w.cuda())
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=0)
    for dt in (torch.float16, torch.bfloat16):
        got = ops.pair_distances(base.cuda().to(dt), others.cuda().to(dt), metric, weight=w.cuda().to(dt))
        want = naive(base.to(dt), others.to(dt), metric, w.to(dt))
        assert got.dtype == dt
        torch.testing.assert_close(got.double().cpu(), want, rtol=2e-2, atol=0)
    again = ops.pair_distances(base.cuda(), others.cuda(), metric, weight=w.cuda())
    assert torch.equal(again, cuda)  # bitwise: same input, same device, fixed segments (docs/ops.md, conventions)


@pytest.mark.cuda
def test_cuda_second_device_and_mismatch():
    base, others, _ = inputs(2, 3, (4, 4))
    with pytest.raises(ValueError, match="pair_distances: others: expected a tensor on"):
        ops.pair_distances(base.cuda(), others, "sse")
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    got = ops.pair_distances(base.to("cuda:1"), others.to("cuda:1"), "sse")
    assert got.device == torch.device("cuda:1")
    torch.testing.assert_close(got.cpu(), naive(base, others, "sse"))


def test_baseline_isa_build():
    """The baseline (non-AVX2) build of the CPU kernels, forced in a fresh process."""
    code = (
        "import torch, vaeiso_ext\n"
        "from vaeiso_ext import ops, reference\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for dt in (torch.float32, torch.float64):\n"
        "  b = (0.05 + 0.9 * torch.rand(3, 2, 30, 41, generator=g)).to(dt)\n"
        "  b[0, 0, :3] = 0; b[1, 1, :5] = 1\n"
        "  o = (b.unsqueeze(1) + 0.2 * torch.randn(3, 5, 2, 30, 41, generator=g).to(dt)).clamp(0.01, 0.99)\n"
        "  o[:, :2] = (b.unsqueeze(1) + 1e-4 * torch.randn(3, 2, 2, 30, 41, generator=g).to(dt)).clamp(0.01, 0.99)\n"
        "  w = torch.rand(3, generator=g).to(dt)\n"
        "  for m in ('sse', 'bce'):\n"
        "    got = ops.pair_distances(b, o, m, weight=w)\n"
        "    want = reference.pair_distances(b.double(), o.double(), m, weight=w.double())\n"
        "    torch.testing.assert_close(got.double(), want, rtol=1e-5 if dt == torch.float32 else 1e-12, atol=0)\n"
        "print('baseline ok')\n"
    )
    run_python(code, "baseline ok", VAEISO_CPU_ISA="baseline")


# ------------------------------------------------------------------ the fused backward


def _grads(fn, base, others, w, gy):
    """Gradients of sum(gy * fn(base, others, w)) w.r.t. base, others (and w when given)."""
    ins = [t.detach().clone().requires_grad_() for t in (base, others) + ((w,) if w is not None else ())]
    out = fn(ins[0], ins[1], ins[2] if w is not None else None)
    return torch.autograd.grad(out, ins, gy)


def _ref_grads(base, others, metric, w, gy):
    """Oracle: autograd through the float64 reference."""
    return _grads(
        lambda b, o, ww: reference.pair_distances(b, o, metric, weight=ww),
        base.double(),
        others.double(),
        None if w is None else w.double(),
        gy.double(),
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("shape", [(16,), (3, 5, 7), (2, 100, 90), (3, 100, 70)])  # odd L, several chunks, segments
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pert", [1e-3, 0.3])  # the series forms; beyond them the exact ones
def test_backward_matches_autograd_of_reference(device, metric, shape, weighted, pert):
    base, others, w = inputs(2, 5, shape, device=device, pert=pert)
    w = w if weighted else None
    gy = torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    got = _grads(lambda b, o, ww: ops.pair_distances(b, o, metric, weight=ww), base, others, w, gy)
    want = _ref_grads(base, others, metric, w, gy)
    # float64 throughout; d/d base sums K terms of either sign, so an absolute floor at the
    # scale of the largest entry (1e-10 of it: ~1e6 ulp of headroom, a wrong term fails it)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10 * b.abs().max().item())
    # the raw kernel, every subset of outputs
    for mask in ([True, True, True], [True, False, False], [False, True, False], [False, False, True]):
        gb, go, gw = torch.ops.vaeiso.pair_distances_backward(gy, base, others, metric, w, mask)
        for m, t, ref in zip(mask, (gb, go, gw), want + (None,) * (3 - len(want))):
            if m and ref is not None:
                torch.testing.assert_close(t, ref, rtol=1e-9, atol=1e-10 * ref.abs().max().item())
            else:
                assert t.numel() == 0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_low_precision(metric, dtype):
    base, others, w = inputs(3, 4, (3, 11, 13), dtype=torch.float32, pert=1e-2)
    base, others, w = base.to(dtype), others.to(dtype), w.to(dtype)
    gy = torch.randn(3, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    got = _grads(lambda b, o, ww: ops.pair_distances(b, o, metric, weight=ww), base, others, w, gy)
    want = _ref_grads(base, others, metric, w, gy)
    # float32 math (the half types too), rounded once to the dtype (eps 2**-8 for bfloat16)
    rtol = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=rtol * b.abs().max().item())


def test_backward_bce_edges_and_layouts():
    """Binary targets, equality and out-of-range others: the eager formulas' conventions; strided,
    transposed and expanded inputs and gradients: the contiguous result."""
    g = torch.Generator().manual_seed(4)
    b = (torch.rand(3, 40, generator=g, dtype=torch.float64) < 0.3).double()
    b[:, ::5] = 0.5
    o = 0.02 + 0.96 * torch.rand(3, 4, 40, generator=g, dtype=torch.float64)
    o[:, 0] = b  # equality, binary included
    o[:, 1, :3] = 0.0
    o[:, 1, 3:6] = 1.0
    gy = torch.randn(3, 4, generator=g, dtype=torch.float64)
    got = _grads(lambda bb, oo, _: ops.pair_distances(bb, oo, "bce"), b, o, None, gy)
    # the eager formulas (the path double backward takes) are the oracle for the conventions
    with torch.enable_grad():
        bb, oo = b.clone().requires_grad_(), o.clone().requires_grad_()
        want = torch.autograd.grad(ops.pair_distances(bb, oo, "bce"), (bb, oo), gy, create_graph=True)
    for a, w in zip(got, want):
        fin = torch.isfinite(w)
        assert torch.equal(fin, torch.isfinite(a)) and torch.equal(torch.isnan(w), torch.isnan(a))
        assert torch.equal(a[~fin], w[~fin].detach())
        torch.testing.assert_close(a[fin], w[fin].detach(), rtol=1e-9, atol=1e-12)
    base, others, w = inputs(3, 8, (3, 6, 7))
    gy = torch.randn(8, 3, generator=g, dtype=torch.float64).t()  # non-contiguous grad
    for metric in METRICS:
        want = _grads(
            lambda bb, oo, ww: ops.pair_distances(bb, oo, metric, weight=ww), base, others, w, gy.contiguous()
        )
        got = _grads(
            lambda bb, oo, ww: ops.pair_distances(bb.transpose(-1, -2), oo.transpose(-1, -2), metric, weight=ww),
            base.transpose(-1, -2).contiguous().transpose(-1, -2),
            others.transpose(-1, -2).contiguous().transpose(-1, -2),
            w,
            gy,
        )
        for a, ref in zip(got, want):
            torch.testing.assert_close(a, ref, rtol=1e-12, atol=1e-14)
        # a K-slice (strided along K) and the expanded gradient of .sum()
        bb, oo = base.clone().requires_grad_(), others.clone().requires_grad_()
        gb, go = torch.autograd.grad(ops.pair_distances(bb, oo[:, ::2], metric).sum(), (bb, oo))
        want = _ref_grads(base, others[:, ::2], metric, None, torch.ones(3, 4, dtype=torch.float64))
        torch.testing.assert_close(gb, want[0], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(go[:, ::2], want[1], rtol=1e-9, atol=1e-12)
        assert torch.equal(go[:, 1::2], torch.zeros_like(go[:, 1::2]))


def test_backward_deterministic_and_thread_independent():
    threads = torch.get_num_threads()
    cases = [
        inputs(5, 32, (3, 40, 40), dtype=torch.float32),
        inputs(1, 7, (3, 70, 90), dtype=torch.float32),
        inputs(300, 9, (17,), dtype=torch.float32),
        inputs(2, 16, (3, 100, 100), dtype=torch.float32),  # few samples: others split across threads
        inputs(2, 40, (3, 7), dtype=torch.float32),
    ]  # short rows: 8 others reduced at once or one by one
    try:
        for base, others, w in cases:
            gy = torch.randn(others.shape[:2], generator=torch.Generator().manual_seed(5))
            for metric in METRICS:
                outs = []
                for t in (1, 2, 3, 1):
                    torch.set_num_threads(t)
                    fwd = ops.pair_distances(base, others, metric, weight=w)
                    outs.append(
                        (fwd,)
                        + _grads(lambda b, o, ww: ops.pair_distances(b, o, metric, weight=ww), base, others, w, gy)
                    )
                # bitwise: fixed segments and chunks, fixed order over K, whatever the split
                for o in outs[1:]:
                    assert all(torch.equal(a, b) for a, b in zip(outs[0], o))
    finally:
        torch.set_num_threads(threads)


def test_forward_long_rows_and_few_samples():
    """One sample over several segments (its others split across threads), odd lengths."""
    for L in (1, 15, 17, 16384, 16385, 40001):
        base, others, w = inputs(1, 5, (L,), dtype=torch.float32, pert=0.1)
        for metric in METRICS:
            got = ops.pair_distances(base, others, metric, weight=w)
            want = naive(base, others, metric, w)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_size_one_dims_with_stray_strides():
    """A contiguous input whose size-1 dims (N = 1, K = 1) have any stride is read in place
    (csrc/distance/distance.cpp): the values and gradients of the float64 reference."""
    base = torch.as_strided(torch.rand(200, dtype=torch.float64), (1, 3, 4), (999, 4, 1))
    others = torch.as_strided(torch.rand(200, dtype=torch.float64), (1, 1, 3, 4), (555, 77, 4, 1))
    assert base.is_contiguous() and others.is_contiguous()
    for metric in ("sse", "bce"):
        b, o = base.clone().requires_grad_(), others.clone().requires_grad_()
        leaves = (torch.as_strided(b, base.shape, base.stride()), torch.as_strided(o, others.shape, others.stride()))
        got = ops.pair_distances(*leaves, metric)
        want = reference.pair_distances(base, others, metric)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        gb, go = torch.autograd.grad(got.sum(), (b, o))
        rb, ro = base.clone().requires_grad_(), others.clone().requires_grad_()
        wb, wo = torch.autograd.grad(reference.pair_distances(rb, ro, metric).sum(), (rb, ro))
        torch.testing.assert_close(gb, wb, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(go, wo, rtol=1e-12, atol=1e-12)
