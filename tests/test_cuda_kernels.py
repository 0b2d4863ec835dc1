"""CUDA kernel defects found by reading the code (issue 14), each with a test that catches it on a
GPU and, where the logic is host-side or shared, one that runs on the CPU.

This file is also the short subset scripts/gpu_check.sh runs under compute-sanitizer: keep the
CUDA cases small.
"""

import pytest
import torch

import vaeiso_ext  # noqa: F401  (registers torch.ops.vaeiso)
from vaeiso_ext import ops, reference

cuda = pytest.mark.cuda

# ------------------------------------------------------------------ SSIM shared-memory planning

# Tile geometry of csrc/ssim/ssim_cuda_plan.h, restated as the oracle: a block of 8 warps owns a
# 16 x 32 tile; forward, pairs and filter stage (16 + taps - 1) rows x 32 columns of 5 (forward),
# 3 (pairs) moments or 1 plane (filter), the backward and the filter transpose 16 rows x
# (32 + taps - 1) columns of 4 maps (backward) or 1 plane; forward and pairs also hold one
# accumulator per warp in a static buffer.
TH, TW, WARPS = 16, 32, 8
PLANES = {"forward": 5, "pairs": 3, "backward": 4, "filter": 1, "filter_transpose": 1}
ADJOINT = {"backward", "filter_transpose"}  # staged by columns

# cudaDevAttrMaxSharedMemoryPerBlockOptin per device class, bytes.
DEVICE_LIMITS = {
    "48KB (no opt-in)": 48 * 1024,
    "sm_75 (T4)": 64 * 1024,
    "sm_80 (A100)": 163 * 1024,
    "sm_86/89 (99 KB)": 99 * 1024,
    "sm_90 (H100)": 227 * 1024,
}
MAX_CUDA_WINDOW = 255


def smem_bytes(kind, taps, acc):
    if kind in ADJOINT:
        return PLANES[kind] * TH * (TW + taps - 1) * acc
    return PLANES[kind] * (TH + taps - 1) * TW * acc


def static_bytes(kind, acc):
    return WARPS * acc if kind in ("forward", "pairs") else 0


def plan(ws, acc, limit, kind):
    chunk, chunks, dyn, stat, opt_in = torch.ops.vaeiso._ssim_cuda_plan(ws, acc, limit, kind)
    return chunk, chunks, dyn, stat, bool(opt_in)


@pytest.mark.parametrize("device_class", list(DEVICE_LIMITS))
@pytest.mark.parametrize("acc", [4, 8], ids=["float-acc", "double-acc"])
@pytest.mark.parametrize("kind", list(PLANES))
def test_ssim_cuda_plan_fits_every_window(device_class, acc, kind):
    """Every window 1..255 gets a launch whose shared memory (dynamic + the static reduction
    buffer) fits the device, with the largest chunk of taps that fits."""
    limit = DEVICE_LIMITS[device_class]
    for ws in range(1, MAX_CUDA_WINDOW + 1):
        chunk, chunks, dyn, stat, opt_in = plan(ws, acc, limit, kind)
        assert 1 <= chunk <= ws, (ws, chunk)
        assert chunks == -(-ws // chunk)
        assert dyn == smem_bytes(kind, chunk, acc)
        assert stat == static_bytes(kind, acc)
        assert dyn + stat <= limit, (ws, dyn, stat, limit)
        assert chunk == ws or smem_bytes(kind, chunk + 1, acc) + stat > limit, "chunk not maximal"
        assert opt_in == (dyn + stat > 48 * 1024)


def test_ssim_cuda_plan_splits_exactly_where_one_tile_overflowed():
    """The issue's numbers: the whole-window forward tile overflowed float64 from ws = 167 on an
    H100, 117 on an A100, 65 on sm_86/89, and float32 from 145 on sm_86/89 (odd windows). Below
    those the plan keeps one chunk (the old kernels' arithmetic), from there on it splits."""
    cases = [
        (8, "sm_90 (H100)", 167),
        (8, "sm_80 (A100)", 117),
        (8, "sm_86/89 (99 KB)", 65),
        (4, "sm_86/89 (99 KB)", 145),
    ]
    for acc, device_class, first_split in cases:
        limit = DEVICE_LIMITS[device_class]
        assert plan(first_split - 2, acc, limit, "forward")[1] == 1
        assert plan(first_split, acc, limit, "forward")[1] >= 2
        # and the old whole-window need did pass the limit there (static buffer counted)
        assert smem_bytes("forward", first_split, acc) + static_bytes("forward", acc) > limit
        assert smem_bytes("forward", first_split - 2, acc) + static_bytes("forward", acc) <= limit


def test_ssim_cuda_plan_filter_passes_are_sized_for_one_plane():
    """The filter and its transpose stage one plane: their launch asks for one plane's tile (not
    the forward's five or the backward's four), so on a 48 KB device a float32 filter keeps the
    whole largest window in one chunk where the forward must split it."""
    for acc in (4, 8):
        for ws in (1, 11, 65, 255):
            _, _, dyn, stat, _ = plan(ws, acc, 227 * 1024, "filter")
            assert (dyn, stat) == ((TH + ws - 1) * TW * acc, 0)
            _, _, dyn, stat, _ = plan(ws, acc, 227 * 1024, "filter_transpose")
            assert (dyn, stat) == (TH * (TW + ws - 1) * acc, 0)
    limit = DEVICE_LIMITS["48KB (no opt-in)"]
    for kind in ("filter", "filter_transpose"):
        chunk, chunks, _, _, opt_in = plan(MAX_CUDA_WINDOW, 4, limit, kind)
        assert (chunk, chunks, opt_in) == (MAX_CUDA_WINDOW, 1, False)
    assert plan(MAX_CUDA_WINDOW, 4, limit, "forward")[1] > 1


def test_ssim_cuda_plan_default_window_is_one_chunk_everywhere():
    for limit in DEVICE_LIMITS.values():
        for acc in (4, 8):
            for kind in PLANES:
                chunk, chunks, *_ = plan(11, acc, limit, kind)
                assert (chunk, chunks) == (11, 1)


def test_ssim_cuda_plan_rejects_bad_arguments():
    with pytest.raises(RuntimeError, match="kind"):
        plan(11, 4, 48 * 1024, "sideways")
    with pytest.raises(RuntimeError, match="acc_bytes"):
        plan(11, 2, 48 * 1024, "forward")
    # a (fictitious) device too small for even one tap: chunk 0, which the launcher turns into
    # a clear error instead of a bad launch
    assert plan(11, 8, 1024, "forward")[0] == 0


def _images(N, C, H, W, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, C, H, W, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(N, C, H, W, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(device, dtype), y.to(device, dtype)


@cuda
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("ws", [127, 167, 255])
def test_ssim_cuda_large_windows_match_cpu(padding, ws):
    """Windows whose whole-window tile passed the shared-memory limit (float64 from 65 taps on
    sm_86) now run in chunks: forward, backward and pairs match the CPU kernels in float64."""
    x, y = _images(1, 2, ws + 4, ws + 9, "cpu", torch.float64)
    others = torch.stack([y, (x + y) / 2], dim=1)
    kw = dict(window_size=ws, sigma=ws / 6, padding=padding)
    xc, yc = x.cuda().requires_grad_(), y.cuda().requires_grad_()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    got, want = ops.ssim(xc, yc, **kw), ops.ssim(xr, yr, **kw)
    # float64, same formula, summation orders differ between devices: ~1e-13 relative; SSIM
    # values are O(1) and the terms positive-dominated (no cancellation at this noise level)
    torch.testing.assert_close(got.cpu(), want.detach(), rtol=1e-10, atol=1e-12)
    gy = torch.tensor([0.7], dtype=torch.float64)
    gxc, gyc = torch.autograd.grad(got, (xc, yc), gy.cuda())
    gxr, gyr = torch.autograd.grad(want, (xr, yr), gy)
    scale = max(gxr.abs().max().item(), gyr.abs().max().item())
    torch.testing.assert_close(gxc.cpu(), gxr, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(gyc.cpu(), gyr, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(
        ops.ssim_pairs(x.cuda(), others.cuda(), **kw).cpu(), ops.ssim_pairs(x, others, **kw), rtol=1e-10, atol=1e-12
    )


@cuda
def test_ssim_cuda_largest_window_float32_matches_float64():
    x, y = _images(1, 1, 260, 257, "cpu", torch.float64, seed=3)
    want = reference.ssim(x, y, window_size=255, sigma=40.0)
    got = ops.ssim(x.float().cuda(), y.float().cuda(), window_size=255, sigma=40.0)
    # float32 sums of 255 x 255 positive weights: relative error ~ 255 * 2 * 6e-8 per moment;
    # SSIM of a moderately perturbed pair is O(0.5), 1e-4 absolute is a 20x margin
    torch.testing.assert_close(got.double().cpu(), want, rtol=0, atol=1e-4)


# -------------------------------------------------------- GDN element-wise passes (vector paths)


def _gdn_params(C, device, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    beta = 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    gamma = 0.1 * torch.rand(C, C, generator=g, dtype=torch.float64)  # not symmetric, not diagonal
    return beta.to(device, dtype), gamma.to(device, dtype)


def _misaligned(t):
    """The same values at a storage offset of one element: every 128-bit access is unaligned,
    so the kernels take their element-at-a-time path."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    return out


# float32: the GEMM sums C products (error ~ C eps relative to the sum of |terms|, all positive
# here) and the epilogue adds a few roundings; half types are rounded at input and output.
GDN_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@cuda
@pytest.mark.parametrize("dtype", list(GDN_TOL), ids=str)
@pytest.mark.parametrize("layout", ["channel-first", "channel-last"])
@pytest.mark.parametrize("C,HW", [(16, (8, 8)), (3, (5, 7))], ids=["vector", "odd"])
def test_gdn_cuda_paths_match_reference(dtype, layout, C, HW):
    """Every epilogue path (vector / scalar x channel-first / channel-last), forward and
    backward, against the float64 reference; the unaligned copy takes the scalar path and gives
    the same values (element-wise math only: no reduction depends on the path)."""
    beta, gamma = _gdn_params(C, "cuda", dtype)
    x64 = torch.randn((4, C) + HW, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = x64.to("cuda", dtype)
    if layout == "channel-last":
        x = x.contiguous(memory_format=torch.channels_last)
    tol = GDN_TOL[dtype]
    for inverse in (False, True):
        xr = x.detach().clone().requires_grad_()
        out = ops.gdn(xr, beta, gamma, inverse)
        want = reference.gdn(x.double(), beta.double(), gamma.double(), inverse)
        torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
        if layout == "channel-first":
            xm = _misaligned(x)
            torch.testing.assert_close(ops.gdn(xm, beta, gamma, inverse), out.detach(), rtol=tol, atol=0)
        gy = torch.randn_like(out)
        (gx,) = torch.autograd.grad(out, xr, gy)
        x64r = x.double().requires_grad_()
        (gx_want,) = torch.autograd.grad(reference.gdn(x64r, beta.double(), gamma.double(), inverse), x64r, gy.double())
        torch.testing.assert_close(gx.double(), gx_want, rtol=4 * tol, atol=4 * tol * gx_want.abs().max().item())


# --------------------------------------------------------- pair distances (vector loads, half)


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("metric", ["sse", "bce"])
def test_pair_distances_cuda_vector_and_scalar_paths_agree(dtype, metric):
    """128-bit loads (aligned) and element loads (unaligned copy) visit the same elements in the
    same order: the code promises the same bits. Both match the float64 reference."""
    g = torch.Generator().manual_seed(4)
    # full tiles, a full segment and a ragged tail; a multiple of 8 so that every sample and
    # other starts 16-byte aligned (the vector path; the misaligned copies take the other one)
    L = 2048 * 3 + 256 + 40
    base = 0.05 + 0.9 * torch.rand(3, L, generator=g, dtype=torch.float64)
    others = (base.unsqueeze(1) + 0.01 * torch.randn(3, 5, L, generator=g, dtype=torch.float64)).clamp(0.01, 0.99)
    b, o = base.to("cuda", dtype), others.to("cuda", dtype)
    got = ops.pair_distances(b, o, metric)
    got_scalar = ops.pair_distances(_misaligned(b), _misaligned(o), metric)
    assert torch.equal(got, got_scalar)  # same elements, same order: bitwise (see distance_cuda.cu)
    want = reference.pair_distances(b.double(), o.double(), metric)
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=0)


# ------------------------------------------------------------------- GEMM policy (TF32, determinism)


@cuda
def test_deterministic_mode_repeats_bitwise_or_names_the_fix():
    """Under torch.use_deterministic_algorithms(True) the GEMM-based ops either repeat bit for bit
    (torch >= 2.10 needs no CUBLAS_WORKSPACE_CONFIG) or fail with an error naming the op and the
    variable."""
    beta, gamma = _gdn_params(64, "cuda", torch.float32)
    x = torch.randn(8, 64, 16, 16, generator=torch.Generator().manual_seed(8)).cuda().requires_grad_()
    xi, _ = _images(2, 3, 32, 32, "cuda", torch.float32)
    v = torch.randn(2, 6, 3, 32, 32, generator=torch.Generator().manual_seed(9)).cuda()

    def run():
        out = ops.gdn(x, beta, gamma)
        (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
        return out, gx, ops.ssim_metric_gram(xi, v)

    old, old_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        try:
            first = run()
        except RuntimeError as e:
            assert "CUBLAS_WORKSPACE_CONFIG" in str(e) and ("gdn" in str(e) or "ssim_metric_gram" in str(e)), e
            return
        second = run()
        for a, b in zip(first, second):
            assert torch.equal(a, b)  # deterministic mode: the same bits on one device
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)


# ------------------------------------------------------------------------- issue 32 (review)
#
# Defects a review of the CUDA code found before any GPU ran it. The index arithmetic of the first
# is also checked on the CPU (tests/test_cuda_index.py), finding 6 by the resource gate
# (tests/test_cuda_resources.py), the torch behaviour behind the second below without a GPU.


@cuda
@pytest.mark.parametrize(
    "ws,HW",
    [(35, (64, 64)), (67, (70, 45)), (127, (40, 150)), (255, (33, 300))],
    ids=["35-64x64", "67-70x45", "127-40x150", "255-33x300"],
)
def test_ssim_l1_loss_cuda_large_windows_match_cpu(ws, HW):
    """With "same" padding and pad > 16 (ws >= 35) the first L1 tiles started before the image:
    they read before the plane (an illegal address for plane 0, the previous plane's pixels
    otherwise). The fused L1 term alone (ssim_weight 0: the mean |x - y| in float64) and the whole
    loss and its gradients against the CPU."""
    x, y = _images(2, 3, *HW, "cpu", torch.float64, seed=11)
    kw = dict(window_size=ws, sigma=ws / 6)
    l1 = ops.ssim_l1_loss(x.cuda(), y.cuda(), ssim_weight=0.0, **kw)
    # float64 sums of <= 10^5 terms of O(0.1): ~1e-15 relative
    torch.testing.assert_close(l1.cpu(), (x - y).abs().mean((1, 2, 3)), rtol=1e-12, atol=0)
    xc, yc = x.cuda().requires_grad_(), y.cuda().requires_grad_()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    got, want = ops.ssim_l1_loss(xc, yc, **kw), ops.ssim_l1_loss(xr, yr, **kw)
    torch.testing.assert_close(got.cpu(), want.detach(), rtol=1e-10, atol=1e-12)
    gw = torch.tensor([0.7, -1.3], dtype=torch.float64)
    gxc, gyc = torch.autograd.grad(got, (xc, yc), gw.cuda())
    gxr, gyr = torch.autograd.grad(want, (xr, yr), gw)
    scale = max(gxr.abs().max().item(), gyr.abs().max().item())
    torch.testing.assert_close(gxc.cpu(), gxr, rtol=1e-9, atol=1e-10 * scale)
    torch.testing.assert_close(gyc.cpu(), gyr, rtol=1e-9, atol=1e-10 * scale)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_pair_distances_cuda_half_weight_grad_keeps_d_in_double(dtype):
    """d/d weight[n] = sum_k grad[n, k] D[n, k]: the CUDA backward recomputed D in the inputs'
    dtype (11 or 8 mantissa bits, float16 overflows above 65504). Here D ~ 1.3e3 and the two
    others differ by ~1 in D, with grad (1, -1): D rounded to float16 (spacing 1) or bfloat16
    (spacing 8) loses that difference; kept in double it survives to the final rounding. And
    D ~ 1e5 with grad 1e-3: finite (~100) only when D is not stored in float16."""
    g = torch.Generator().manual_seed(12)
    L = 8192
    base = torch.rand(2, L, generator=g, dtype=torch.float64).to(dtype).double()
    o0 = (base + 0.4 * torch.randn(2, L, generator=g, dtype=torch.float64)).to(dtype).double()
    o1 = o0.clone()
    o1[:, :16] = o1[:, :16] + 0.25  # D(o1) - D(o0) = O(1)
    others = torch.stack([o0, o1], 1).to(dtype).double()
    weight = torch.tensor([0.5, 2.0], dtype=torch.float64)
    grad = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    d = reference.pair_distances(base, others, "sse")
    want = (grad * d).sum(1)  # exact inputs (representable in dtype), float64 oracle
    args = [t.to(dtype) for t in (grad, base, others)]
    for device in ("cpu", "cuda"):
        gr, b, o = (t.to(device) for t in args)
        _, _, gw = torch.ops.vaeiso.pair_distances_backward(
            gr, b, o, "sse", weight.to(device, dtype), [False, False, True]
        )
        # D's float partials err ~1e-6 relative (~1e-3 absolute): far below the result's own
        # rounding to dtype (spacing 2^-10 or 2^-7 of |want| ~ 1..10)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(gw.double().cpu(), want, rtol=eps, atol=1e-2, msg=device)
    # the autograd path takes the same fused kernel
    w = weight.to("cuda", dtype).requires_grad_()
    out = ops.pair_distances(args[1].cuda(), args[2].cuda(), "sse", weight=w)
    (gw,) = torch.autograd.grad(out, w, args[0].cuda())
    torch.testing.assert_close(gw.double().cpu(), want, rtol=torch.finfo(dtype).eps, atol=1e-2)
    if dtype == torch.float16:
        big_o = (base + 3.5).to(dtype)  # D = sum (o - b)^2 ~ 8192 * 12 ~ 1e5 > 65504
        gsmall = torch.full((2, 1), 1e-3, dtype=dtype, device="cuda")
        _, _, gw = torch.ops.vaeiso.pair_distances_backward(
            gsmall, args[1].cuda(), big_o.unsqueeze(1).cuda(), "sse", weight.to("cuda", dtype), [False, False, True]
        )
        dbig = reference.pair_distances(base, big_o.double().unsqueeze(1), "sse")
        assert dbig.min() > 65504
        torch.testing.assert_close(gw.double().cpu(), 1e-3 * dbig[:, 0], rtol=2e-3, atol=0)


@cuda
def test_pair_distances_cuda_finalize_sums_partials_in_double():
    """The forward's L/256 per-segment partials are added in double (as the CPU does): at L = 2^22
    (16384 partials) float32 against float64."""
    g = torch.Generator().manual_seed(13)
    L = 1 << 22
    base = torch.rand(1, L, generator=g, dtype=torch.float64).float()
    others = (base.double().unsqueeze(1) + 0.01 * torch.randn(1, 2, L, generator=g, dtype=torch.float64)).float()
    want = reference.pair_distances(base.double(), others.double(), "sse")
    got = ops.pair_distances(base.cuda(), others.cuda(), "sse")
    # each 256-term float partial errs at most 8 eps relative (shuffle tree), ~eps typically, and
    # those errors average out over the partials; the double sum adds nothing and the result
    # rounds once to float32 (eps / 2 = 6e-8; the CPU kernel errs 3.6e-8 here). A float running
    # sum of these 16384 partials errs 1.2e-6 (computed on the CPU).
    torch.testing.assert_close(got.double().cpu(), want, rtol=3e-7, atol=0)
    torch.testing.assert_close(got.cpu(), ops.pair_distances(base, others, "sse"), rtol=3e-7, atol=0)


_PRECISION_APIS = {
    "legacy allow_tf32": (
        lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True),
        lambda: torch.backends.cuda.matmul.allow_tf32 is True,
    ),
    "fp32_precision tf32": (
        lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
        lambda: torch.backends.cuda.matmul.fp32_precision == "tf32",
    ),
    "set_float32_matmul_precision high": (
        lambda: torch.set_float32_matmul_precision("high"),
        lambda: torch.get_float32_matmul_precision() == "high",
    ),
    "set_float32_matmul_precision medium": (
        lambda: torch.set_float32_matmul_precision("medium"),
        lambda: torch.get_float32_matmul_precision() == "medium",
    ),
}


@cuda
@pytest.mark.parametrize("api", list(_PRECISION_APIS))
def test_gemms_full_float32_under_every_precision_api(api):
    """With TF32 allowed through each of torch's ways, GDN's channel mixing (forward and backward)
    and ssim_metric_gram's Gram products neither raise (the legacy flag, which the old scope read
    and wrote, raises once the new API has set it) nor change the user's setting (read back
    through the API that set it), and still run in full float32 (TF32 keeps 10 mantissa bits:
    ~5e-4 relative error on these sums, which the tolerances below reject)."""
    set_, check = _PRECISION_APIS[api]
    old = torch.get_float32_matmul_precision()
    try:
        set_()
        C = 192
        beta, gamma = _gdn_params(C, "cuda", torch.float32)
        gamma = gamma + 0.5
        x = torch.randn(4, C, 16, 16, generator=torch.Generator().manual_seed(5)).cuda().requires_grad_()
        out = ops.gdn(x, beta, gamma)
        assert check(), "the user's precision setting changed"
        want = reference.gdn(x.detach().double(), beta.double(), gamma.double())
        # float32: norm sums C = 192 positive products, relative error <= C eps / 2 = 5.7e-6 in any
        # summation order, halved by norm^-1/2, plus a few roundings; TF32 errs ~2e-5 typically
        # and beyond 5e-5 somewhere among these 196608 outputs
        torch.testing.assert_close(out.detach().double(), want, rtol=6e-6, atol=1e-7)
        (gx,) = torch.autograd.grad(out, x, torch.ones_like(out))
        assert check()
        x64 = x.detach().double().requires_grad_()
        (gx_want,) = torch.autograd.grad(reference.gdn(x64, beta.double(), gamma.double()), x64, torch.ones_like(x64))
        # the backward's GEMM (gamma^T t) sums C = 192 products of mixed signs: float32 errs
        # ~sqrt(C) eps ~ 1e-6 of the largest term, 20x below this atol
        torch.testing.assert_close(gx.double(), gx_want, rtol=1e-5, atol=2e-5 * gx_want.abs().max().item())
        xi, _ = _images(1, 3, 48, 48, "cuda", torch.float32, seed=6)
        v = torch.randn(1, 24, 3, 48, 48, generator=torch.Generator().manual_seed(7)).cuda()
        gram = ops.ssim_metric_gram(xi, v)
        gram_want = reference.ssim_metric_gram(xi.double(), v.double())
        # dot products of n = 3 * 48 * 48 terms: float32 errs ~sqrt(n) eps |term| ~ 1e-9 of the
        # diagonal scale (n |term|) off the diagonal and ~5e-6 relative on it; TF32 (eps 4.9e-4)
        # errs ~6e-6 of the diagonal scale off the diagonal, 30x this atol
        diag = gram_want.diagonal(dim1=1, dim2=2).abs().max().item()
        torch.testing.assert_close(gram.double(), gram_want, rtol=2e-5, atol=2e-7 * diag)
        assert check()
    finally:
        # set_float32_matmul_precision leaves every API readable again (mixing them does not)
        torch.set_float32_matmul_precision(old)


def test_legacy_tf32_flag_raises_after_the_new_api():
    """The torch behaviour the GEMM scope (csrc/gemm_policy.h) must avoid, checked without a GPU:
    in torch 2.14.1 reading the legacy flag (what allowTF32CuBLAS() reads) after
    torch.backends.cuda.matmul.fp32_precision = "tf32" raises RuntimeError. Run in a fresh
    interpreter: the mixed state is process-wide."""
    from conftest import run_python

    if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 14):
        pytest.skip("checked on torch 2.14 (the project's torch), not on older releases")
    code = (
        "import torch\n"
        "torch.backends.cuda.matmul.fp32_precision = 'tf32'\n"
        "try:\n"
        "    torch.backends.cuda.matmul.allow_tf32\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', 'legacy and new APIs' in str(e))\n"
        "assert torch.backends.cuda.matmul.fp32_precision == 'tf32'\n"
    )
    out = run_python(code, "RAISED")
    assert "RAISED True" in out


@cuda
def test_ssim_cuda_two_threads_with_different_windows():
    """The kernels' MaxDynamicSharedMemorySize is per kernel, shared by host threads: set to each
    call's own need, a thread with a smaller window could lower it between another's set and
    launch ("invalid argument"). Two threads, float64 windows 255 and 67 (both over 48 KB), each
    repeating its call, must all succeed with the single-threaded values."""
    import threading

    x, y = _images(1, 1, 40, 40, "cuda", torch.float64, seed=14)
    cases = {
        255: dict(window_size=255, sigma=40.0, padding="same"),
        67: dict(window_size=67, sigma=10.0, padding="same"),
    }
    want = {ws: ops.ssim(x, y, **kw) for ws, kw in cases.items()}
    errors, start = [], threading.Barrier(len(cases))

    def work(ws):
        try:
            start.wait()
            for _ in range(20):
                got = ops.ssim(x, y, **cases[ws])
                torch.testing.assert_close(got, want[ws], rtol=0, atol=0)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001  (reported below with its window)
            errors.append((ws, repr(e)))

    threads = [threading.Thread(target=work, args=(ws,)) for ws in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
