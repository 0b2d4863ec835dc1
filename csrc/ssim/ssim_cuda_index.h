// Index arithmetic of the SSIM CUDA kernels (ssim_cuda.cu, ssim_cuda_tile.cuh) that no CPU
// kernel shares: which tiles a pass launches, which pixels each tile of the forward adds to the
// fused L1 sum, and where the forward and backward stage the window's rows and columns.
// Host-and-device and free of CUDA and torch, so that tests/test_cuda_index.py compiles it with
// the system C++ compiler and checks it on the CPU for every padding, window and image size (no
// GPU has to run the kernels).
#pragma once
#include <cstdint>

#include "host_device.h"

namespace vaeiso::ssim::cuda_index {

// Tiles of `len` outputs that cover `n` outputs (one grid dimension).
VAEISO_HD int64_t tiles_for(int64_t n, int64_t len) { return (n + len - 1) / len; }

VAEISO_HD int64_t clamp_to(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Half-open [lo, hi); empty when hi == lo.
struct Span {
  int64_t lo, hi;
};

// The pixels along one axis (n of them, zero padding `pad` on each side) whose |y - x| tile
// `tile` of `tiles` (each `len` outputs, the first at tile * len) adds to the L1 sum: its own
// outputs shifted by -pad, the first tile from 0 and the last to n. The boundaries are clamped
// to [0, n]: with pad > len the shifted start of the first tiles lies before the image (and
// the tiles before it cover nothing), which the kernel would otherwise read. Consecutive tiles
// then meet, so every pixel is counted by exactly one tile.
VAEISO_HD Span l1_span(int64_t tile, int64_t tiles, int64_t len, int64_t n, int64_t pad) {
  const int64_t o0 = tile * len;
  const int64_t lo = tile == 0 ? 0 : o0 - pad;
  const int64_t hi = tile + 1 == tiles ? n : o0 + len - pad;
  return Span{clamp_to(lo, 0, n), clamp_to(hi, 0, n)};
}

// The forward's filter_tile (ssim_cuda_tile.cuh) stages, per chunk of taps t0 .. t0 + taps - 1,
// the horizontal sums of tile rows r = 0 .. kTH + taps - 2, row r being image row
// forward_staged_row(o0, t0, r, pad) (o0 the tile's first output row); output row o0 + i takes
// tap t0 + t from staged row forward_slot(i, t), which holds image row o0 + i + t0 + t - pad.
VAEISO_HD int64_t forward_staged_row(int64_t o0, int t0, int r, int64_t pad) { return o0 + t0 + r - pad; }
VAEISO_HD int forward_slot(int i, int t) { return i + t; }

// The backward's vertical adjoint pass stages, per chunk of taps t0 .. t0 + taps - 1 and per
// tile row, the columns lc = 0 .. width + taps - 2 (width = the tile's kTW). Staged column lc
// holds map column c0 + pad - (ws - 1) + (ws - t0 - taps) + lc, where c0 is the tile's first
// pixel column; pixel column c0 + tx reads tap t from staged column adjoint_slot(...), which
// holds map column c0 + tx + pad - t (the adjoint of out[o] = sum_t w[t] in[o + t - pad]).
VAEISO_HD int64_t adjoint_staged_col(int64_t c0, int64_t pad, int64_t ws, int64_t t0, int64_t taps, int64_t lc) {
  return c0 + pad - (ws - 1) + (ws - t0 - taps) + lc;
}
VAEISO_HD int adjoint_slot(int tx, int t0, int taps, int t) { return tx + t0 + taps - 1 - t; }

}  // namespace vaeiso::ssim::cuda_index
