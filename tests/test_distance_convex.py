"""pair_distances' convex metrics ("downward", "upward": the paper's a_x ||x - y||^2 and its
inverse, App. D), whose factor a_x the kernel computes from the base: against the float64
reference with the factor of vaeiso_ext.metrics as its weight, on rows that span the kernels'
chunks and segments, strided bases, thread counts, the metric classes that use them, and bad
input. The contract table (op_contract.py) covers every autograd mode, dtype, layout, compile and
opcheck."""

import pytest
import torch
from conftest import devices

from vaeiso_ext import metrics, ops, reference

CONVEX = {"downward": metrics.DownwardConvex(), "upward": metrics.UpwardConvex()}


def _oracle(base, others, name):
    b, o = base.detach().double().requires_grad_(), others.detach().double().requires_grad_()
    return b, o, reference.pair_distances(b, o, "sse", weight=CONVEX[name].scale(b))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", list(CONVEX))
# a short row (the toy's), several backward chunks (4096) and forward segments (16384) per row
@pytest.mark.parametrize("shape", [(16,), (3, 40, 50), (2, 100, 90)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_match_the_weighted_reference(device, name, shape, dtype):
    g = torch.Generator().manual_seed(len(shape) * 10 + shape[-1])
    base = 0.3 * torch.randn((3,) + shape, generator=g, dtype=torch.float64)
    others = base.unsqueeze(1) + 0.2 * torch.randn((3, 4) + shape, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = base.to(device, dtype).requires_grad_()
    o = others.to(device, dtype).requires_grad_()
    out = ops.pair_distances(b, o, name)
    got = torch.autograd.grad(out, (b, o), gy.to(device, dtype))
    rb, ro, want = _oracle(base, others, name)
    want_g = torch.autograd.grad(want, (rb, ro), gy)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(out.double().cpu(), want.detach(), **tol)
    for a, w in zip(got, want_g):
        scale = w.abs().max().item()
        torch.testing.assert_close(a.double().cpu(), w, rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))


@pytest.mark.parametrize("name", list(CONVEX))
def test_strided_base_and_thread_counts_give_the_same_bits(name):
    g = torch.Generator().manual_seed(7)
    wide = torch.randn(64, 2, 33, generator=g)
    base = wide[:, 0]  # a stride along N of 66, unit along L
    others = base.unsqueeze(1) + 0.1 * torch.randn(64, 5, 33, generator=g)
    gy = torch.randn(64, 5, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            b, o = base.clone().requires_grad_(), others.clone().requires_grad_()
            out = ops.pair_distances(b, o, name)
            results.append((out.detach(),) + torch.autograd.grad(out, (b, o), gy))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        for u, v in zip(r, results[0]):
            assert torch.equal(u, v)
    strided = ops.pair_distances(base, others, name)
    assert torch.equal(strided, ops.pair_distances(base.contiguous(), others, name))
    torch.testing.assert_close(strided.double(), _oracle(base, others, name)[2].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CONVEX))
def test_metric_classes_take_the_fused_factor(name):
    """metrics.DownwardConvex / UpwardConvex.pairs is one custom-op call (no eager ops for the
    factor, forward or backward) and agrees with the metric's own distance()."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    m = CONVEX[name]
    g = torch.Generator().manual_seed(8)
    base = torch.randn(6, 4, 4, generator=g, requires_grad=True)
    others = torch.randn(6, 3, 4, 4, generator=g, requires_grad=True)
    with Ops() as seen:
        out = m.pairs(base, others)
        out.backward(torch.ones_like(out))
    # besides the seed gradient and the leaves' gradient bookkeeping (detach), nothing but the op
    bookkeeping = {"aten.ones_like.default", "aten.detach.default"}
    assert [n for n in seen.names if n not in bookkeeping] == [
        "vaeiso.pair_distances.default",
        "vaeiso.pair_distances_backward.default",
    ], seen.names
    want = torch.stack([m.distance(base, others[:, k]) for k in range(3)], 1)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_weight_with_a_convex_metric_is_refused():
    b, o, w = torch.rand(2, 5), torch.rand(2, 3, 5), torch.rand(2)
    with pytest.raises(ValueError, match=r'pair_distances: weight: expected None with metric "downward"'):
        ops.pair_distances(b, o, "downward", weight=w)
    with pytest.raises(RuntimeError, match=r'pair_distances: weight: expected None with metric "upward"'):
        torch.ops.vaeiso.pair_distances(b, o, "upward", w)
    with pytest.raises(ValueError, match=r"pair_distances: metric: expected one of .*'upward'"):
        ops.pair_distances(b, o, "convex")
