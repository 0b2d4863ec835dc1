// The staging of the SSIM CUDA passes (ssim_cuda.cu): Window (the taps by value) and
// make_window, ld, block_sum (the fixed-order block reduction), and the two tile routines:
// filter_tile, the separable window filter of one output tile (forward_kernel, pairs_kernel,
// filter_kernel), and adjoint_tile, the adjoint (transposed) filter of one pixel tile
// (backward_kernel, filter_transpose_kernel). A real header: templates and inline device
// functions only, nothing with internal linkage.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "ssim/ssim_cuda_index.h"
#include "ssim/ssim_cuda_plan.h"
#include "ssim/ssim_entry.h"

namespace vaeiso::ssim::cuda_tile {

using cuda_plan::kBX;
using cuda_plan::kBY;
using cuda_plan::kRowsPerThread;
using cuda_plan::kTH;
using cuda_plan::kThreads;
using cuda_plan::kTW;

template <typename acc_t>
struct Window {
  acc_t w[kMaxCudaWindow];
};

template <typename acc_t>
inline Window<acc_t> make_window(const std::vector<double>& w) {
  Window<acc_t> out{};
  for (size_t i = 0; i < w.size(); ++i) out.w[i] = static_cast<acc_t>(w[i]);
  return out;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t ld(const scalar_t* p, int64_t off) {
  return static_cast<acc_t>(p[off]);
}

// Sum over the block in a fixed order (warp shuffles, then the first warp); the result is
// valid in thread 0. Ends with a barrier so `red` can be reused.
template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* red) {
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if ((tid & 31) == 0) red[tid >> 5] = v;
  __syncthreads();
  if (tid < 32) {
    v = tid < kThreads / 32 ? red[tid] : acc_t(0);
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  __syncthreads();
  return v;
}

// The window-filtered moments of this thread's output positions: rows o0 + ty + ii * kBY
// (ii < kRowsPerThread), column j, v[ii][m] = sum over the window of w(r) w(c) moment_m. The
// block filters its tile horizontally into shared memory `h` (NM x (kTH + chunk - 1) x kTW;
// consecutive threads read consecutive pixels), then vertically into registers, `chunk` window
// taps at a time (ssim_cuda_plan.h). `pixel(ar, ac, wt, s)` adds wt * moment_m of image pixel
// (ar, ac) to s[m]; pixels outside the image are zero ("same" padding). Every thread of the
// block must call it (barriers inside).
template <int NM, typename acc_t, typename Pixel>
__device__ __forceinline__ void filter_tile(const Window<acc_t>& win, const Geometry& g, int chunk, int64_t o0,
                                            int64_t j, acc_t* h, acc_t (&v)[kRowsPerThread][NM], Pixel&& pixel) {
  const int ws = static_cast<int>(g.ws), R = kTH + chunk - 1;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int ii = 0; ii < kRowsPerThread; ++ii)
    for (int m = 0; m < NM; ++m) v[ii][m] = acc_t(0);
  // Taps t0 .. t0 + taps - 1 of the vertical window: rows o0 + t0 .. o0 + t0 + kTH + taps - 2.
  for (int t0 = 0; t0 < ws; t0 += chunk) {
    const int taps = min(chunk, ws - t0), rows = kTH + taps - 1;
    for (int r = ty; r < rows; r += kBY) {
      acc_t s[NM];
      for (int m = 0; m < NM; ++m) s[m] = acc_t(0);
      const int64_t ar = cuda_index::forward_staged_row(o0, t0, r, g.pad);
      if (j < g.Wo && ar >= 0 && ar < g.H) {
        for (int t = 0; t < ws; ++t) {
          const int64_t ac = j + t - g.pad;
          if (ac < 0 || ac >= g.W) continue;
          pixel(ar, ac, win.w[t], s);
        }
      }
      for (int m = 0; m < NM; ++m) h[(m * R + r) * kTW + tx] = s[m];
    }
    __syncthreads();
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int i = ty + ii * kBY;
      for (int t = 0; t < taps; ++t) {
        const acc_t wt = win.w[t0 + t];
        const int slot = cuda_index::forward_slot(i, t);
        for (int m = 0; m < NM; ++m) v[ii][m] += wt * h[(m * R + slot) * kTW + tx];
      }
    }
    __syncthreads();  // h is refilled by the next chunk (or plane)
  }
}

// The adjoint window filter at this thread's pixels: rows r0 + ty + ii * kBY (ii <
// kRowsPerThread), column c0 + tx, G[ii][m] = sum over t, u of w(t) w(u) map_m[q - t][p - u],
// (q, p) = the padded pixel position, over the map positions inside g.Ho x g.Wo. The block
// filters its tile's columns vertically into shared memory `V` (NM x kTH x (kTW + chunk - 1)),
// then horizontally into registers, `chunk` taps at a time (ssim_cuda_plan.h); the taps are
// summed in ascending order, as the forward's. G[ii][m] = sum_t w[t] Vfull[m][i][tx + ws - 1 - t]
// with the vertical pass Vfull[m][r][jc] = sum_t w[t] map_m[r0 + r + pad - t][pc], pc = c0 + pad -
// (ws - 1) + jc the map column; a chunk of taps t0 .. t0 + taps - 1 needs the columns jc = ws - t0
// - taps + lc, lc = 0 .. kTW + taps - 2, which V holds (ssim_cuda_index.h: adjoint_staged_col,
// adjoint_slot). `map(pr, pc, wt, s)` adds wt * map_m[pr][pc] to s[m]. Every thread of the block
// must call it (barriers inside).
template <int NM, typename acc_t, typename Map>
__device__ __forceinline__ void adjoint_tile(const Window<acc_t>& win, const Geometry& g, int chunk, int64_t r0,
                                             int64_t c0, acc_t* V, acc_t (&G)[kRowsPerThread][NM], Map&& map) {
  const int ws = static_cast<int>(g.ws), CW = kTW + chunk - 1;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kBX + tx;
  for (int ii = 0; ii < kRowsPerThread; ++ii)
    for (int m = 0; m < NM; ++m) G[ii][m] = acc_t(0);
  for (int t0 = 0; t0 < ws; t0 += chunk) {
    const int taps = min(chunk, ws - t0), cols = kTW + taps - 1;
    for (int idx = tid; idx < kTH * cols; idx += kThreads) {
      const int r = idx / cols, lc = idx % cols;
      const int64_t q = r0 + r + g.pad;
      const int64_t pc = cuda_index::adjoint_staged_col(c0, g.pad, ws, t0, taps, lc);
      acc_t s[NM];
      for (int m = 0; m < NM; ++m) s[m] = acc_t(0);
      if (pc >= 0 && pc < g.Wo && r0 + r < g.H) {
        for (int t = 0; t < ws; ++t) {
          const int64_t pr = q - t;
          if (pr < 0 || pr >= g.Ho) continue;
          map(pr, pc, win.w[t], s);
        }
      }
      for (int m = 0; m < NM; ++m) V[(m * kTH + r) * CW + lc] = s[m];
    }
    __syncthreads();
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int i = ty + ii * kBY;
      for (int t = t0; t < t0 + taps; ++t) {
        const acc_t wt = win.w[t];
        const int lc = cuda_index::adjoint_slot(tx, t0, taps, t);
        for (int m = 0; m < NM; ++m) G[ii][m] += wt * V[(m * kTH + i) * CW + lc];
      }
    }
    __syncthreads();  // V is refilled by the next chunk (or plane)
  }
}

}  // namespace vaeiso::ssim::cuda_tile
