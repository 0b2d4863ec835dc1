"""MS-SSIM's pyramid step, ``vaeiso::ssim_pool`` (csrc/ssim/ssim_math.h, pool_at): the 2x2
average pooling ``avg_pool2d(kernel_size=2, padding=(H % 2, W % 2))`` and its adjoint, against
ATen's ``avg_pool2d`` and its autograd (an independent oracle), in every dtype, layout and
autograd mode, and its errors."""

import pytest
import torch
import torch.nn.functional as F

import vaeiso_ext
from vaeiso_ext.ops._ms_ssim import pool
from vaeiso_ext.ops._ssim_autograd import PoolFunction

POOL = torch.ops.vaeiso.ssim_pool
HAS_CUDA_KERNELS = vaeiso_ext.build_info()["cuda"] and torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA_KERNELS, reason="needs a CUDA device")],
    ),
]
# every parity of the two sides, a side of 1, and planes large enough to be split among threads
SIZES = [(6, 8), (7, 8), (6, 9), (7, 9), (1, 1), (1, 4), (2, 3), (131, 67)]


def _aten(t):
    return F.avg_pool2d(t, kernel_size=2, padding=(t.shape[-2] % 2, t.shape[-1] % 2))


def _aten_adjoint(g, h, w):
    t = torch.zeros(g.shape[:-2] + (h, w), dtype=g.dtype, device=g.device, requires_grad=True)
    return torch.autograd.grad(_aten(t), t, g)[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h,w", SIZES)
def test_pool_and_adjoint_match_aten_in_float64(device, h, w):
    g = torch.Generator().manual_seed(h * 100 + w)
    t = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64).to(device)
    torch.testing.assert_close(POOL(t, h, w, False), _aten(t), rtol=0, atol=1e-15)
    p = torch.randn(_aten(t).shape, generator=g, dtype=torch.float64).to(device)
    # each pixel gets exactly a quarter of its window's gradient: bit-exact
    assert torch.equal(POOL(p, h, w, True), _aten_adjoint(p, h, w))
    # the adjoint identity <P t, p> = <t, P^T p>
    torch.testing.assert_close((POOL(t, h, w, False) * p).sum(), (t * POOL(p, h, w, True)).sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-6), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)], ids=["f32", "f16", "bf16"]
)
def test_pool_dtypes_round_once(device, dtype, tol):
    g = torch.Generator().manual_seed(3)
    t = torch.rand(2, 3, 33, 20, generator=g, dtype=torch.float64)
    got = POOL(t.to(device, dtype), 33, 20, False)
    assert got.dtype == dtype and got.shape == (2, 3, 17, 10)
    # computed in float32 from the rounded input and rounded once: within the output's rounding
    torch.testing.assert_close(got.double().cpu(), _aten(t.to(dtype).double()), rtol=tol, atol=tol)
    gt = POOL(t[..., :17, :10].to(device, dtype), 33, 20, True)
    assert gt.dtype == dtype and gt.shape == (2, 3, 33, 20)
    torch.testing.assert_close(gt.double().cpu(), _aten_adjoint(t[..., :17, :10].to(dtype).double(), 33, 20))


def test_pool_any_layout_and_leading_dims():
    g = torch.Generator().manual_seed(4)
    t = torch.randn(2, 3, 4, 9, 11, generator=g, dtype=torch.float64)
    want = _aten(t.reshape(-1, 9, 11)).reshape(2, 3, 4, 5, 6)
    torch.testing.assert_close(POOL(t, 9, 11, False), want)
    cl = t[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(POOL(cl, 9, 11, False), want[0])
    torch.testing.assert_close(POOL(t.transpose(-1, -2).contiguous().transpose(-1, -2), 9, 11, False), want)
    torch.testing.assert_close(POOL(t[..., ::1, :], 9, 11, False), want)
    assert POOL(t[:0], 9, 11, False).shape == (0, 3, 4, 5, 6)


def test_pool_every_autograd_mode_matches_aten():
    g = torch.Generator().manual_seed(5)
    t = torch.randn(2, 2, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # the wrapper's Function and the custom op's registered autograd: first and second order
    assert torch.autograd.gradcheck(lambda a: pool(a), (t,))
    assert torch.autograd.gradgradcheck(lambda a: pool(a), (t,))
    assert torch.autograd.gradcheck(lambda a: POOL(a, 7, 6, False), (t,))
    assert torch.autograd.gradcheck(lambda a: POOL(a, 7, 6, True), (p,))
    assert torch.autograd.gradgradcheck(lambda a: POOL(a, 7, 6, True), (p,))
    # forward mode, vmap and jacrev through the Function, against ATen
    tt = torch.randn(t.shape, generator=g, dtype=torch.float64)
    _, jv = torch.func.jvp(pool, (t.detach(),), (tt,))
    torch.testing.assert_close(jv, _aten(tt))
    batch = torch.randn(3, 2, 2, 7, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.vmap(pool)(batch), _aten(batch.flatten(0, 1)).reshape(3, 2, 2, 4, 3))
    torch.testing.assert_close(
        torch.vmap(lambda a: PoolFunction.call(a, 7, 6, True))(torch.randn(3, 2, 4, 3, dtype=torch.float64)).shape,
        torch.Size([3, 2, 7, 6]),
    )
    one = t.detach()[:1, :1]
    torch.testing.assert_close(torch.func.jacrev(pool)(one), torch.func.jacrev(_aten)(one))


def test_pool_under_compile_is_one_node():
    t = torch.randn(2, 3, 9, 10, dtype=torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a: pool(a) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(t), 2 * _aten(t))


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.randn(5), 1, 5, False), "at least 2 dims"),
        ((torch.randn(2, 6, 8), 6, 9, False), r"last two dims to be \(6, 9\)"),
        ((torch.randn(2, 3, 4), 6, 9, True), r"last two dims to be \(3, 5\)"),
        ((torch.randn(2, 6, 8), 0, 8, False), "height, width: expected at least 1"),
        ((torch.randint(0, 3, (2, 6, 8)), 6, 8, False), "ssim_pool: t"),
    ],
)
def test_pool_bad_inputs_name_the_op_and_argument(args, match):
    with pytest.raises(RuntimeError, match=match):
        POOL(*args)
    with pytest.raises(RuntimeError, match="ssim_pool"):
        POOL(*args)
