"""The SSIM family does not change when the images and ``data_range`` are scaled together.

At every scale from 1e-30 to 1e30 in float32 and 1e-150 to 1e150 in float64, each op on
``(s x, s y)`` with ``data_range=s`` is compared with the float64 reference at scale 1 on the very
same input values divided back by ``s`` (so the rounding of ``s x`` to the dtype is not counted
against the op), with the tolerance the unscaled case is held to elsewhere in the suite; scale 1
is in the sweep, so each tolerance is checked there too. Before the inputs were normalised by
their range, float32 lost two digits at 1e10 and gave NaN at 1e12 and 1e-12, float64 NaN at 1e80.
"""

import pytest
import torch
from conftest import pair

import vaeiso_ext  # noqa: F401
from vaeiso_ext import ops
from vaeiso_ext import reference as ref

SCALES = {
    torch.float32: [1e-30, 1e-20, 1e-12, 1e-10, 3.7e-3, 1.0, 255.0, 1e10, 1e12, 1e20, 1e30],
    torch.float64: [1e-150, 1e-80, 1e-20, 1.0, 255.0, 1e20, 1e80, 1e150],
}
CASES = [(dt, s) for dt, scales in SCALES.items() for s in scales]
IDS = [f"{str(dt)[6:]}-{s:g}" for dt, s in CASES]
MS_KW = dict(weights=(0.3, 0.3, 0.4), window_size=5)  # three levels on 40 x 40 images

# The unscaled tolerances (tests/test_ssim.py, tests/test_ms_ssim.py): float32 against the
# float64 reference, float64 against it (round-off of means over a few thousand terms).
SSIM_ATOL = {torch.float32: 2e-6, torch.float64: 1e-11}
MS_ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}
L1_ATOL = {torch.float32: 1e-6, torch.float64: 1e-11}
GRAD_ATOL = {torch.float32: 1e-4, torch.float64: 1e-9}  # relative to the largest gradient


def _scaled(shape, dtype, scale, seed=0, noise=0.2):
    """``(s x, s y)`` in ``dtype`` and the same values at scale 1 in float64."""
    x, y = pair(shape, seed=seed, noise=noise)
    xs, ys = (x * scale).to(dtype), (y * scale).to(dtype)
    return xs, ys, xs.double() / scale, ys.double() / scale


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_and_one_minus_ssim(dtype, scale, padding):
    xs, ys, x1, y1 = _scaled((2, 3, 24, 28), dtype, scale)
    want = ref.ssim(x1, y1, padding=padding)
    got = ops.ssim(xs, ys, data_range=scale, padding=padding)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=0, atol=SSIM_ATOL[dtype])
    got = ops.one_minus_ssim(xs, ys, data_range=scale, padding=padding)
    torch.testing.assert_close(got.double(), 1 - want, rtol=0, atol=SSIM_ATOL[dtype])
    # the (min, max) form and a per-image tensor (which divides by the range, not by a power of two)
    got = ops.ssim(xs, ys, data_range=(0.0, scale), padding=padding)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=SSIM_ATOL[dtype])
    got = ops.ssim(xs, ys, data_range=torch.full((2,), scale, dtype=dtype), padding=padding)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=SSIM_ATOL[dtype])


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
def test_ssim_gradients(dtype, scale):
    xs, ys, x1, y1 = _scaled((2, 3, 20, 20), dtype, scale, seed=1)
    xa, ya = xs.clone().requires_grad_(), ys.clone().requires_grad_()
    gx, gy = torch.autograd.grad(ops.ssim(xa, ya, data_range=scale).sum(), (xa, ya))
    xr, yr = x1.clone().requires_grad_(), y1.clone().requires_grad_()
    rx, ry = torch.autograd.grad(ref.ssim(xr, yr).sum(), (xr, yr))
    tol = GRAD_ATOL[dtype] * rx.abs().max().item()
    # d/d(s x) = (1/s) d/dx
    torch.testing.assert_close(gx.double() * scale, rx, rtol=0, atol=tol)
    torch.testing.assert_close(gy.double() * scale, ry, rtol=0, atol=tol)


@pytest.mark.parametrize("scale", SCALES[torch.float64])
def test_double_backward_and_forward_mode_float64(scale):
    xs, ys, x1, y1 = _scaled((1, 2, 12, 12), torch.float64, scale, seed=2)
    t = torch.randn(xs.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def hvp(f, x, y, tangent):
        xa = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(f(xa, y).sum(), xa, create_graph=True)
        return torch.autograd.grad((g * tangent).sum(), xa)[0]

    got = hvp(lambda a, b: ops.ssim(a, b, window_size=5, data_range=scale), xs, ys, t * scale)
    want = hvp(lambda a, b: ref.ssim(a, b, window_size=5), x1, y1, t)
    # d2/d(s x)2 (s t) = (1/s) d2/dx2 t
    torch.testing.assert_close(got * scale, want, rtol=1e-9, atol=1e-9 * want.abs().max().item())
    _, jv = torch.func.jvp(lambda a: ops.ssim(a, ys, window_size=5, data_range=scale), (xs,), (t * scale,))
    _, jv_ref = torch.func.jvp(lambda a: ref.ssim(a, y1, window_size=5), (x1,), (t,))
    torch.testing.assert_close(jv, jv_ref, rtol=1e-9, atol=1e-13)
    # vmap folds into N, the division too
    got = torch.func.vmap(lambda a, b: ops.ssim(a, b, window_size=5, data_range=scale))(xs[None], ys[None])
    torch.testing.assert_close(got[0], ref.ssim(x1, y1, window_size=5), rtol=0, atol=SSIM_ATOL[torch.float64])


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
def test_ms_ssim(dtype, scale):
    xs, ys, x1, y1 = _scaled((2, 2, 40, 40), dtype, scale, seed=4)
    want = ref.ms_ssim(x1, y1, **MS_KW)
    got = ops.ms_ssim(xs, ys, data_range=scale, **MS_KW)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=MS_ATOL[dtype])
    xa = xs.clone().requires_grad_()
    (gx,) = torch.autograd.grad(ops.ms_ssim(xa, ys, data_range=scale, **MS_KW).sum(), xa)
    xr = x1.clone().requires_grad_()
    (rx,) = torch.autograd.grad(ref.ms_ssim(xr, y1, **MS_KW).sum(), xr)
    torch.testing.assert_close(gx.double() * scale, rx, rtol=0, atol=GRAD_ATOL[dtype] * rx.abs().max().item())


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_l1_loss(dtype, scale, padding):
    """The SSIM term is scale-free, the L1 term is in the images' units (it scales with s)."""
    xs, ys, x1, y1 = _scaled((2, 3, 24, 28), dtype, scale, seed=5)
    one_minus = 1 - ref.ssim(x1, y1, padding=padding)
    l1 = (x1 - y1).abs().mean(dim=(1, 2, 3))
    got = ops.ssim_l1_loss(xs, ys, ssim_weight=1.0, data_range=scale, padding=padding)
    torch.testing.assert_close(got.double(), one_minus, rtol=0, atol=L1_ATOL[dtype])
    got = ops.ssim_l1_loss(xs, ys, ssim_weight=0.0, data_range=scale, padding=padding)
    torch.testing.assert_close(got.double() / scale, l1, rtol=0, atol=L1_ATOL[dtype])
    got = ops.ssim_l1_loss(xs, ys, data_range=scale, padding=padding)
    # the default weights: each term with its own tolerance, the L1 one in the images' units
    torch.testing.assert_close(
        got.double(), 0.8 * scale * l1 + 0.2 * one_minus, rtol=0, atol=L1_ATOL[dtype] * max(1.0, scale)
    )


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
def test_ssim_pairs_keeps_its_accuracy(dtype, scale):
    """Cancellation-free ``1 - SSIM`` of tiny perturbations: the relative accuracy of the
    unscaled test (tests/test_ssim.py), at every scale."""
    eps, rel = (1e-4, 1e-3) if dtype == torch.float32 else (1e-3, 1e-7)
    g = torch.Generator().manual_seed(6)
    x = torch.rand((2, 3, 24, 24), generator=g, dtype=torch.float64)
    others = x.unsqueeze(1) + eps * torch.randn((2, 4, 3, 24, 24), generator=g, dtype=torch.float64)
    bs, os_ = (x * scale).to(dtype), (others * scale).to(dtype)
    want = ref.ssim_pairs(bs.double() / scale, os_.double() / scale)
    got = ops.ssim_pairs(bs, os_, data_range=scale)
    err = ((got.double() - want).abs() / want).max()
    assert err < rel, err


@pytest.mark.parametrize("dtype,scale", CASES, ids=IDS)
def test_ssim_metric_gram(dtype, scale):
    """``u^T G v`` is unchanged when x, the directions and the range scale together."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand((2, 3, 20, 20), generator=g, dtype=torch.float64)
    v = 0.1 * torch.randn((2, 4, 3, 20, 20), generator=g, dtype=torch.float64)
    xs, vs = (x * scale).to(dtype), (v * scale).to(dtype)
    want = ref.ssim_metric_gram(xs.double() / scale, vs.double() / scale)
    got = ops.ssim_metric_gram(xs, vs, data_range=scale)
    # the unscaled tolerances of tests/test_ssim.py (float32: test_metric_gram_symmetric_psd_and_float32)
    if dtype == torch.float32:
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6 * want.abs().max().item())
    else:
        # (float64: test_metric_gram_matches_reference)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * want.abs().max().item())


def test_compiled_with_ranges():
    """torch.compile traces the normalisation (number and tensor ranges) into the graph."""
    torch._dynamo.reset()
    xs, ys, x1, y1 = _scaled((2, 3, 16, 16), torch.float32, 255.0, seed=8)
    rng = torch.full((2,), 255.0)

    def f(a, b):
        return (
            ops.ssim(a, b, window_size=7, data_range=255.0).sum()
            + ops.ssim_l1_loss(a, b, window_size=7, data_range=rng).sum()
            + ops.ssim_l1_loss(a[0], b[0], window_size=7, data_range=(0, 255))
        )

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xa, xb = xs.clone().requires_grad_(), xs.clone().requires_grad_()
    out_c, out_e = compiled(xa, ys), f(xb, ys)
    torch.testing.assert_close(out_c, out_e)
    out_c.backward(), out_e.backward()
    torch.testing.assert_close(xa.grad, xb.grad)
