// Launch planning of the SSIM CUDA kernels (ssim_cuda.cu): the tile geometry and the shared
// memory each pass needs. Plain host C++, no CUDA and no torch, so the planner is also built
// into CPU-only builds and tested there for every window and device class (vaeiso::
// _ssim_cuda_plan, tests/test_cuda_kernels.py).
//
// A block owns a kTH x kTW tile of outputs (forward, pairs, filter) or pixels (backward, filter
// transpose). The forward stagings (filter_tile: forward, pairs, filter) hold the horizontal
// window sums of `planes` moments for kTH + taps - 1 rows in shared memory, the adjoint stagings
// (adjoint_tile: backward, filter transpose) the vertical sums of `planes` maps for
// kTW + taps - 1 columns. With the
// whole window at once (taps = ws) that grows with the window and passes the per-block limit
// long before 255 taps (float64 on a 99 KB sm_86 from ws = 65), so the window is split into
// chunks of `chunk` taps: the kernels stage one chunk, accumulate it into registers, and move
// on. Every window up to kMaxCudaWindow then runs on every device; a window that fits whole
// keeps one chunk (the previous kernels, bit for bit: the taps are summed in the same order).
#pragma once
#include <cstdint>

namespace vaeiso::ssim::cuda_plan {

constexpr int kBX = 32, kBY = 8, kThreads = kBX * kBY;
constexpr int kTW = 32, kTH = 16;  // output tile (forward, pairs) or pixel tile (backward)
constexpr int kRowsPerThread = kTH / kBY;
// Every device can give a block this much shared memory without opting in.
constexpr int64_t kDefaultSmemBytes = 48 * 1024;

// kFilter / kFilterTranspose: ssim_filter (ssim_metric_gram's window filter) and its adjoint.
enum class Pass : int { kForward = 0, kPairs = 1, kBackward = 2, kFilter = 3, kFilterTranspose = 4 };

// Whether the pass stages the adjoint (columns: adjoint_tile) rather than the forward (rows:
// filter_tile) window sums (ssim_cuda_tile.cuh).
constexpr bool adjoint_staging(Pass p) { return p == Pass::kBackward || p == Pass::kFilterTranspose; }

// Moments (forward: x, d, xx, dd, xd; pairs: d, dd, xd; filter: the plane) or maps (backward:
// 4; filter transpose: the plane) staged per tile.
constexpr int staged_planes(Pass p) {
  switch (p) {
    case Pass::kForward:
      return 5;
    case Pass::kPairs:
      return 3;
    case Pass::kBackward:
      return 4;
    default:
      return 1;
  }
}

// The static __shared__ buffer of the block reduction (forward and pairs: one value per warp;
// the other passes reduce nothing).
constexpr int64_t static_smem_bytes(Pass p, int64_t acc_bytes) {
  return p == Pass::kForward || p == Pass::kPairs ? int64_t(kThreads / 32) * acc_bytes : 0;
}

// Dynamic shared memory of a tile that stages `taps` window taps at once.
constexpr int64_t dynamic_smem_bytes(Pass p, int64_t taps, int64_t acc_bytes) {
  return adjoint_staging(p) ? int64_t(staged_planes(p)) * kTH * (kTW + taps - 1) * acc_bytes
                            : int64_t(staged_planes(p)) * (kTH + taps - 1) * kTW * acc_bytes;
}

struct Plan {
  int64_t chunk;          // taps staged at once (1..ws); 0 when not even one tap fits
  int64_t chunks;         // ceil(ws / chunk)
  int64_t dynamic_bytes;  // the launch's dynamic shared memory
  int64_t static_bytes;   // the kernel's static shared memory
  bool opt_in;            // dynamic + static > 48 KB: cudaFuncSetAttribute is needed
};

// The largest chunk (<= ws) whose tile, with the static buffer, fits in `limit_bytes` per
// block (the device's cudaDevAttrMaxSharedMemoryPerBlockOptin).
inline Plan plan(Pass p, int64_t ws, int64_t acc_bytes, int64_t limit_bytes) {
  Plan r{};
  r.static_bytes = static_smem_bytes(p, acc_bytes);
  const int64_t budget = limit_bytes - r.static_bytes;
  const int64_t per_tap = dynamic_smem_bytes(p, 2, acc_bytes) - dynamic_smem_bytes(p, 1, acc_bytes);
  const int64_t fixed = dynamic_smem_bytes(p, 1, acc_bytes) - per_tap;  // the taps = 0 part
  int64_t chunk = ws;
  if (dynamic_smem_bytes(p, ws, acc_bytes) > budget) {
    chunk = budget > fixed ? (budget - fixed) / per_tap : 0;
  }
  if (chunk < 1 || ws < 1) return Plan{0, 0, 0, r.static_bytes, false};
  r.chunk = chunk;
  r.chunks = (ws + chunk - 1) / chunk;
  r.dynamic_bytes = dynamic_smem_bytes(p, chunk, acc_bytes);
  r.opt_in = r.dynamic_bytes + r.static_bytes > kDefaultSmemBytes;
  return r;
}

}  // namespace vaeiso::ssim::cuda_plan
