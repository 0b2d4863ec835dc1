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
# 16 x 32 tile; forward and pairs stage (16 + taps - 1) rows x 32 columns of 5 (forward) or 3
# (pairs) moments, the backward 16 rows x (32 + taps - 1) columns of 4 maps; forward and pairs
# also hold one accumulator per warp in a static buffer.
TH, TW, WARPS = 16, 32, 8
PLANES = {"forward": 5, "pairs": 3, "backward": 4}

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
    if kind == "backward":
        return PLANES[kind] * TH * (TW + taps - 1) * acc
    return PLANES[kind] * (TH + taps - 1) * TW * acc


def static_bytes(kind, acc):
    return 0 if kind == "backward" else WARPS * acc


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
    cases = [(8, "sm_90 (H100)", 167), (8, "sm_80 (A100)", 117), (8, "sm_86/89 (99 KB)", 65),
             (4, "sm_86/89 (99 KB)", 145)]
    for acc, device_class, first_split in cases:
        limit = DEVICE_LIMITS[device_class]
        assert plan(first_split - 2, acc, limit, "forward")[1] == 1
        assert plan(first_split, acc, limit, "forward")[1] >= 2
        # and the old whole-window need did pass the limit there (static buffer counted)
        assert smem_bytes("forward", first_split, acc) + static_bytes("forward", acc) > limit
        assert smem_bytes("forward", first_split - 2, acc) + static_bytes("forward", acc) <= limit


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
    torch.testing.assert_close(ops.ssim_pairs(x.cuda(), others.cuda(), **kw).cpu(),
                               ops.ssim_pairs(x, others, **kw), rtol=1e-10, atol=1e-12)


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
        (gx_want,) = torch.autograd.grad(reference.gdn(x64r, beta.double(), gamma.double(), inverse), x64r,
                                         gy.double())
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
    base = (0.05 + 0.9 * torch.rand(3, L, generator=g, dtype=torch.float64))
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
def test_gemms_ignore_tf32_and_restore_the_flag():
    """With TF32 allowed globally, GDN's channel mixing and ssim_metric_gram's Gram products still
    run in full float32 (TF32 keeps 10 mantissa bits: ~5e-4 relative error on these sums, which
    the tolerances below reject), and the user's setting is left as it was."""
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        C = 192
        beta, gamma = _gdn_params(C, "cuda", torch.float32)
        gamma = gamma + 0.5  # large off-diagonal mixing: the GEMM dominates norm
        x = torch.randn(4, C, 16, 16, generator=torch.Generator().manual_seed(5)).cuda()
        out = ops.gdn(x, beta, gamma)
        want = reference.gdn(x.double(), beta.double(), gamma.double())
        # float32: norm sums C = 192 positive products, relative error <= C eps / 2 = 5.7e-6 in any
        # summation order, halved by norm^-1/2, plus a few roundings; TF32 errs ~2e-5 typically
        # and beyond 5e-5 somewhere among these 196608 outputs
        torch.testing.assert_close(out.double(), want, rtol=6e-6, atol=1e-7)
        assert torch.backends.cuda.matmul.allow_tf32 is True

        xi, _ = _images(1, 3, 48, 48, "cuda", torch.float32, seed=6)
        v = torch.randn(1, 24, 3, 48, 48, generator=torch.Generator().manual_seed(7)).cuda()
        gram = ops.ssim_metric_gram(xi, v)
        gram_want = reference.ssim_metric_gram(xi.double(), v.double())
        # dot products of n = 3 * 48 * 48 terms: float32 errs ~sqrt(n) eps |term| ~ 1e-9 of the
        # diagonal scale (n |term|) off the diagonal and ~5e-6 relative on it; TF32 (eps 4.9e-4)
        # errs ~6e-6 of the diagonal scale off the diagonal, 30x this atol
        diag = gram_want.diagonal(dim1=1, dim2=2).abs().max().item()
        torch.testing.assert_close(gram.double(), gram_want, rtol=2e-5, atol=2e-7 * diag)
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


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
