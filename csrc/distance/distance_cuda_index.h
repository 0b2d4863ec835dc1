// Index arithmetic of the pair_distances CUDA forward (distance_cuda.cu) that no CPU kernel
// shares: which elements of a sample a block, a warp task and a lane's runs cover, and which
// partial each warp task writes. Host-and-device and free of CUDA and torch, so that
// tests/test_cuda_index.py checks it on the CPU (tests/cuda_index_check.cpp).
#pragma once
#include <cstdint>

#include "host_device.h"

namespace vaeiso::distance::cuda_index {

constexpr int kWarp = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarp * kWarps;
constexpr int kPerLane = 8;
constexpr int kSegment = kWarp * kPerLane;  // elements per warp task and per partial
constexpr int kTile = kSegment * kWarps;    // elements of base per block

// Blocks per sample (gridDim.x of the partials pass).
VAEISO_HD int64_t tiles_for(int64_t L) { return (L + kTile - 1) / kTile; }

// Partials per (sample, other): one per segment of kSegment elements.
VAEISO_HD int64_t segments(int64_t L) { return (L + kSegment - 1) / kSegment; }

// Elements of the sample that block `block` (blockIdx.x) owns, from block * kTile.
VAEISO_HD int64_t tile_length(int64_t L, int64_t block) {
  const int64_t rest = L - block * kTile;
  return rest < kTile ? rest : kTile;
}

// The segment (partial) index of warp task segment `seg` of block `block`, in [0, segments(L)).
VAEISO_HD int64_t segment_of(int64_t block, int seg) { return block * kWarps + seg; }

// Element of a segment that lane `lane` visits as element q of its run r, runs of V elements
// (V divides kPerLane): consecutive lanes read consecutive runs, so a warp reads kWarp * V
// consecutive elements per run, and a run starts at a multiple of V (one aligned vector load).
VAEISO_HD int lane_element(int r, int lane, int q, int V) { return r * kWarp * V + lane * V + q; }

}  // namespace vaeiso::distance::cuda_index
