"""``ssim_l1_loss`` as 3D Gaussian splatting's photometric loss, and "same" padding of images
smaller than the window.

The oracle is 3DGS's own loss written in plain torch here (utils/loss_utils.py of the 3DGS code:
an 11 x 11 Gaussian window of std 1.5 as the outer product of the 1-D one,
``conv2d(padding=5, groups=C)`` on one unbatched ``(C, H, W)`` image, the mean of the SSIM map,
and ``(1 - 0.2) * L1 + 0.2 * (1 - SSIM)``), evaluated in float64, with its autograd as the
gradient oracle. Odd sizes, and a 3 x 7 x 9 image smaller than the window.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import vaeiso_ext  # noqa: F401
from vaeiso_ext import nn as vnn
from vaeiso_ext import ops
from vaeiso_ext import reference as ref

LAMBDA_DSSIM = 0.2
SIZES = [(3, 97, 131), (3, 7, 9), (1, 12, 5)]


def _3dgs_window(channels, dtype, window_size=11, sigma=1.5):
    g = torch.tensor(
        [math.exp(-((i - window_size // 2) ** 2) / (2 * sigma**2)) for i in range(window_size)], dtype=dtype
    )
    g = (g / g.sum()).unsqueeze(1)
    return (g @ g.t()).expand(channels, 1, window_size, window_size).contiguous()


def _3dgs_ssim(img1, img2, window_size=11):
    """3DGS's ``ssim(img1, img2)``: unbatched (C, H, W) images, zero padding, the map's mean."""
    c = img1.shape[-3]
    w = _3dgs_window(c, img1.dtype, window_size)

    def f(t):
        return F.conv2d(t, w, padding=window_size // 2, groups=c)

    mu1, mu2 = f(img1), f(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = f(img1 * img1) - mu1_sq, f(img2 * img2) - mu2_sq, f(img1 * img2) - mu1_mu2
    C1, C2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2))
    return ssim_map.mean()


def _3dgs_loss(image, gt):
    return (1.0 - LAMBDA_DSSIM) * (image - gt).abs().mean() + LAMBDA_DSSIM * (1.0 - _3dgs_ssim(image, gt))


def _images(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=g, dtype=torch.float64)
    image = (gt + 0.15 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return image.to(dtype), gt.to(dtype)


# float32 against the float64 oracle: the unscaled float32 tolerances of tests/test_ms_ssim.py
# (values 1e-6, gradients 1e-4 of the largest); float64: round-off of means over ~4e4 terms.
VALUE_ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}
GRAD_ATOL = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SIZES, ids=["x".join(map(str, s)) for s in SIZES])
def test_default_is_3dgs_loss_values_and_gradients(shape, dtype):
    image, gt = _images(shape, dtype)
    a, b = image.clone().requires_grad_(), gt.clone().requires_grad_()
    got = ops.ssim_l1_loss(a, b)  # defaults: weight 0.2, window 11, sigma 1.5, padding "same"
    assert got.shape == () and got.dtype == dtype  # unbatched in, 0-d out, as 3DGS
    ga, gb = torch.autograd.grad(got, (a, b))
    ra, rb = image.double().requires_grad_(), gt.double().requires_grad_()
    want = _3dgs_loss(ra, rb)
    wa, wb = torch.autograd.grad(want, (ra, rb))
    torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=VALUE_ATOL[dtype])
    tol = GRAD_ATOL[dtype] * max(wa.abs().max().item(), wb.abs().max().item())
    torch.testing.assert_close(ga.double(), wa, rtol=0, atol=tol)
    torch.testing.assert_close(gb.double(), wb, rtol=0, atol=tol)
    # the module, and a batch of such pairs: (N,), each the unbatched value
    torch.testing.assert_close(vnn.SSIML1Loss()(image, gt), got.detach())
    batch = ops.ssim_l1_loss(torch.stack([image, gt]), torch.stack([gt, image]))
    assert batch.shape == (2,)
    torch.testing.assert_close(batch[0], got.detach(), rtol=0, atol=VALUE_ATOL[dtype])


def test_3dgs_ssim_is_the_same_padding_ssim():
    image, gt = _images((3, 97, 131), torch.float64, seed=1)
    torch.testing.assert_close(
        ops.ssim(image[None], gt[None], padding="same")[0], _3dgs_ssim(image, gt), rtol=0, atol=1e-12
    )


SMALL = [(2, 3, 7, 9), (1, 2, 3, 20), (2, 1, 1, 1)]


@pytest.mark.parametrize("shape", SMALL, ids=["x".join(map(str, s)) for s in SMALL])
def test_same_padding_smaller_than_the_window_every_op(shape):
    """Zero padding is well defined for any size: each op against the reference's
    conv2d(padding=window_size // 2), values and gradients, float64."""
    image, gt = _images(shape, torch.float64, seed=2)
    kw = dict(padding="same")
    torch.testing.assert_close(ops.ssim(image, gt, **kw), ref.ssim(image, gt, **kw), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        ops.one_minus_ssim(image, gt, **kw), 1 - ref.ssim(image, gt, **kw), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        ops.ssim_l1_loss(image, gt, ssim_weight=0.3), ref.ssim_l1_loss(image, gt, ssim_weight=0.3), rtol=0, atol=1e-12
    )
    others = torch.stack([gt, image, 0.5 * (gt + image)], 1)
    torch.testing.assert_close(
        ops.ssim_pairs(image, others, **kw), ref.ssim_pairs(image, others, **kw), rtol=1e-10, atol=1e-12
    )
    G = ops.ssim_metric_gram(image, others - image.unsqueeze(1), **kw)
    R = ref.ssim_metric_gram(image, others - image.unsqueeze(1), **kw)
    torch.testing.assert_close(G, R, rtol=1e-10, atol=1e-10 * R.abs().max().item())
    # gradients (first and second order) against the reference's autograd; at a 1x1 image torch's
    # own second order differs between releases (2.13.0 agrees with finite differences, 2.14.1
    # does not), so there the second order is judged by finite differences alone (below)
    for op, rf in (
        (lambda a, b: ops.ssim(a, b, **kw), lambda a, b: ref.ssim(a, b, **kw)),
        (ops.ssim_l1_loss, ref.ssim_l1_loss),
    ):
        grads = [_grads_and_hvp(f, image, gt) for f in (op, rf)]
        if shape[-2:] == (1, 1):
            grads = [g[:2] for g in grads]
        for u, v in zip(*grads):
            torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-12 * max(1.0, v.abs().max().item()))
    a = image.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.ssim_l1_loss(t, gt, window_size=5), (a,))


def _grads_and_hvp(f, image, gt):
    """f's gradients at (image, gt) and the Hessian-vector product d/dimage (grad_image . gt)."""
    a, b = image.clone().requires_grad_(), gt.clone().requires_grad_()
    ga, gb = torch.autograd.grad(f(a, b).sum(), (a, b), create_graph=True)
    (hv,) = torch.autograd.grad((ga * gt).sum(), a)
    return ga.detach(), gb.detach(), hv


# SMALL includes a 1x1 image one of whose pixels is exactly 0: its windowed variance is exactly 0
# and still varies with the pixel (w (1 - w) x^2), where a masked derivative of the variance clamp
# once gave 8.08 against the finite differences' 4.70 (docs/autograd.md).
@pytest.mark.parametrize("shape", SMALL, ids=["x".join(map(str, s)) for s in SMALL])
def test_same_padding_second_order_against_finite_differences(shape):
    """The Hessian-vector product of each op against central differences of its own first-order
    gradient (float64; independent of torch's autograd of the reference)."""
    image, gt = _images(shape, torch.float64, seed=2)
    for f in (lambda a, b: ops.ssim(a, b, padding="same"), ops.ssim_l1_loss):

        def grad_at(x):
            x = x.clone().requires_grad_()
            return torch.autograd.grad(f(x, gt).sum(), (x,))[0]

        _, _, hv = _grads_and_hvp(f, image, gt)
        eps = 1e-6
        fd = (grad_at(image + eps * gt) - grad_at(image - eps * gt)) / (2 * eps)
        torch.testing.assert_close(hv, fd, rtol=1e-5, atol=1e-7 * max(1.0, fd.abs().max().item()))


def test_same_padding_small_image_under_vmap_and_forward_mode():
    image, gt = _images((2, 3, 7, 9), torch.float64, seed=3)
    t = torch.randn(image.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, jv = torch.func.jvp(lambda a: ops.ssim_l1_loss(a, gt), (image,), (t,))
    _, jv_ref = torch.func.jvp(lambda a: ref.ssim_l1_loss(a, gt), (image,), (t,))
    torch.testing.assert_close(jv, jv_ref, rtol=1e-9, atol=1e-13)
    per = torch.func.vmap(lambda a, b: ops.ssim_l1_loss(a, b))(image, gt)  # unbatched pairs under vmap
    torch.testing.assert_close(per, ref.ssim_l1_loss(image, gt), rtol=0, atol=1e-12)


def test_one_pixel_second_order_against_closed_form():
    """At a 1x1 image with padding="same" the window sees one pixel with weight w (the window's
    centre tap, squared): mu = w x, variance w (1 - w) x^2, covariance w (1 - w) x y. That closed
    form, differentiated by autograd with no clamp anywhere, is the oracle for the SSIM's value,
    gradient and Hessian-vector product, at pixels that are exactly 0 (variance exactly 0) and not."""
    x = torch.tensor([0.0, 0.87, 0.0, 0.3], dtype=torch.float64).reshape(2, 2, 1, 1)
    y = torch.tensor([0.1, 0.92, 0.0, 0.7], dtype=torch.float64).reshape(2, 2, 1, 1)
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[5] / g.sum()) ** 2
    c1, c2 = 0.01**2, 0.03**2

    def closed(a, b):
        ma, mb = w * a, w * b
        va, vb, cab = w * a * a - ma * ma, w * b * b - mb * mb, w * a * b - ma * mb
        s = (2 * ma * mb + c1) * (2 * cab + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
        return s.mean(dim=(1, 2, 3))  # per image, as ops.ssim

    def ours(a, b):
        return ops.ssim(a, b, padding="same")

    torch.testing.assert_close(ours(x, y), closed(x, y), rtol=1e-12, atol=1e-14)
    for got, want in zip(_grads_and_hvp(ours, x, y), _grads_and_hvp(closed, x, y)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
