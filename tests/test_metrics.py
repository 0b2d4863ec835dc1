"""Metric objects: distances against their formulas, Gram products against the metric tensors of
docs/ops.md (ssim_metric_gram and pair_distances), and those tensors against the second-order
expansion of each distance."""

import pytest
import torch

from vaeiso_ext import metrics, reference

ISO = [metrics.SSE, metrics.DownwardConvex, metrics.UpwardConvex]
DIAGONAL = ISO + [metrics.BCE]


def rand(*shape, seed=0, lo=0.05, hi=0.95):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def a_x(x):
    return 2 / 3 + 2 * (x.flatten(1) ** 2).sum(1) / 21


def formula(metric, x, y):
    """D(x, y) per sample from the textbook definitions (float64)."""
    xs, ys = x.flatten(1), y.flatten(1)
    if isinstance(metric, metrics.BCE):
        return (
            torch.xlogy(xs, xs) - torch.xlogy(xs, ys) + torch.xlogy(1 - xs, 1 - xs) - torch.xlogy(1 - xs, 1 - ys)
        ).sum(1)
    sse = ((xs - ys) ** 2).sum(1)
    if type(metric) is metrics.SSE:
        return sse
    return sse * (a_x(x) if type(metric) is metrics.DownwardConvex else 1 / a_x(x))


def metric_tensor(metric, x):
    """The diagonal of G_x per sample, (N, L)."""
    xs = x.flatten(1)
    if isinstance(metric, metrics.BCE):
        return 1 / (2 * xs * (1 - xs))
    return metric.scale(x)[:, None].expand_as(xs)


@pytest.mark.parametrize("cls", DIAGONAL)
@pytest.mark.parametrize("shape", [(16,), (3, 5, 6)])
def test_distance_and_pairs(cls, shape):
    m = cls()
    x = rand(4, *shape, seed=1) * (3 if cls in ISO else 1) - (1 if cls in ISO else 0)
    others = rand(4, 5, *shape, seed=2)
    d = m.distance(x, others[:, 0])
    assert d.shape == (4,)
    torch.testing.assert_close(d, formula(m, x, others[:, 0]))
    p = m.pairs(x, others)
    assert p.shape == (4, 5)
    want = torch.stack([formula(m, x, others[:, k]) for k in range(5)], 1)
    torch.testing.assert_close(p, want)
    # bitwise: distance is pairs with K = 1, and each (n, k) sum has the same fixed order
    assert torch.equal(m(x, others[:, 1]), p[:, 1])


def test_scale():
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(metrics.DownwardConvex().scale(x), 2 / 3 + 2 * (x**2).sum(1) / 21)
    torch.testing.assert_close(metrics.UpwardConvex().scale(x), 1 / (2 / 3 + 2 * (x**2).sum(1) / 21))
    assert torch.equal(metrics.SSE().scale(x), torch.ones(5, dtype=torch.float64))
    assert all(c().isotropic for c in ISO) and not metrics.BCE().isotropic
    assert not hasattr(metrics.BCE(), "scale")


@pytest.mark.parametrize("cls", DIAGONAL)
def test_gram_matches_metric_tensor(cls):
    m = cls()
    x, v = rand(3, 2, 4, 5, seed=3), torch.randn(3, 6, 2, 4, 5, dtype=torch.float64)
    g = m.gram(x, v)
    assert g.shape == (3, 6, 6)
    vf = v.flatten(2)
    want = torch.einsum("nkl,nl,njl->nkj", vf, metric_tensor(m, x), vf)
    torch.testing.assert_close(g, want)
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert (torch.linalg.eigvalsh(g) > -1e-10).all()
    torch.testing.assert_close(m.gram(x, v, diagonal=True), g.diagonal(dim1=1, dim2=2))


@pytest.mark.parametrize("cls", DIAGONAL)
def test_metric_tensor_is_second_order_of_distance(cls):
    """D(x, x + t v) / t**2 -> v^T G_x v: the metric tensors of Eq. 72 and the toy losses."""
    m = cls()
    x, v = rand(3, 20, seed=4), torch.randn(3, 1, 20, dtype=torch.float64)
    want = m.gram(x, v, diagonal=True)[:, 0]
    errs = []
    for t in (1e-2, 1e-3):
        got = m.distance(x, x + t * v[:, 0]) / t**2
        errs.append(((got - want) / want).abs().max().item())
    exact = max(errs) < 1e-10  # the square-error family is exactly quadratic
    assert exact or (errs[1] < 2e-2 and errs[1] < errs[0] / 5), errs


def test_bce_gram_saturated_base():
    """A saturated sigmoid (x exactly 0 or 1) has zero derivative there: finite, not NaN."""
    x = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    v = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -2.0]]], dtype=torch.float64)
    g = metrics.BCE().gram(x, v)
    want = torch.tensor([[[2.0, -4.0], [-4.0, 8.0]]], dtype=torch.float64)
    torch.testing.assert_close(g, want)
    # a direction that moves a saturated component: infinite, as the metric tensor is
    v = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    assert metrics.BCE().gram(x, v, diagonal=True).item() == float("inf")


@pytest.mark.parametrize("cls", DIAGONAL)
def test_distance_is_differentiable(cls):
    m = cls()
    x, y = rand(3, 7, seed=5).requires_grad_(), rand(3, 7, seed=6).requires_grad_()
    gx, gy = torch.autograd.grad(m.distance(x, y).sum(), (x, y))
    wx, wy = torch.autograd.grad(formula(m, x, y).sum(), (x, y))
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(gy, wy)


def test_by_name_and_bad_input():
    assert metrics.METRIC_NAMES == ("sse", "downward", "upward", "bce", "ssim")
    for name in metrics.METRIC_NAMES:
        assert metrics.by_name(name).name == name
    assert metrics.by_name("ssim", window_size=7).ssim_kwargs == {"window_size": 7}
    with pytest.raises(ValueError, match="metric: expected one of"):
        metrics.by_name("l2")
    x = rand(2, 5)
    with pytest.raises(ValueError, match="y: expected the shape of x"):
        metrics.SSE().distance(x, rand(2, 6))
    with pytest.raises(ValueError, match=r"v: expected shape \(N, K"):
        metrics.BCE().gram(x, rand(2, 5))
    with pytest.raises(ValueError, match=r"v: expected shape \(N, K"):
        metrics.SSE().gram(x, rand(3, 1, 5))
    with pytest.raises(ValueError, match="pair_distances: others: expected shape"):
        metrics.SSE().pairs(x, rand(2, 5))


# ---------------------------------------------------------------- SSIM (ops of issue 3)

SSIM_KW = dict(window_size=7, sigma=1.5)


def test_ssim_metric():
    m = metrics.SSIM(**SSIM_KW)
    x, others = rand(2, 3, 12, 13, seed=7), rand(2, 4, 3, 12, 13, seed=8)
    one_minus = lambda a, b: 1 - reference.ssim(a, b, **SSIM_KW)  # noqa: E731
    torch.testing.assert_close(m.distance(x, others[:, 0]), one_minus(x, others[:, 0]))
    want = torch.stack([one_minus(x, others[:, k]) for k in range(4)], 1)
    torch.testing.assert_close(m.pairs(x, others), want)


def test_ssim_gram_is_half_the_hessian():
    """docs/ops.md, ssim_metric_gram: G_x = 1/2 Hessian_y (1 - SSIM(x, y)) at y = x, checked with hvp."""
    m = metrics.SSIM(**SSIM_KW)
    x, v = rand(2, 3, 12, 12, seed=9), torch.randn(2, 3, 3, 12, 12, dtype=torch.float64)
    g = m.gram(x, v)
    f = lambda y: (1 - reference.ssim(x, y, **SSIM_KW)).sum()  # noqa: E731
    hv = torch.stack([torch.autograd.functional.hvp(f, x, v[:, j])[1] for j in range(3)], 1)
    want = 0.5 * torch.einsum("njl,nkl->njk", hv.flatten(2), v.flatten(2))
    # off-diagonal entries may cancel: absolute floor relative to the largest entry
    torch.testing.assert_close(g, want, rtol=1e-8, atol=1e-10 * want.abs().max().item())
    torch.testing.assert_close(m.gram(x, v, diagonal=True), g.diagonal(dim1=1, dim2=2))
    t = 1e-3  # and the finite form (1 - SSIM(x, x + t v)) / t**2
    fd = m.pairs(x, x.unsqueeze(1) + t * v) / t**2
    torch.testing.assert_close(fd, g.diagonal(dim1=1, dim2=2), rtol=1e-2, atol=0)


def test_ssim_distance_keeps_digits_for_tiny_perturbations():
    """metrics.SSIM().distance must not compute 1 - SSIM as one minus a ratio near 1."""
    from vaeiso_ext import metrics as M

    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64)
    y = x + 1e-4 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    m = M.SSIM()
    want = m.distance(x, y)
    got = m.distance(x.float(), y.float()).double()
    assert torch.all(want > 0)
    assert torch.all((got - want).abs() <= 1e-3 * want)
