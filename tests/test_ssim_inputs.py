"""Argument checking of every SSIM-family entry point, and the forms of ``data_range``.

One convention (docs/ops.md, conventions): ``TypeError`` for a wrong type (not a tensor, an
integer, bool or complex dtype, a non-number argument), ``ValueError`` for a wrong value (shape,
window, data_range, k1, k2, sigma, padding, weights, normalize, ssim_weight), the message naming
the function (or module) the user called and the argument, never an internal op. The matrix below
runs every bad argument through every entry point that takes it.

``data_range`` is a number, a ``(min, max)`` pair or a per-image ``(N,)`` tensor: checked against
the float64 reference with the range applied by hand.
"""

import math

import pytest
import torch
from torch import Tensor

import vaeiso_ext  # noqa: F401
from vaeiso_ext import nn as vnn
from vaeiso_ext import ops
from vaeiso_ext import reference as ref

SHAPE = (2, 3, 24, 24)
MS_WEIGHTS = (0.6, 0.4)  # two levels: 24 > (11 - 1) * 2 with the default window


def _images(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(SHAPE, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(SHAPE, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def _k(t):
    """The second image as the K = 1 companions of ssim_pairs / ssim_metric_gram."""
    return t.unsqueeze(1) if isinstance(t, Tensor) else t


def _ms(kw):
    return kw if "weights" in kw else dict(kw, weights=MS_WEIGHTS)


def _module(cls, **fixed):
    """A module entry point: the arguments go to the constructor, the images to forward."""

    def call(x, y, **kw):
        return cls(**fixed, **kw)(x, y)

    return call


# name -> (call(x, y, **kw), name of x, name of y, the extra arguments it takes)
ENTRIES = {
    "ssim": (ops.ssim, "x", "y", {"padding"}),
    "one_minus_ssim": (ops.one_minus_ssim, "x", "y", {"padding"}),
    "ssim_pairs": (lambda x, y, **kw: ops.ssim_pairs(x, _k(y), **kw), "base", "others", {"padding"}),
    "ssim_metric_gram": (lambda x, y, **kw: ops.ssim_metric_gram(x, _k(y), **kw), "x", "v", {"padding"}),
    "ms_ssim": (lambda x, y, **kw: ops.ms_ssim(x, y, **_ms(kw)), "x", "y", {"weights", "normalize"}),
    "ssim_l1_loss": (ops.ssim_l1_loss, "x", "y", {"padding", "ssim_weight"}),
    "SSIMLoss": (_module(vnn.SSIMLoss), "x", "y", {"padding"}),
    "MSSSIMLoss": (lambda x, y, **kw: vnn.MSSSIMLoss(**_ms(kw))(x, y), "x", "y", {"weights", "normalize"}),
    "SSIML1Loss": (_module(vnn.SSIML1Loss), "x", "y", {"padding", "ssim_weight"}),
}

# (id, which argument, kwargs or a transform of the images, expected exception)
BAD_TENSORS = [
    ("x_list", "x", lambda x, y: (x.tolist(), y), TypeError),
    ("y_float", "y", lambda x, y: (x, 0.5), TypeError),
    ("x_uint8", "x", lambda x, y: ((x * 255).to(torch.uint8), (y * 255).to(torch.uint8)), TypeError),
    ("x_int64", "x", lambda x, y: (x.long(), y), TypeError),
    ("x_bool", "x", lambda x, y: (x > 0.5, y), TypeError),
    ("y_complex", "y", lambda x, y: (x, y.to(torch.complex64)), TypeError),
    ("y_dtype_mix", "y", lambda x, y: (x, y.double()), TypeError),
    ("y_two_half_types", "y", lambda x, y: (x.bfloat16(), y.half()), TypeError),
    ("x_2d", "x", lambda x, y: (x[0, 0], y[0, 0]), ValueError),
    ("y_shape", "y", lambda x, y: (x, y[:, :2]), ValueError),
    ("y_device", "y", lambda x, y: (x, y.to("meta")), ValueError),
]

BAD_ARGS = [
    ("window_even", "window_size", dict(window_size=4), ValueError),
    ("window_zero", "window_size", dict(window_size=0), ValueError),
    ("window_float", "window_size", dict(window_size=11.0), TypeError),
    ("window_bool", "window_size", dict(window_size=True), TypeError),
    ("sigma_zero", "sigma", dict(sigma=0.0), ValueError),
    ("sigma_nan", "sigma", dict(sigma=math.nan), ValueError),
    ("sigma_str", "sigma", dict(sigma="1.5"), TypeError),
    ("k1_zero", "k1", dict(k1=0.0), ValueError),
    ("k1_none", "k1", dict(k1=None), TypeError),
    ("k2_negative", "k2", dict(k2=-0.03), ValueError),
    ("k2_inf", "k2", dict(k2=math.inf), ValueError),
    ("range_negative", "data_range", dict(data_range=-1), ValueError),
    ("range_zero", "data_range", dict(data_range=0.0), ValueError),
    ("range_inf", "data_range", dict(data_range=math.inf), ValueError),
    ("range_str", "data_range", dict(data_range="255"), TypeError),
    ("range_pair_reversed", "data_range", dict(data_range=(1.0, 0.0)), ValueError),
    ("range_pair_empty", "data_range", dict(data_range=(0.5, 0.5)), ValueError),
    ("range_triple", "data_range", dict(data_range=(0, 1, 2)), ValueError),
    ("range_pair_of_str", "data_range", dict(data_range=("0", "1")), TypeError),
    ("range_tensor_2d", "data_range", dict(data_range=torch.ones(2, 2)), ValueError),
    ("range_tensor_complex", "data_range", dict(data_range=torch.ones(2, dtype=torch.complex64)), TypeError),
    ("padding_reflect", "padding", dict(padding="reflect"), ValueError),
    ("padding_int", "padding", dict(padding=0), ValueError),
    ("weights_empty", "weights", dict(weights=()), ValueError),
    ("weights_negative", "weights", dict(weights=(0.5, -0.1)), ValueError),
    ("weights_number", "weights", dict(weights=3), TypeError),
    ("normalize_clamp", "normalize", dict(normalize="clamp"), ValueError),
    ("ssim_weight_inf", "ssim_weight", dict(ssim_weight=math.inf), ValueError),
    ("ssim_weight_negative", "ssim_weight", dict(ssim_weight=-0.5), ValueError),
    ("ssim_weight_above_one", "ssim_weight", dict(ssim_weight=1.5), ValueError),
    ("ssim_weight_str", "ssim_weight", dict(ssim_weight="0.2"), TypeError),
]

# Checked when the images are known: reported by the op the entry point calls (a module's
# forward reports the op it runs).
OP_OF = {"SSIMLoss": "one_minus_ssim", "MSSSIMLoss": "ms_ssim", "SSIML1Loss": "ssim_l1_loss"}
BAD_FOR_IMAGES = [
    ("range_tensor_length", "data_range", dict(data_range=torch.ones(3)), ValueError),
    ("range_tensor_negative", "data_range", dict(data_range=torch.tensor([1.0, -1.0])), ValueError),
    ("range_tensor_nan", "data_range", dict(data_range=torch.tensor([1.0, math.nan])), ValueError),
    ("range_tensor_device", "data_range", dict(data_range=torch.ones(2, device="meta")), ValueError),
]


def _expect(entry, arg, exc, call):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{entry}: {arg}"), msg
    assert "vaeiso::" not in msg, msg


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", BAD_TENSORS, ids=[c[0] for c in BAD_TENSORS])
def test_bad_tensors(entry, case):
    fn, xname, yname, _ = ENTRIES[entry]
    _, which, make, exc = case
    x, y = _images()
    a, b = make(x, y)  # (H, W) images are wrong everywhere; (C, H, W) is ssim_l1_loss's unbatched pair
    arg = xname if which == "x" else yname
    _expect(entry, arg, exc, lambda: fn(a, b))


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", BAD_ARGS, ids=[c[0] for c in BAD_ARGS])
def test_bad_arguments(entry, case):
    fn, _, _, extra = ENTRIES[entry]
    _, arg, kw, exc = case
    if arg in ("padding", "weights", "normalize", "ssim_weight") and arg not in extra:
        pytest.skip(f"{entry} has no {arg}")
    x, y = _images()
    _expect(entry, arg, exc, lambda: fn(x, y, **kw))


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", BAD_FOR_IMAGES, ids=[c[0] for c in BAD_FOR_IMAGES])
def test_bad_ranges_for_the_images(entry, case):
    fn, _, _, _ = ENTRIES[entry]
    _, arg, kw, exc = case
    x, y = _images()
    _expect(OP_OF.get(entry, entry), arg, exc, lambda: fn(x, y, **kw))


@pytest.mark.parametrize(
    "entry", ["ssim", "one_minus_ssim", "ssim_pairs", "ssim_metric_gram", "ssim_l1_loss", "SSIMLoss", "SSIML1Loss"]
)
def test_window_larger_than_the_image_with_valid_padding(entry):
    fn, _, _, _ = ENTRIES[entry]
    x, y = _images()
    with pytest.raises(ValueError) as info:
        fn(x, y, window_size=25, padding="valid")
    msg = str(info.value)
    assert msg.startswith(f"{OP_OF.get(entry, entry)}: window_size: the window (25) is larger than the image"), msg


@pytest.mark.parametrize("entry", ["ms_ssim", "MSSSIMLoss"])
def test_ms_ssim_image_too_small(entry):
    fn, _, _, _ = ENTRIES[entry]
    x, y = _images()
    with pytest.raises(ValueError, match=r"^ms_ssim: x: the image \(24x24\) is too small"):
        fn(x, y, weights=(0.3, 0.3, 0.4))


@pytest.mark.parametrize("entry", ["ssim", "one_minus_ssim", "ms_ssim", "ssim_l1_loss"])
def test_every_ssim_function_takes_an_unbatched_pair(entry):
    # one convention for the whole family: a (C, H, W) pair gives the 0-d value of the batch of one
    x, y = _images()
    kw = dict(weights=(0.5, 0.5), window_size=5) if entry == "ms_ssim" else {}
    fn = getattr(ops, entry)
    got = fn(x[0], y[0], **kw)
    assert got.shape == ()
    torch.testing.assert_close(got, fn(x[:1], y[:1], **kw)[0], rtol=0, atol=0)


# ---------------------------------------------------------------- the forms of data_range


def _ref_value(entry, x, y, rng, **kw):
    """The float64 reference with the range applied per image by hand."""
    if entry == "ssim_pairs":
        return torch.cat(
            [ref.ssim_pairs(x[i : i + 1], _k(y[i : i + 1]), data_range=float(rng[i]), **kw) for i in range(x.shape[0])]
        )
    if entry == "ssim_metric_gram":
        return torch.cat(
            [
                ref.ssim_metric_gram(x[i : i + 1], _k(y[i : i + 1]), data_range=float(rng[i]), **kw)
                for i in range(x.shape[0])
            ]
        )
    f = dict(
        ssim=ref.ssim,
        one_minus_ssim=lambda a, b, **k: 1 - ref.ssim(a, b, **k),
        ms_ssim=lambda a, b, **k: ref.ms_ssim(a, b, weights=MS_WEIGHTS, **k),
        ssim_l1_loss=ref.ssim_l1_loss,
    )[entry]
    return torch.cat([f(x[i : i + 1], y[i : i + 1], data_range=float(rng[i]), **kw) for i in range(x.shape[0])])


@pytest.mark.parametrize(
    "entry", ["ssim", "one_minus_ssim", "ssim_pairs", "ssim_metric_gram", "ms_ssim", "ssim_l1_loss"]
)
def test_data_range_forms_match_the_reference(entry):
    fn, _, _, _ = ENTRIES[entry]
    x, y = _images(torch.float64, seed=3)
    x, y = 2 * x - 1, 2 * y - 1  # values in [-1, 1]
    rng = torch.tensor([2.0, 3.5], dtype=torch.float64)
    # a number, a (min, max) pair: the same range for both images
    want = _ref_value(entry, x, y, torch.full((2,), 2.0))
    # float64 against float64: round-off only (the Gram values are of order 1 / C1, not 1)
    tol = dict(rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(fn(x, y, data_range=2.0), want, **tol)
    torch.testing.assert_close(fn(x, y, data_range=(-1, 1)), want, **tol)
    torch.testing.assert_close(fn(x, y, data_range=[-1.0, 1.0]), want, **tol)
    # per image
    torch.testing.assert_close(fn(x, y, data_range=rng), _ref_value(entry, x, y, rng), **tol)


def test_tensor_data_range_gradients_match_the_reference():
    """The range tensor is differentiable, x and y too (autograd of the reference as oracle)."""
    x, y = _images(torch.float64, seed=4)
    rng = torch.tensor([0.8, 1.7], dtype=torch.float64)
    cases = [
        (ops.ssim, ref.ssim),
        (ops.one_minus_ssim, lambda a, b, **k: 1 - ref.ssim(a, b, **k)),
        (ops.ssim_l1_loss, ref.ssim_l1_loss),
        (
            lambda a, b, **k: ops.ms_ssim(a, b, weights=MS_WEIGHTS, **k),
            lambda a, b, **k: ref.ms_ssim(a, b, weights=MS_WEIGHTS, **k),
        ),
    ]
    g = torch.tensor([0.7, -1.3], dtype=torch.float64)
    for op, rf in cases:
        grads = []
        for f in (op, rf):
            xs, ys, rs = (t.clone().requires_grad_() for t in (x, y, rng))
            grads.append(torch.autograd.grad((f(xs, ys, data_range=rs) * g).sum(), (xs, ys, rs)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-13)


def test_tensor_data_range_under_vmap_and_gradcheck():
    x, y = _images(torch.float64, seed=5)
    x, y = x[:, :1, :12, :12], y[:, :1, :12, :12]
    rng = torch.tensor([1.5, 0.6], dtype=torch.float64)
    # vmap over a batch of ranges (one per vmapped call) matches separate calls
    rngs = torch.stack([rng, 2 * rng])
    got = torch.func.vmap(lambda r: ops.ssim(x, y, window_size=5, data_range=r))(rngs)
    want = torch.stack([ops.ssim(x, y, window_size=5, data_range=r) for r in rngs])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    xs, ys, rs = (t.clone().requires_grad_() for t in (x, y, rng))
    assert torch.autograd.gradcheck(lambda a, b, r: ops.ssim(a, b, window_size=5, data_range=r), (xs, ys, rs))


def test_half_images_with_a_tensor_range_keep_their_dtype():
    x, y = _images(torch.float32, seed=6)
    rng = torch.tensor([1.0, 2.0])
    for dt in (torch.float16, torch.bfloat16):
        out = ops.ssim(x.to(dt), y.to(dt), data_range=rng)
        assert out.dtype == dt
        want = ref.ssim(x.to(dt).double(), y.to(dt).double(), data_range=rng.double())
        # float32 arithmetic on the half inputs; the output rounded to the half type
        torch.testing.assert_close(out.double(), want, rtol=0, atol=2 * torch.finfo(dt).eps)
        assert ops.ssim(x.to(dt), y, data_range=rng).dtype == torch.float32  # autocast's mix


def test_modules_accept_the_range_forms():
    x, y = _images(torch.float64, seed=7)
    want = 1 - ref.ssim(x * 255, y * 255, data_range=255.0)
    torch.testing.assert_close(vnn.SSIMLoss("none", data_range=(0, 255))(x * 255, y * 255), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        vnn.SSIMLoss("none", data_range=torch.full((2,), 255.0, dtype=torch.float64))(x * 255, y * 255),
        want,
        rtol=0,
        atol=1e-12,
    )
