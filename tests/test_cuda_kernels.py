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
