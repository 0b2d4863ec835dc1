"""MS-SSIM (``ops.ms_ssim``, ``nn.MSSSIMLoss``) and the fused SSIM + L1 loss (``ops.ssim_l1_loss``,
``nn.SSIML1Loss``), docs/ops.md, ms_ssim and ssim_l1_loss.

Oracles: pytorch_msssim (the convention we follow), the float64 reference in
``vaeiso_ext.reference`` (values and autograd gradients), torchmetrics for ``normalize="simple"``,
finite differences (gradcheck), and our own ``ops.ssim`` plus ``abs().mean()`` for the L1 mix.

Tolerances: float64 results of the same formula in another summation order agree to ~1e-13
relative here (means of ~1e5 terms of size ~1, no cancellation in the values), so 1e-10 leaves
three digits of margin; float32 against float32 or float64: ~1e-7 per op over a few dozen ops and
means of ~1e5 terms summed in double, so 1e-5 absolute on values in [0, 1].
"""

import os
import subprocess
import sys

import pytest
import torch
from conftest import degrade as _degrade
from conftest import pair as _pair
from conftest import photo as _photo

import vaeiso_ext
from vaeiso_ext import nn as vnn
from vaeiso_ext import ops
from vaeiso_ext import reference as ref

HAS_CUDA_KERNELS = vaeiso_ext.build_info()["cuda"] and torch.cuda.is_available()
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and the CUDA kernels"),
    ],
)
DEVICES = ["cpu", CUDA]
SMALL = dict(weights=(0.3, 0.3, 0.4), window_size=5, sigma=1.0)  # 3 levels: sides > 16


def _grads(fn, x, y, g=None):
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    out = fn(xr, yr)
    g = torch.ones_like(out) if g is None else g
    return torch.autograd.grad(out, (xr, yr), g)


# ---------------------------------------------------------------- ms_ssim: values


PHOTOS = [("camera", (256, 256)), ("astronaut", (256, 256)), ("coffee", (321, 283)), ("camera", (321, 283))]


@pytest.mark.parametrize("name,size", PHOTOS)
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ms_ssim_photos_match_pytorch_msssim_and_reference(name, size, data_range):
    from pytorch_msssim import ms_ssim as peer

    x = _photo(name, size) * data_range
    y = _degrade(_photo(name, size)) * data_range
    x, y = torch.cat([x, y]), torch.cat([y, _degrade(x / data_range, seed=2) * data_range])
    want = peer(x.float(), y.float(), data_range=data_range, size_average=False).double()
    got32 = ops.ms_ssim(x.float(), y.float(), data_range=data_range)
    assert got32.dtype == torch.float32 and got32.shape == (2,)
    assert torch.all((want > 0.3) & (want < 0.999))  # a meaningful, non-trivial comparison
    torch.testing.assert_close(got32.double(), want, rtol=0, atol=1e-5)
    got64 = ops.ms_ssim(x, y, data_range=data_range)
    torch.testing.assert_close(got64, ref.ms_ssim(x, y, data_range=data_range), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(weights=(0.5, 0.25, 0.25), window_size=7, sigma=1.2),
        dict(weights=(0.1, 0.2, 0.3, 0.4), window_size=9, sigma=2.0, k1=0.02, k2=0.05),
        dict(weights=(1.0,), window_size=11),
    ],
)
def test_ms_ssim_random_images_match_pytorch_msssim_and_reference(kw):
    from pytorch_msssim import ms_ssim as peer

    x, y = _pair((2, 3, 181, 197), seed=3)
    k = (kw.get("k1", 0.01), kw.get("k2", 0.03))
    peer_kw = dict(win_size=kw.get("window_size", 11), win_sigma=kw.get("sigma", 1.5), K=k)
    if "weights" in kw:
        peer_kw["weights"] = list(kw["weights"])
    want = peer(x.float(), y.float(), data_range=1.0, size_average=False, **peer_kw).double()
    torch.testing.assert_close(ops.ms_ssim(x.float(), y.float(), **kw).double(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(ops.ms_ssim(x, y, **kw), ref.ms_ssim(x, y, **kw), rtol=0, atol=1e-10)


def test_ms_ssim_one_level_is_ssim_to_the_power_w():
    x, y = _pair((2, 1, 40, 37), seed=4)
    got = ops.ms_ssim(x, y, weights=(0.7,), window_size=7)
    torch.testing.assert_close(got, ops.ssim(x, y, window_size=7) ** 0.7, rtol=1e-12, atol=0)


def test_ms_ssim_identical_images_is_one():
    x, _ = _pair((2, 3, 48, 50), seed=5)
    torch.testing.assert_close(ops.ms_ssim(x, x, **SMALL), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["camera", "moon"])
def test_ms_ssim_simple_matches_torchmetrics(name):
    # torchmetrics' conventions differ from pytorch_msssim's (see the ops.ms_ssim docstring): it
    # averages over channels before the product, pools without padding, and takes the last
    # level's SSIM over all H x W positions of the reflect-padded image (its cs terms are over
    # the valid positions, as ours). One channel and sides divisible by 2**4 remove the first
    # two differences; the third is rebuilt here from the reference's SSIM on a reflect-padded
    # image, and the cs levels come from our fused op with the last weight set to 0.
    tm = pytest.importorskip("torchmetrics.functional.image")
    x = torch.cat([_photo(name, (256, 256)), _degrade(_photo(name, (256, 256)))])
    y = torch.cat([_degrade(_photo(name, (256, 256)), seed=3), _photo(name, (256, 256))])
    # torchmetrics holds the weights in a float32 tensor: use the same rounded exponents
    w = tuple(torch.tensor((0.0448, 0.2856, 0.3001, 0.2363, 0.1333), dtype=torch.float32).tolist())
    want = tm.multiscale_structural_similarity_index_measure(x, y, data_range=1.0, normalize="simple", reduction="none")
    cs_part = ops.ms_ssim(x, y, weights=w[:4] + (0.0,), normalize="simple")
    xm, ym = torch.nn.functional.avg_pool2d(x, 16), torch.nn.functional.avg_pool2d(y, 16)  # 256 -> 16
    pad = lambda t: torch.nn.functional.pad(t, (5, 5, 5, 5), mode="reflect")  # noqa: E731
    last = (ref.ssim(pad(xm), pad(ym)) + 1) / 2
    torch.testing.assert_close(cs_part * last ** w[4], want.to(torch.float64), rtol=0, atol=1e-10)
    # ... and the whole "simple" formula on colour, odd sizes: against our reference
    xc = torch.cat([_photo("coffee", (321, 283)), _degrade(_photo("coffee", (321, 283)))])
    yc = torch.cat([_degrade(_photo("coffee", (321, 283))), _photo("coffee", (321, 283))])
    torch.testing.assert_close(
        ops.ms_ssim(xc, yc, normalize="simple"), ref.ms_ssim(xc, yc, normalize="simple"), rtol=0, atol=1e-10
    )


def _low_quality_pair():
    """An image against independent noise (channel 0) and against noise plus its negative
    (channel 1): some contrast-structure terms are negative (all of channel 1's)."""
    x = _photo("camera", (96, 90)).repeat(1, 2, 1, 1)
    g = torch.Generator().manual_seed(11)
    y = torch.rand(x.shape, generator=g, dtype=torch.float64)
    y[:, 1] = (0.5 * y[:, 1] + 1 - x[:, 1]) / 1.5
    return x, y


def test_low_quality_pair_is_finite_with_relu_and_simple_and_nan_with_none():
    x, y = _low_quality_pair()
    # Make sure the case is the one we mean: the reference's per-level values with no clamp are
    # negative somewhere (NaN under a fractional power).
    assert torch.isnan(ref.ms_ssim(x, y, **SMALL, normalize=None)).any()
    assert torch.isnan(ops.ms_ssim(x, y, **SMALL, normalize=None)).any()  # documented
    for normalize in ("relu", "simple"):
        got = ops.ms_ssim(x, y, **SMALL, normalize=normalize)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref.ms_ssim(x, y, **SMALL, normalize=normalize), rtol=0, atol=1e-10)
        gx, gy = _grads(lambda a, b: ops.ms_ssim(a, b, **SMALL, normalize=normalize), x, y)
        rx, ry = _grads(lambda a, b: ref.ms_ssim(a, b, **SMALL, normalize=normalize), x, y)
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
        scale = max(rx.abs().max().item(), ry.abs().max().item(), 1e-30)
        torch.testing.assert_close(gx, rx, rtol=0, atol=1e-10 * scale)
        torch.testing.assert_close(gy, ry, rtol=0, atol=1e-10 * scale)


def test_relu_clamped_level_has_zero_gradient_and_weight_zero_counts_as_one():
    x, y = _low_quality_pair()
    # relu with every weight 0: the value is 1 whatever the clamps, and the gradient 0.
    zero_w = dict(SMALL, weights=(0.0, 0.0, 0.0))
    torch.testing.assert_close(ops.ms_ssim(x, y, **zero_w), torch.ones(1, dtype=torch.float64))
    gx, gy = _grads(lambda a, b: ops.ms_ssim(a, b, **zero_w), x, y)
    assert gx.abs().max() == 0 and gy.abs().max() == 0


# ---------------------------------------------------------------- ms_ssim: gradients


@pytest.mark.parametrize(
    "kw,shape",
    [
        ({}, (1, 2, 170, 165)),
        (SMALL, (2, 3, 33, 40)),
        (dict(weights=(0.2, 0.8), window_size=3, normalize="simple"), (2, 2, 9, 12)),
    ],
)
def test_ms_ssim_gradients_match_reference_autograd(kw, shape):
    x, y = _pair(shape, seed=6)
    g = torch.rand(shape[0], generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = _grads(lambda a, b: ops.ms_ssim(a, b, **kw), x, y, g)
    want = _grads(lambda a, b: ref.ms_ssim(a, b, **kw), x, y, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10 * b.abs().max().item())


def test_ms_ssim_float32_gradients_close_to_float64():
    x, y = _pair((2, 3, 40, 36), seed=8)
    got = _grads(lambda a, b: ops.ms_ssim(a, b, **SMALL), x.float(), y.float())
    want = _grads(lambda a, b: ref.ms_ssim(a, b, **SMALL), x, y)
    for a, b in zip(got, want):
        # float32 round-off (~1e-7) through windows of ~25 taps and the level product
        torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-4 * b.abs().max().item())


def test_ms_ssim_gradient_to_one_input_only():
    x, y = _pair((1, 2, 20, 21), seed=10)
    xr = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(ops.ms_ssim(xr, y, **SMALL).sum(), xr)
    (rx,) = torch.autograd.grad(ref.ms_ssim(xr, y, **SMALL).sum(), xr)
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-10 * rx.abs().max().item())


# ---------------------------------------------------------------- ssim_l1_loss


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("w", [0.2, 0.0, 0.85])
def test_ssim_l1_loss_equals_ssim_and_l1(padding, w):
    x, y = _pair((3, 2, 23, 19), seed=12)
    y[:, :, ::3] = x[:, :, ::3]  # d = 0 on a third of the rows: the L1 gradient there is 0
    kw = dict(window_size=7, sigma=1.2, padding=padding)

    def formula(a, b):
        return (1 - w) * (a - b).abs().mean(dim=(1, 2, 3)) + w * (1 - ops.ssim(a, b, **kw))

    got = ops.ssim_l1_loss(x, y, ssim_weight=w, **kw)
    torch.testing.assert_close(got, formula(x, y), rtol=0, atol=1e-12)
    torch.testing.assert_close(got, ref.ssim_l1_loss(x, y, ssim_weight=w, **kw), rtol=0, atol=1e-12)
    g = torch.rand(3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    got_g = _grads(lambda a, b: ops.ssim_l1_loss(a, b, ssim_weight=w, **kw), x, y, g)
    for want_g in (_grads(formula, x, y, g), _grads(lambda a, b: ref.ssim_l1_loss(a, b, ssim_weight=w, **kw), x, y, g)):
        for a, b in zip(got_g, want_g):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12 * b.abs().max().item())


def test_ssim_l1_loss_float32_and_photos():
    x = torch.cat([_photo("astronaut", (256, 256)), _photo("coffee", (321, 283))[..., :256, :256]])
    y = _degrade(x)
    want = ref.ssim_l1_loss(x, y)
    torch.testing.assert_close(ops.ssim_l1_loss(x.float(), y.float()).double(), want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- modules


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_modules(reduction):
    x, y = _pair((3, 2, 30, 28), seed=15)
    per = 1 - ref.ms_ssim(x, y, **SMALL)
    red = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(vnn.MSSSIMLoss(reduction, **SMALL)(x, y), red, rtol=0, atol=1e-10)
    per = ref.ssim_l1_loss(x, y, ssim_weight=0.4, window_size=5, padding="same")
    red = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    mod = vnn.SSIML1Loss(reduction, ssim_weight=0.4, window_size=5, padding="same")
    torch.testing.assert_close(mod(x, y), red, rtol=0, atol=1e-12)
    assert "ssim_weight=0.4" in repr(mod)


def test_loss_modules_reject_bad_arguments():
    with pytest.raises(ValueError, match="MSSSIMLoss: reduction"):
        vnn.MSSSIMLoss("avg")
    with pytest.raises(TypeError, match="MSSSIMLoss: unexpected arguments"):
        vnn.MSSSIMLoss(padding="same")
    with pytest.raises(ValueError, match="SSIML1Loss: reduction"):
        vnn.SSIML1Loss("avg")
    with pytest.raises(TypeError, match="SSIML1Loss: unexpected arguments"):
        vnn.SSIML1Loss(weights=(1.0,))


# ---------------------------------------------------------------- layouts, dtypes, edge cases


# N = 0, layouts, gradcheck, gradgradcheck, opcheck and torch.compile of ms_ssim and ssim_l1_loss:
# tests/test_op_contract.py


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_prediction_float32_target(dtype):
    """A half prediction against a float32 target (autocast's mix) comes out in float32 (the
    all-half rule, float32 compute rounded once: tests/test_op_contract.py)."""
    x, y = _pair((2, 3, 36, 40), seed=17)
    xh, yh = x.to(dtype), y.to(dtype)
    for fn in (lambda a, b: ops.ms_ssim(a, b, **SMALL), ops.ssim_l1_loss):
        mixed = fn(xh, yh.float())
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, fn(xh.float(), yh.float()), rtol=0, atol=0)


def test_deterministic_and_thread_count_independent():
    # The kernels add per-task partial sums in a fixed order (bitwise equality is promised).
    x, y = _pair((2, 3, 60, 57), dtype=torch.float32, seed=18)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            fn = lambda a, b: ops.ms_ssim(a, b, **SMALL) + ops.ssim_l1_loss(a, b)  # noqa: E731
            results.append((fn(x, y),) + _grads(fn, x, y))
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert torch.equal(a, b)


def test_baseline_isa_build_matches_reference():
    code = (
        "import torch, vaeiso_ext\n"
        "from vaeiso_ext import ops, reference as ref\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.rand(2, 3, 37, 41, generator=g, dtype=torch.float64)\n"
        "y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)\n"
        "kw = dict(weights=(0.3, 0.3, 0.4), window_size=5)\n"
        "assert (ops.ms_ssim(x, y, **kw) - ref.ms_ssim(x, y, **kw)).abs().max() < 1e-10\n"
        "assert (ops.ssim_l1_loss(x, y) - ref.ssim_l1_loss(x, y)).abs().max() < 1e-12\n"
        "print('ok')\n"
    )
    env = dict(os.environ, VAEISO_CPU_ISA="baseline")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


# ---------------------------------------------------------------- autograd modes


CASES = [
    ("ms_ssim", lambda a, b: ops.ms_ssim(a, b, **SMALL), lambda a, b: ref.ms_ssim(a, b, **SMALL)),
    (
        "ssim_l1_loss",
        lambda a, b: ops.ssim_l1_loss(a, b, window_size=5),
        lambda a, b: ref.ssim_l1_loss(a, b, window_size=5),
    ),
    (
        "ssim_l1_loss_same",
        lambda a, b: ops.ssim_l1_loss(a, b, window_size=5, padding="same", ssim_weight=0.7),
        lambda a, b: ref.ssim_l1_loss(a, b, window_size=5, padding="same", ssim_weight=0.7),
    ),
]


@pytest.mark.parametrize("name,fn,rf", CASES, ids=[c[0] for c in CASES])
def test_double_backward_matches_reference(name, fn, rf):
    # create_graph=True runs the differentiable torch-op backward; its second derivative (the L1
    # term's is 0 a.e.: no pixel of these random pairs has x = y) equals the float64 reference's.
    x, y = _pair((1, 2, 18, 19), seed=31)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()  # gradgradcheck: test_op_contract.py
    v = torch.randn_like(x)
    got = torch.autograd.grad((torch.autograd.grad(fn(xg, yg).sum(), xg, create_graph=True)[0] * v).sum(), (xg, yg))
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    want = torch.autograd.grad((torch.autograd.grad(rf(xr, yr).sum(), xr, create_graph=True)[0] * v).sum(), (xr, yr))
    for a, b in zip(got, want):
        # float64, same formula in another order: round-off relative to the largest entry
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * b.abs().max().item())


@pytest.mark.parametrize("name,fn,rf", CASES, ids=[c[0] for c in CASES])
def test_forward_mode_matches_reference(name, fn, rf):
    from torch.autograd import forward_ad

    x, y = _pair((2, 2, 20, 21), seed=32)
    tx, ty = torch.randn_like(x), torch.randn_like(y)
    want_v, want_t = torch.func.jvp(rf, (x, y), (tx, ty))
    scale = want_t.abs().max().item()
    got_v, got_t = torch.func.jvp(fn, (x, y), (tx, ty))
    torch.testing.assert_close(got_v, want_v, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-10 * scale)
    with forward_ad.dual_level():  # a tangent on y only
        out = fn(x, forward_ad.make_dual(y, ty))
        t = forward_ad.unpack_dual(out).tangent
    torch.testing.assert_close(t, torch.func.jvp(lambda b: rf(x, b), (y,), (ty,))[1], rtol=0, atol=1e-10 * scale)
    jf = torch.func.jacfwd(lambda a: fn(a, y))(x)
    torch.testing.assert_close(jf, torch.func.jacrev(lambda a: rf(a, y))(x), rtol=0, atol=1e-10 * jf.abs().max().item())


def test_raw_backward_op_is_not_differentiable_and_says_so():
    # ops.ms_ssim never differentiates the raw kernel (create_graph takes the torch-op path); a
    # direct caller of torch.ops.vaeiso.ssim_backward gets an error, not a dropped term.
    x, y = _pair((1, 1, 12, 12), seed=33)
    xg = x.clone().requires_grad_()
    _, _, maps = torch.ops.vaeiso.ssim_forward(x, y, 5, 1.5, 0.01, 0.03, 1.0, False, True, True, True)
    g = torch.ones(1, 1, dtype=x.dtype)
    gx, _ = torch.ops.vaeiso.ssim_backward(g, g, xg, y, maps, 5, 1.5, False)
    with pytest.raises(RuntimeError, match="raw backward kernel has no derivative"):
        torch.autograd.grad(gx.sum(), xg)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda x, y: ops.ms_ssim(x, y), ValueError, r"too small for 5 levels.*must exceed .* = 160"),
        (
            lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, window_size=4)),
            ValueError,
            "window_size: expected an odd positive integer",
        ),
        (
            lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, data_range=0.0)),
            ValueError,
            "data_range: expected a positive number",
        ),
        (
            lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, data_range=-1.0)),
            ValueError,
            "data_range: expected a positive number",
        ),
        (lambda x, y: ops.ms_ssim(x, y[..., :-1], **SMALL), ValueError, r"ms_ssim: y: expected shape \(1, 2, 40, 40\)"),
        (lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, normalize="clamp")), ValueError, "normalize: expected"),
        (lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, weights=())), ValueError, "weights: expected one or more"),
        (
            lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, weights=(0.5, -0.1))),
            ValueError,
            "weights: expected one or more",
        ),
        (lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, weights=(0.5, float("nan")))), ValueError, "weights"),
        (lambda x, y: ops.ms_ssim(x[0, 0], y[0, 0], **SMALL), ValueError, "ms_ssim: x: expected a 3-D"),
        (lambda x, y: ops.ms_ssim(x, y.float(), **SMALL), TypeError, "ms_ssim: y: expected dtype torch.float64"),
        (lambda x, y: ops.ms_ssim(x, y.long(), **SMALL), TypeError, "ms_ssim: y: expected float32, float64"),
        (lambda x, y: ops.ms_ssim(x, y, **dict(SMALL, k2=0.0)), ValueError, "k2: expected a positive number"),
        (lambda x, y: ops.ssim_l1_loss(x, y, padding="full"), ValueError, "ssim_l1_loss: padding"),
        (
            lambda x, y: ops.ssim_l1_loss(x, y, window_size=41, padding="valid"),
            ValueError,
            r"ssim_l1_loss: window_size: the window \(41\)",
        ),
        (lambda x, y: ops.ssim_l1_loss(x, y, data_range=0), ValueError, "ssim_l1_loss: data_range"),
        (lambda x, y: ops.ssim_l1_loss(x, y, ssim_weight=float("inf")), ValueError, "ssim_l1_loss: ssim_weight"),
        (lambda x, y: ops.ssim_l1_loss(x, y.transpose(2, 3)[..., :39]), ValueError, "ssim_l1_loss: y: expected shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, exc, match):
    x, y = _pair((1, 2, 40, 40))
    with pytest.raises(exc, match=match):
        call(x, y)


def test_smallest_valid_image_size():
    # (window_size - 1) * 2**(m - 1) = 4 * 4 = 16 for SMALL: 17 works, 16 does not.
    x, y = _pair((1, 1, 17, 30), seed=19)
    torch.testing.assert_close(ops.ms_ssim(x, y, **SMALL), ref.ms_ssim(x, y, **SMALL), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="must exceed"):
        ops.ms_ssim(x[..., :16, :], y[..., :16, :], **SMALL)


# ---------------------------------------------------------------- opcheck and compile


def test_one_ssim_op_pair_serves_the_family():
    # ssim, ms_ssim and ssim_l1_loss all reach the one forward / backward pair (issue: one
    # kernel family); the per-channel op pair of earlier versions is gone.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith("vaeiso."):
                self.names.add(str(func))
            return func(*args, **(kwargs or {}))

    assert not hasattr(torch.ops.vaeiso, "ssim_channels")
    x, y = _pair((1, 2, 40, 40), seed=34)
    xg = x.clone().requires_grad_()
    pair = {"vaeiso.ssim_forward.default", "vaeiso.ssim_backward.default"}
    for fn, extra in (
        (lambda a, b: ops.ssim(a, b), set()),
        (lambda a, b: ops.ms_ssim(a, b, **SMALL), {"vaeiso.ssim_pool.default"}),  # its pyramid
        (ops.ssim_l1_loss, set()),
    ):
        with Count() as c:
            fn(xg, y).sum().backward()
        assert c.names == pair | extra, c.names


# ---------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and the CUDA kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_matches_cpu(dtype):
    x, y = _pair((2, 3, 181, 170), seed=22)
    xc, yc = x.to("cuda", dtype).contiguous(memory_format=torch.channels_last), y.to("cuda", dtype)
    tol = (
        dict(rtol=0, atol=1e-10)
        if dtype == torch.float64
        else dict(rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-3)
    )
    for fn in (
        lambda a, b: ops.ms_ssim(a, b),
        lambda a, b: ops.ms_ssim(a, b, **SMALL, normalize="simple"),
        lambda a, b: ops.ssim_l1_loss(a, b),
        lambda a, b: ops.ssim_l1_loss(a, b, padding="same"),
    ):
        got = fn(xc, yc)
        assert got.dtype == dtype and got.device.type == "cuda"
        torch.testing.assert_close(got.double().cpu(), fn(x, y), **tol)
        gc, gw = _grads(fn, xc, yc), _grads(fn, x, y)
        for a, b in zip(gc, gw):
            scale = b.abs().max().item()
            gtol = 1e-10 if dtype == torch.float64 else (1e-4 if dtype == torch.float32 else 2e-2)
            torch.testing.assert_close(a.double().cpu(), b, rtol=0, atol=gtol * scale)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device and the CUDA kernels")
@pytest.mark.parametrize("ws", [71, 255])
def test_cuda_large_windows_match_cpu(ws):
    # float64 with 255 taps stages more than any device's shared memory per block: the kernels
    # run the window in chunks of taps (ssim_cuda_plan.h); 71 fits whole on an H100. Same
    # formula in another summation order, float64: 1e-10 relative to the largest entry.
    x, y = _pair((1, 2, 260, 270), seed=24)
    xc, yc = x.cuda(), y.cuda()
    fns = [lambda a, b: ops.ssim_l1_loss(a, b, window_size=ws, sigma=ws / 7.0)]
    if 2 * (ws - 1) < 260:  # two MS-SSIM levels need sides > 2 (ws - 1)
        fns.append(lambda a, b: ops.ms_ssim(a, b, weights=(0.5, 0.5), window_size=ws, sigma=ws / 7.0))
    for fn in fns:
        torch.testing.assert_close(fn(xc, yc).cpu(), fn(x, y), rtol=0, atol=1e-10)
        for a, b in zip(_grads(fn, xc, yc), _grads(fn, x, y)):
            torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-10 * b.abs().max().item())


def test_torch_func_transforms_match_reference():
    # grad, jacrev, per-sample gradients vmap(grad) and grad(grad) equal the reference's.
    x, y = _pair((2, 2, 20, 21), seed=23)
    cases = [
        (lambda a, b: ops.ms_ssim(a, b, **SMALL), lambda a, b: ref.ms_ssim(a, b, **SMALL)),
        (lambda a, b: ops.ssim_l1_loss(a, b, window_size=5), lambda a, b: ref.ssim_l1_loss(a, b, window_size=5)),
    ]
    for fn, rf in cases:
        want = torch.func.grad(lambda a: rf(a, y).sum())(x)
        scale = want.abs().max().item()
        torch.testing.assert_close(torch.func.grad(lambda a: fn(a, y).sum())(x), want, rtol=0, atol=1e-10 * scale)
        torch.testing.assert_close(
            torch.func.jacrev(lambda b: fn(x, b))(y),
            torch.func.jacrev(lambda b: rf(x, b))(y),
            rtol=0,
            atol=1e-10 * scale,
        )
        per_sample = torch.func.vmap(torch.func.grad(lambda a, b: fn(a[None], b[None]).sum()))(x, y)
        torch.testing.assert_close(per_sample, want, rtol=0, atol=1e-10 * scale)
        # second order through the transforms: the Hessian-vector product of the reference
        v = torch.randn_like(x)
        hv = torch.func.grad(lambda a: (torch.func.grad(lambda c: fn(c, y).sum())(a) * v).sum())(x)
        want_hv = torch.func.grad(lambda a: (torch.func.grad(lambda c: rf(c, y).sum())(a) * v).sum())(x)
        torch.testing.assert_close(hv, want_hv, rtol=0, atol=1e-9 * want_hv.abs().max().item())


@pytest.mark.parametrize("normalize", ["relu", "simple", None])
def test_nan_propagates_to_its_image_only(normalize):
    x, y = _pair((2, 2, 30, 33), seed=24)
    x[0, 1, 7, 9] = float("nan")
    out = ops.ms_ssim(x, y, **SMALL, normalize=normalize)
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
    out = ops.ssim_l1_loss(x, y)
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
