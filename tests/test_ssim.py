"""SSIM family (docs/ops.md, ssim to ssim_metric_gram): ssim, nn.SSIMLoss, ssim_pairs, ssim_metric_gram.

Oracles: vaeiso_ext.reference in float64, scikit-image and pytorch_msssim. Small images keep
gradcheck, Hessians and torch.compile fast.
"""

import pytest
import torch
from conftest import degrade, photos, run_python
from conftest import pair as _pair

import vaeiso_ext
from vaeiso_ext import nn as vnn
from vaeiso_ext import ops
from vaeiso_ext import reference as ref
from vaeiso_ext.ops._ssim import one_minus_ssim

# ---------------------------------------------------------------- shared fixtures

HAS_CUDA_KERNELS = vaeiso_ext.build_info()["cuda"] and torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and the CUDA kernels"),
        ],
    ),
]
PADDINGS = ["valid", "same"]
# Absolute tolerance for float64 SSIM values against the reference: a mean over <= ~5,000
# windowed values of order 1 (each from sums of <= 121 taps) in another order; the
# recursive-summation bound 5,000 * 2**-53 = 6e-13, so 1e-11 holds on any machine.
F64_ATOL = 1e-11


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- ssim: values


@pytest.mark.parametrize("source", ["photos", "random"])
def test_ssim_matches_skimage_and_pytorch_msssim(source):
    from pytorch_msssim import ssim as ms_ssim
    from skimage.metrics import structural_similarity

    if source == "photos":
        x64 = photos().numpy()
        y64 = degrade(photos()).numpy()
    else:
        x, y = _pair((3, 3, 40, 52), noise=0.3, seed=3)
        x64, y64 = x.numpy(), y.numpy()
    x32, y32 = torch.from_numpy(x64).float(), torch.from_numpy(y64).float()
    ours = ops.ssim(x32, y32)
    assert ours.dtype == torch.float32 and ours.shape == (3,)
    sk = torch.tensor(
        [
            structural_similarity(
                a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0
            )
            for a, b in zip(x64, y64)
        ]
    )
    torch.testing.assert_close(ours.double(), sk, rtol=0, atol=1e-5)
    ms = ms_ssim(x32, y32, data_range=1, size_average=False)
    torch.testing.assert_close(ours, ms, rtol=0, atol=1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("window_size,sigma", [(11, 1.5), (7, 1.0), (3, 0.8), (1, 1.0)])
def test_ssim_matches_reference(padding, window_size, sigma):
    x, y = _pair((2, 3, 17, 23), seed=4)
    kw = dict(window_size=window_size, sigma=sigma, k1=0.02, k2=0.05, data_range=1.3, padding=padding)
    expected = ref.ssim(x, y, **kw)
    torch.testing.assert_close(ops.ssim(x, y, **kw), expected, rtol=0, atol=F64_ATOL)
    torch.testing.assert_close(ops.ssim(x.float(), y.float(), **kw).double(), expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(one_minus_ssim(x, y, **kw), 1 - expected, rtol=1e-10, atol=F64_ATOL)


@pytest.mark.parametrize("padding", PADDINGS)
def test_ssim_large_window(padding):
    x, y = _pair((1, 2, 40, 47), seed=41)
    kw = dict(window_size=31, sigma=6.0, padding=padding)
    torch.testing.assert_close(ops.ssim(x, y, **kw), ref.ssim(x, y, **kw), rtol=0, atol=F64_ATOL)
    xa = x.clone().requires_grad_()
    ops.ssim(xa, y, **kw).sum().backward()
    xr = x.clone().requires_grad_()
    ref.ssim(xr, y, **kw).sum().backward()
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-9, atol=1e-15)
    others = torch.stack([y, x], 1)
    torch.testing.assert_close(ops.ssim_pairs(x, others, **kw), ref.ssim_pairs(x, others, **kw), rtol=1e-9, atol=1e-14)


def test_ssim_identical_images_is_one():
    x, _ = _pair((2, 3, 16, 16))
    torch.testing.assert_close(ops.ssim(x, x), torch.ones(2, dtype=torch.float64), rtol=0, atol=F64_ATOL)
    # exact: the cancellation-free form has mu_d = s_dd = 0 when y == x, so every window gives 0
    assert torch.all(one_minus_ssim(x, x) == 0)


# ---------------------------------------------------------------- ssim: gradients


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("window_size", [11, 5])
def test_ssim_gradients_match_reference_autograd(padding, window_size):
    x, y = _pair((2, 3, 19, 16), seed=5)
    w = torch.tensor([0.7, -1.3], dtype=torch.float64)
    kw = dict(window_size=window_size, padding=padding, data_range=0.9)
    grads = []
    for fn in (ops.ssim, ref.ssim):
        xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
        (fn(xa, ya, **kw) * w).sum().backward()
        grads.append((xa.grad, ya.grad))
    for ours, expected in zip(grads[0], grads[1]):
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-14)


def test_ssim_float32_gradients_close_to_float64():
    x, y = _pair((2, 3, 24, 24), seed=6)
    xa, ya = x.float().requires_grad_(), y.float().requires_grad_()
    ops.ssim(xa, ya).sum().backward()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref.ssim(xr, yr).sum().backward()
    scale = xr.grad.abs().max()
    torch.testing.assert_close(xa.grad.double(), xr.grad, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(ya.grad.double(), yr.grad, rtol=0, atol=1e-4 * scale)


def test_ssim_gradient_of_one_input_only_and_no_grad_forward():
    x, y = _pair((2, 2, 12, 12), seed=7)
    ya = y.clone().requires_grad_()
    ops.ssim(x, ya).sum().backward()
    yr = y.clone().requires_grad_()
    ref.ssim(x, yr).sum().backward()
    torch.testing.assert_close(ya.grad, yr.grad, rtol=1e-9, atol=1e-14)
    # Forward without maps (need_maps=False), then backward anyway: the maps are recomputed.
    xa = x.clone().requires_grad_()
    om, _, maps = torch.ops.vaeiso.ssim_forward(xa, y, 11, 1.5, 0.01, 0.03, 1.0, False, False, False, False)
    assert maps.numel() == 0
    (1 - om.mean(1)).sum().backward()
    xr = x.clone().requires_grad_()
    ref.ssim(xr, y).sum().backward()
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-9, atol=1e-14)


def test_ssim_double_backward_matches_reference():
    # A gradient penalty: d/dx of |d ssim/dx|^2 through the fused op against the reference.
    x, y = _pair((1, 1, 8, 8))
    got, want = [], []
    for fn, out in ((ops.ssim, got), (ref.ssim, want)):
        xa = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(xa, y, window_size=3).sum(), xa, create_graph=True)
        out.append(torch.autograd.grad(g.square().sum(), xa)[0])
    # float64, the same formula summed in another order: round-off only
    torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-12)
    # the raw backward kernel has no derivative of its own and says so
    _, _, maps = torch.ops.vaeiso.ssim_forward(x, y, 3, 1.5, 0.01, 0.03, 1.0, False, False, False, True)
    xg = x.clone().requires_grad_()
    gx, _ = torch.ops.vaeiso.ssim_backward(torch.ones(1, 1, dtype=x.dtype), x.new_empty(0), xg, y, maps, 3, 1.5, False)
    with pytest.raises(RuntimeError, match="ssim_backward: the raw backward kernel has no derivative"):
        torch.autograd.grad(gx.sum(), xg)


# ---------------------------------------------------------------- nn.SSIMLoss


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ssim_loss_module(reduction):
    x, y = _pair((3, 3, 16, 16), seed=9)
    loss_fn = vnn.SSIMLoss(reduction=reduction, window_size=7, padding="same")
    per = 1 - ref.ssim(x, y, window_size=7, padding="same")
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = loss_fn(xa, ya)
    # 1 - ref.ssim carries the reference's absolute round-off (see F64_ATOL), summed over 3 images
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=3 * F64_ATOL)
    out.sum().backward()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref_loss = 1 - ref.ssim(xr, yr, window_size=7, padding="same")
    (ref_loss.mean() if reduction == "mean" else ref_loss.sum()).backward()
    torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(ya.grad, yr.grad, rtol=1e-9, atol=1e-14)


def test_ssim_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        vnn.SSIMLoss(reduction="max")
    with pytest.raises(ValueError, match="window_size"):
        vnn.SSIMLoss(window_size=4)
    with pytest.raises(ValueError, match="data_range"):
        vnn.SSIMLoss(data_range=-1.0)
    with pytest.raises(ValueError, match="padding"):
        vnn.SSIMLoss(padding="reflect")


def test_ssim_loss_keeps_digits_for_tiny_differences():
    x, _ = _pair((2, 3, 24, 24), seed=10)
    y = x + 1e-4 * torch.randn(x.shape, generator=_gen(11), dtype=torch.float64)
    expected = 1 - ref.ssim(x, y)
    ours = vnn.SSIMLoss(reduction="none")(x.float(), y.float())
    rel = ((ours.double() - expected).abs() / expected).max()
    assert rel < 1e-3, rel


# ---------------------------------------------------------------- ssim_pairs


@pytest.mark.parametrize("padding", PADDINGS)
def test_ssim_pairs_equals_separate_calls(padding):
    x, _ = _pair((2, 3, 18, 21), seed=12)
    g = _gen(13)
    K = 5
    scales = torch.tensor([0.0, 1e-3, 0.05, 0.3, 1.0], dtype=torch.float64).view(1, K, 1, 1, 1)
    others = x.unsqueeze(1) + scales * torch.randn((2, K, 3, 18, 21), generator=g, dtype=torch.float64)
    kw = dict(window_size=7, padding=padding, data_range=1.5)
    out = ops.ssim_pairs(x, others, **kw)
    assert out.shape == (2, K) and out.dtype == torch.float64
    sep = torch.stack([one_minus_ssim(x, others[:, k], **kw) for k in range(K)], dim=1)
    # Both cancellation-free, along different code paths (base statistics shared or not): values
    # down to ~1e-7 (scale 1e-3) keep ~1e-12 relative; 1e-10 relative with a 1e-16 floor.
    torch.testing.assert_close(out, sep, rtol=1e-10, atol=1e-16)
    torch.testing.assert_close(out, ref.ssim_pairs(x, others, **kw), rtol=1e-9, atol=1e-14)
    assert torch.all(out[:, 0] == 0)  # exact: d = 0 gives mu_d = s_dd = 0 in every window
    out32 = ops.ssim_pairs(x.float(), others.float(), **kw)
    sep32 = torch.stack([1 - ops.ssim(x.float(), others[:, k].float(), **kw) for k in range(K)], dim=1)
    torch.testing.assert_close(out32[:, 2:], sep32[:, 2:], rtol=0, atol=2e-6)


@pytest.mark.parametrize("eps", [1e-4, 1e-3])
def test_ssim_pairs_float32_has_no_cancellation(eps):
    x, _ = _pair((3, 3, 32, 32), seed=14)
    others = x.unsqueeze(1) + eps * torch.randn((3, 6, 3, 32, 32), generator=_gen(15), dtype=torch.float64)
    x32, o32 = x.float(), others.float()
    expected = ref.ssim_pairs(x32.double(), o32.double())
    ours = ops.ssim_pairs(x32, o32)
    rel = ((ours.double() - expected).abs() / expected).max()
    assert rel < 1e-3, rel


def test_ssim_pairs_reference_gradients():
    x, _ = _pair((2, 2, 9, 9), seed=16)
    others = x.unsqueeze(1) + 0.1 * torch.randn((2, 3, 2, 9, 9), generator=_gen(17), dtype=torch.float64)
    x.requires_grad_(), others.requires_grad_()  # gradcheck: tests/test_op_contract.py
    w = torch.randn(2, 3, generator=_gen(18), dtype=torch.float64)
    gb, go = torch.autograd.grad((ops.ssim_pairs(x, others, window_size=5) * w).sum(), (x, others))
    rb, ro = torch.autograd.grad((ref.ssim_pairs(x, others, window_size=5) * w).sum(), (x, others))
    torch.testing.assert_close(gb, rb, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(go, ro, rtol=1e-9, atol=1e-14)


# ---------------------------------------------------------------- ssim_metric_gram


def _gram_inputs(N=2, K=3, C=2, H=14, W=15, seed=20):
    x, _ = _pair((N, C, H, W), seed=seed)
    v = torch.randn((N, K, C, H, W), generator=_gen(seed + 1), dtype=torch.float64)
    return x, v


@pytest.mark.parametrize("padding", PADDINGS)
def test_metric_gram_matches_reference(padding):
    x, v = _gram_inputs()
    kw = dict(window_size=7, padding=padding, k1=0.02, data_range=1.2)
    G = ops.ssim_metric_gram(x, v, **kw)
    assert G.shape == (2, 3, 3)
    # Off-diagonal entries are sums of signed terms that may cancel: tolerance relative to the
    # largest entry (sums of ~400 terms: bound 400 * 2**-53 = 5e-14 of the magnitudes).
    tol = dict(rtol=1e-10, atol=1e-10 * G.abs().max().item())
    torch.testing.assert_close(G, ref.ssim_metric_gram(x, v, **kw), **tol)
    d = ops.ssim_metric_gram(x, v, diagonal=True, **kw)
    torch.testing.assert_close(d, torch.diagonal(G, dim1=1, dim2=2), **tol)
    torch.testing.assert_close(d, ref.ssim_metric_gram(x, v, diagonal=True, **kw), **tol)


@pytest.mark.parametrize("padding", PADDINGS)
def test_metric_gram_is_half_the_hessian(padding):
    x, v = _gram_inputs(N=2, K=3, C=2, H=11, W=12, seed=22)
    kw = dict(window_size=5, padding=padding)
    G = ops.ssim_metric_gram(x, v, **kw)

    def loss(y):
        return (1 - ref.ssim(x, y, **kw)).sum()  # images are independent: Hessian is block-diagonal

    hv = torch.stack([torch.autograd.functional.hvp(loss, x.clone(), v[:, k])[1] for k in range(v.shape[1])], 1)
    H = torch.einsum("njchw,nkchw->njk", v, hv)
    torch.testing.assert_close(G, H / 2, rtol=1e-7, atol=1e-10 * G.abs().max().item())  # as above


def test_metric_gram_symmetric_psd_and_float32():
    x, v = _gram_inputs(N=2, K=8, C=3, H=20, W=20, seed=24)
    G = ops.ssim_metric_gram(x, v)
    assert torch.equal(G, G.transpose(1, 2))  # exact: the op promises symmetry (it symmetrises)
    eig = torch.linalg.eigvalsh(G)
    assert eig.min() > -1e-12 * eig.max()
    G32 = ops.ssim_metric_gram(x.float(), v.float())
    assert G32.dtype == torch.float32 and torch.equal(G32, G32.transpose(1, 2))
    torch.testing.assert_close(G32.double(), G, rtol=1e-4, atol=1e-6 * G.abs().max().item())


def test_metric_gram_diagonal_matches_finite_differences():
    x, v = _gram_inputs(N=2, K=2, C=3, H=16, W=16, seed=26)
    d = ops.ssim_metric_gram(x, v, diagonal=True)
    errs = []
    for eps in (1e-2, 1e-3, 1e-4):
        fd = ops.ssim_pairs(x, x.unsqueeze(1) + eps * v) / eps**2
        errs.append(((fd - d).abs() / d).max().item())
    assert errs[1] < errs[0] and errs[2] < errs[1], errs
    assert errs[2] < 1e-3, errs


def test_ssim_filter_gradcheck_and_adjoint():
    t = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    for same in (False, True):
        assert torch.autograd.gradcheck(lambda a: torch.ops.vaeiso.ssim_filter(a, 5, 1.0, same, False), (t,))
        torch.testing.assert_close(
            torch.ops.vaeiso.ssim_filter(t, 5, 1.0, same, False),
            ref.window_filter(t, 5, 1.0, "same" if same else "valid"),
        )
        p = torch.randn(torch.ops.vaeiso.ssim_filter(t, 5, 1.0, same, False).shape, dtype=torch.float64)
        lhs = (torch.ops.vaeiso.ssim_filter(t, 5, 1.0, same, False) * p).sum()
        rhs = (t * torch.ops.vaeiso.ssim_filter(p, 5, 1.0, same, True)).sum()
        torch.testing.assert_close(lhs, rhs)


# ---------------------------------------------------------------- edge cases


def test_constant_images_give_finite_results():
    x = torch.full((2, 3, 16, 16), 0.5, dtype=torch.float32)
    y = torch.rand(2, 3, 16, 16, generator=_gen(30))
    for a, b in ((x, x), (x, y), (y, x), (torch.zeros_like(x), torch.zeros_like(x))):
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = ops.ssim(aa, bb, padding="same")
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(aa.grad).all() and torch.isfinite(bb.grad).all()
    torch.testing.assert_close(ops.ssim(x, x), torch.ones(2))
    assert torch.isfinite(ops.ssim_pairs(x, torch.stack([x, y], 1))).all()
    G = ops.ssim_metric_gram(x, torch.randn(2, 3, 3, 16, 16, generator=_gen(31)))
    assert torch.isfinite(G).all()


def test_nan_propagates_to_its_image_only():
    x, y = _pair((2, 1, 12, 12), dtype=torch.float32, seed=32)
    x[1, 0, 5, 5] = float("nan")
    out = ops.ssim(x, y)
    assert torch.isfinite(out[0]) and torch.isnan(out[1])
    pairs = ops.ssim_pairs(y, torch.stack([x, y], 1))
    assert torch.isnan(pairs[1, 0]) and torch.isfinite(pairs[0]).all() and pairs[1, 1] == 0


def test_empty_sample_sets():
    """K = 0 others or directions (N = 0 for every op: tests/test_op_contract.py)."""
    x1, y = _pair((2, 3, 16, 16), dtype=torch.float32)
    assert ops.ssim_pairs(x1, torch.zeros(2, 0, 3, 16, 16)).shape == (2, 0)
    assert ops.ssim_metric_gram(x1, torch.zeros(2, 0, 3, 16, 16)).shape == (2, 0, 0)
    assert ops.ssim_pairs(x1[:0], torch.zeros(0, 4, 3, 16, 16)).shape == (0, 4)
    assert vnn.SSIMLoss(reduction="none")(x1[:0], y[:0]).shape == (0,)


def test_deterministic_and_thread_count_independent():
    x, y = _pair((3, 3, 40, 40), dtype=torch.float32, seed=36)
    others = torch.stack([y, x.flip(-1)], 1)
    threads = torch.get_num_threads()

    def run():
        xa, ya = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = ops.ssim(xa, ya)
        out.sum().backward()
        return out, xa.grad, ya.grad, ops.ssim_pairs(x, others)

    first = run()
    try:
        torch.set_num_threads(1)
        single = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, run(), single):
        # bitwise by design: fixed summation order whatever the thread count (docs/ops.md, conventions)
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(window_size=4), "window_size: expected an odd"),
        (dict(window_size=0), "window_size: expected an odd"),
        (dict(window_size=21), "window_size: the window \\(21\\) is larger than the image"),
        (dict(data_range=-1.0), "data_range: expected a positive"),
        (dict(data_range=0.0), "data_range: expected a positive"),
        (dict(k1=0.0), "k1: expected a positive"),
        (dict(k2=-0.03), "k2: expected a positive"),
        (dict(sigma=0.0), "sigma: expected a positive"),
        (dict(padding="reflect"), "padding: expected"),
    ],
)
def test_bad_arguments_raise_clear_errors(bad, match):
    x, y = _pair((2, 3, 16, 20), dtype=torch.float32)
    v = torch.zeros(2, 2, 3, 16, 20)
    for call in (
        lambda: ops.ssim(x, y, **bad),
        lambda: ops.ssim_pairs(x, v, **bad),
        lambda: ops.ssim_metric_gram(x, v, **bad),
    ):
        with pytest.raises(ValueError, match=match):
            call()


def test_bad_tensors_raise_clear_errors():
    x, y = _pair((2, 3, 16, 16), dtype=torch.float32)
    # one convention (checked over every entry point in test_ssim_inputs.py): ValueError for a
    # wrong shape, TypeError for a wrong dtype
    with pytest.raises(ValueError, match="ssim: y: expected shape"):
        ops.ssim(x, y[:, :2])
    with pytest.raises(TypeError, match="ssim: y: expected dtype"):
        ops.ssim(x, y.double())
    with pytest.raises(ValueError, match="ssim: x: expected a 3-D"):
        ops.ssim(x[0, 0], y[0, 0])
    # a half x takes a float32 y (autocast's mix), but no other mix
    with pytest.raises(TypeError, match="ssim: y: expected dtype"):
        ops.ssim(x.half(), y.double())
    with pytest.raises(TypeError, match="ssim: x: expected float32, float64"):
        ops.ssim((x * 255).to(torch.uint8), (y * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="ssim_pairs: others: expected shape"):
        ops.ssim_pairs(x, y)
    with pytest.raises(TypeError, match="ssim_pairs: others: expected dtype"):
        ops.ssim_pairs(x, y.double().unsqueeze(1))
    with pytest.raises(ValueError, match="ssim_metric_gram: v: expected shape"):
        ops.ssim_metric_gram(x, torch.zeros(2, 2, 3, 16, 15))
    if not HAS_CUDA_KERNELS and vaeiso_ext.build_info()["cuda"] is False and torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="without CUDA"):
            ops.ssim(x.cuda(), y.cuda())


ISA_LEVELS = ["baseline", "avx2", "avx512"]


def _staged_twin(t):
    """t's values with a W stride of 2: the forward then stages (gathers) its rows."""
    wide = torch.full(t.shape[:-1] + (2 * t.shape[-1],), float("nan"), dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


def _cropped(t, extra=5):
    """t's values as a crop of a wider image: dense rows whose row stride exceeds W."""
    wide = torch.full(t.shape[:-1] + (t.shape[-1] + extra,), float("nan"), dtype=t.dtype)
    wide[..., extra:] = t
    return wide[..., extra:]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("l1", [False, True])
def test_rows_read_in_place_give_the_staged_bits(dtype, padding, l1):
    """The CPU forward reads dense rows in place where a block's windows lie inside the image
    (the rest, "same"-padded edges and strided rows, are staged): values, the L1 term and both
    gradients have the bits of the staged path, with x and y on different row strides (a crop of
    a wider image), images taller than a strip (several strips per plane) and widths around the
    vector lengths."""
    g = torch.Generator().manual_seed(7)
    for H, W in ((150, 37), (40, 16), (23, 100)):
        x = torch.rand(2, 2, H, W, generator=g, dtype=dtype)
        y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=dtype)).clamp(0, 1)

        def run(a, b):
            a, b = a.requires_grad_(), b.requires_grad_()
            if l1:
                v = ops.ssim_l1_loss(a, b, ssim_weight=0.6, padding=padding)
            else:
                v = one_minus_ssim(a, b, padding=padding)
            gv = torch.linspace(0.5, 1.5, v.numel(), dtype=dtype).reshape(v.shape)
            return (v, *torch.autograd.grad(v, (a, b), gv))

        dense = run(x.clone(), y.clone())
        staged = run(_staged_twin(x), _staged_twin(y))
        cropped = run(_cropped(x, 3), _cropped(y, 9))
        for d, s, c in zip(dense, staged, cropped):
            assert torch.equal(d, s), (H, W)
            assert torch.equal(c, s), (H, W)


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_capped_isa_builds_match_reference(isa):
    """The SSIM kernels are built three times (baseline, AVX2+FMA, AVX-512; csrc/cpu_isa.h) and
    the best one the processor runs is taken: check the others too, capped by VAEISO_CPU_ISA in a
    fresh interpreter (the choice is made once per process)."""
    here = vaeiso_ext.build_info()["cpu_isa"]
    want = ISA_LEVELS[min(ISA_LEVELS.index(isa), ISA_LEVELS.index(here))]
    code = (
        "import torch, vaeiso_ext\n"
        f"assert vaeiso_ext.build_info()['cpu_isa'] == {want!r}, vaeiso_ext.build_info()\n"
        "from vaeiso_ext import ops, reference as ref\n"
        "from vaeiso_ext.ops._ssim import one_minus_ssim\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for pad in ('valid', 'same'):\n"
        "  x = torch.rand(2, 3, 21, 37, generator=g, dtype=torch.float64)\n"
        "  y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)\n"
        "  kw = dict(window_size=7, padding=pad)\n"
        "  torch.testing.assert_close(ops.ssim(x, y, **kw), ref.ssim(x, y, **kw), rtol=0, atol=1e-11)\n"
        "  torch.testing.assert_close(ops.ssim(x.float(), y.float(), **kw).double(), ref.ssim(x, y, **kw),\n"
        "                             rtol=0, atol=2e-6)\n"
        "  xa, xr = x.clone().requires_grad_(), x.clone().requires_grad_()\n"
        "  one_minus_ssim(xa, y, **kw).sum().backward(); (1 - ref.ssim(xr, y, **kw)).sum().backward()\n"
        "  torch.testing.assert_close(xa.grad, xr.grad, rtol=1e-9, atol=1e-15)\n"
        "  o = torch.stack([y, x + 1e-4], 1)\n"
        "  torch.testing.assert_close(ops.ssim_pairs(x, o, **kw), ref.ssim_pairs(x, o, **kw), rtol=1e-9, atol=1e-15)\n"
        "  v = torch.randn(2, 3, 3, 21, 37, generator=g, dtype=torch.float64)\n"
        "  torch.testing.assert_close(ops.ssim_metric_gram(x, v, **kw), ref.ssim_metric_gram(x, v, **kw))\n"
        "print('baseline ok')\n"
    )
    run_python(code, "baseline ok", VAEISO_CPU_ISA=isa)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("window_size", [7, 9, 11, 13, 15])
def test_float32_horizontal_fast_path_matches_reference(padding, window_size):
    """Rows of one vector or more take the aligned-row horizontal FIR of the AVX2 / AVX-512
    builds (fir_h in ssim_cpu_fir.h: groups of vectors, single vectors, an overlapping last one)
    for these windows: every SSIM-family pass against the float64 reference, at widths that
    reach each part (test_ssim_isa_filter.py checks the filter alone in every build)."""
    for w in (16 + window_size, 45, 150, 203):
        x, y = _pair((2, 2, 23, w), seed=w + window_size)
        kw = dict(window_size=window_size, sigma=window_size / 6, padding=padding)
        expected = ref.ssim(x, y, **kw)
        torch.testing.assert_close(ops.ssim(x.float(), y.float(), **kw).double(), expected, rtol=0, atol=2e-6)
        xa, ya = x.float().requires_grad_(), y.float().requires_grad_()
        one_minus_ssim(xa, ya, **kw).sum().backward()
        xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
        (1 - ref.ssim(xr, yr, **kw)).sum().backward()
        for got, want in ((xa.grad, xr.grad), (ya.grad, yr.grad)):
            torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-4 * want.abs().max().item())
        others = torch.stack([y, x], 1)
        torch.testing.assert_close(
            ops.ssim_pairs(x.float(), others.float(), **kw).double(), ref.ssim_pairs(x, others, **kw), rtol=0, atol=2e-6
        )
        # the window filter and its adjoint alone, float32 against float64
        same = padding == "same"
        t = x.reshape(-1, 23, w)
        for transpose in (False, True):
            src = t if not transpose or same else t[:, : 23 - window_size + 1, : w - window_size + 1].contiguous()
            f64 = torch.ops.vaeiso.ssim_filter(src, window_size, window_size / 6, same, transpose)
            f32 = torch.ops.vaeiso.ssim_filter(src.float(), window_size, window_size / 6, same, transpose)
            torch.testing.assert_close(f32.double(), f64, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- torch.library / compile


# opcheck and torch.compile(fullgraph=True) of every op: tests/test_op_contract.py


@pytest.mark.slow
def test_torch_compile_inductor():
    torch._dynamo.reset()
    x, y = _pair((2, 3, 16, 16), dtype=torch.float32, seed=44)
    others = torch.stack([y, x], 1)

    def f(a, b):
        return ops.ssim(a, b, window_size=7).sum() + ops.ssim_pairs(a, others).sum()

    compiled = torch.compile(f, fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_c, out_e = compiled(xa, y), f(xb, y)
    torch.testing.assert_close(out_c, out_e)
    out_c.backward(), out_e.backward()
    torch.testing.assert_close(xa.grad, xb.grad)


# ---------------------------------------------------------------- hypothesis: shapes and windows


def test_random_shapes_windows_and_layouts():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(
        n=st.integers(1, 3),
        c=st.integers(1, 4),
        h=st.integers(1, 20),
        w=st.integers(1, 40),
        half=st.integers(0, 4),
        same=st.booleans(),
        cl=st.booleans(),
    )
    def check(n, c, h, w, half, same, cl):
        ws = 2 * half + 1
        hypothesis.assume(ws <= h and ws <= w)
        padding = "same" if same else "valid"
        x, y = _pair((n, c, h, w), seed=h * 100 + w)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        kw = dict(window_size=ws, sigma=0.5 + half * 0.4, padding=padding)
        torch.testing.assert_close(ops.ssim(x, y, **kw), ref.ssim(x, y, **kw), rtol=0, atol=F64_ATOL)
        others = torch.stack([y, x], 1)
        torch.testing.assert_close(
            ops.ssim_pairs(x, others, **kw), ref.ssim_pairs(x, others, **kw), rtol=1e-9, atol=1e-12
        )

    check()


# ---------------------------------------------------------------- CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and the CUDA kernels")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(padding, dtype):
    x, y = _pair((3, 3, 37, 70), dtype=dtype, seed=50)
    kw = dict(window_size=11, padding=padding)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=F64_ATOL)
    res = {}
    for dev in ("cpu", "cuda"):
        xa = x.to(dev).requires_grad_()
        ya = y.to(dev).contiguous(memory_format=torch.channels_last).requires_grad_()
        out = ops.ssim(xa, ya, **kw)
        (out * torch.arange(1.0, 4.0, dtype=dtype, device=dev)).sum().backward()
        others = torch.stack([ya.detach(), xa.detach().flip(-1), xa.detach() + 1e-3], 1)
        v = torch.randn(3, 4, 3, 37, 70, dtype=dtype, generator=_gen(51)).to(dev)
        res[dev] = [
            out,
            xa.grad,
            ya.grad,
            ops.ssim_pairs(xa.detach(), others, **kw),
            ops.ssim_metric_gram(xa.detach(), v, **kw),
            torch.ops.vaeiso.ssim_filter(v, 11, 1.5, padding == "same", False),
        ]
    for a, b in zip(res["cpu"], res["cuda"]):
        torch.testing.assert_close(b.cpu(), a, **tol)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(dtype):
    x, y = _pair((2, 3, 32, 33), seed=52)
    xh, yh = x.to("cuda", dtype).requires_grad_(), y.to("cuda", dtype).requires_grad_()
    out = ops.ssim(xh, yh)
    assert out.dtype == dtype
    out.sum().backward()
    xr, yr = xh.detach().double().cpu().requires_grad_(), yh.detach().double().cpu().requires_grad_()
    expected = ref.ssim(xr, yr)
    expected.sum().backward()
    tol = 2e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(out.double().cpu(), expected, rtol=0, atol=tol)
    scale = xr.grad.abs().max()
    torch.testing.assert_close(xh.grad.double().cpu(), xr.grad, rtol=0, atol=2e-2 * scale)
    others = torch.stack([yh.detach(), xh.detach()], 1)
    assert ops.ssim_pairs(xh.detach(), others).dtype == dtype
    v = torch.randn(2, 2, 3, 32, 33, device="cuda").to(dtype)
    G = ops.ssim_metric_gram(xh.detach(), v)
    assert G.dtype == dtype
    torch.testing.assert_close(
        G.double().cpu(), ref.ssim_metric_gram(xh.detach().double().cpu(), v.double().cpu()), rtol=2e-2, atol=1e-3
    )


@pytest.mark.cuda
@cuda
def test_cuda_deterministic_large_window_and_other_device():
    x, y = _pair((2, 2, 80, 90), dtype=torch.float32, seed=54)
    x, y = x.cuda(), y.cuda()
    a, b = ops.ssim(x, y), ops.ssim(x, y)
    assert torch.equal(a, b)
    kw = dict(window_size=61, sigma=10.0)
    torch.testing.assert_close(ops.ssim(x, y, **kw).cpu(), ops.ssim(x.cpu(), y.cpu(), **kw), rtol=1e-5, atol=1e-6)
    if torch.cuda.device_count() > 1:
        x1, y1 = x.to("cuda:1"), y.to("cuda:1")
        torch.testing.assert_close(ops.ssim(x1, y1).cpu(), a.cpu())
