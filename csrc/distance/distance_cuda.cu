// CUDA pair distances. A block owns one tile of kTile elements of one sample: it loads that
// tile of base into shared memory once, then its warps sweep (k, segment) tasks over the K
// others, each warp reducing one 256-element segment of one other with shuffles (fixed order:
// deterministic) and writing one partial. Each lane owns kPerLane elements of a segment, in
// runs of kVec (16 bytes: 8 halves, 4 floats, 2 doubles) that it loads with one 128-bit access
// when the inputs are aligned (cuda_vec.cuh); unaligned inputs take the same elements one at
// a time, in the same order, so both paths give the same bits. Terms and partials use float
// for float/half/bfloat16 and double for double.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_vec.cuh"
#include "distance/distance_kernels.h"

namespace vaeiso::distance {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarp * kWarps;
constexpr int kPerLane = 8;
constexpr int kSegment = kWarp * kPerLane;  // elements per warp task and per partial
constexpr int kTile = kSegment * kWarps;    // elements of base per block
constexpr int64_t kMaxGridY = 65535;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Elements of a lane's runs: run r covers e = r * kWarp * V + lane * V + q, q = 0 .. V - 1.
template <typename scalar_t>
constexpr int run_length() {
  return kVec<scalar_t> < kPerLane ? kVec<scalar_t> : kPerLane;
}

// kVecOK: base, others and their sample/other strides are 16-byte aligned (checked on the host).
template <Metric M, typename scalar_t, typename acc_t, bool kVecOK>
__global__ void __launch_bounds__(kThreads)
partials_kernel(const scalar_t* __restrict__ base, const scalar_t* __restrict__ others,
                acc_t* __restrict__ partial, Strided s, int64_t S) {
  constexpr int V = run_length<scalar_t>(), kRuns = kPerLane / V;
  __shared__ alignas(32) acc_t tile[kTile];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t t0 = int64_t(blockIdx.x) * kTile;
  const int64_t tile_len = s.L - t0 < kTile ? s.L - t0 : kTile;
  const int segs = static_cast<int>((tile_len + kSegment - 1) / kSegment);
  const int64_t seg0 = int64_t(blockIdx.x) * kWarps;
  for (int64_t n = blockIdx.y; n < s.N; n += gridDim.y) {
    const scalar_t* b = base + n * s.base_sn + t0;
    if (kVecOK && tile_len == kTile) {
      for (int i = threadIdx.x * V; i < kTile; i += kThreads * V) {
        const auto bv = load_vec<V>(b + i);
        VecN<acc_t, V> tv;
#pragma unroll
        for (int q = 0; q < V; ++q) tv.v[q] = static_cast<acc_t>(bv.v[q]);
        store_vec<V>(tile + i, tv);
      }
    } else {
      for (int i = threadIdx.x; i < tile_len; i += kThreads) tile[i] = static_cast<acc_t>(b[i]);
    }
    __syncthreads();
    for (int64_t task = warp; task < s.K * segs; task += kWarps) {
      const int64_t k = task / segs;
      const int seg = static_cast<int>(task % segs);
      const scalar_t* o = others + n * s.others_sn + k * s.others_sk + t0 + seg * kSegment;
      const acc_t* bt = tile + seg * kSegment;
      const int64_t len = tile_len - int64_t(seg) * kSegment;
      acc_t acc = acc_t(0);
      if (kVecOK && len >= kSegment) {
#pragma unroll
        for (int r = 0; r < kRuns; ++r) {
          const int e0 = r * kWarp * V + lane * V;
          const auto ov = load_vec<V>(o + e0);
          const auto tv = load_vec<V>(bt + e0);
#pragma unroll
          for (int q = 0; q < V; ++q) acc += term<M>(tv.v[q], static_cast<acc_t>(ov.v[q]));
        }
      } else {
#pragma unroll
        for (int r = 0; r < kRuns; ++r) {
#pragma unroll
          for (int q = 0; q < V; ++q) {
            const int e = r * kWarp * V + lane * V + q;
            if (e < len) acc += term<M>(bt[e], static_cast<acc_t>(o[e]));
          }
        }
      }
      acc = warp_sum(acc);
      if (lane == 0) partial[(n * S + seg0 + seg) * s.K + k] = acc;
    }
    __syncthreads();  // the tile is reused for the next sample
  }
}

template <typename scalar_t, typename acc_t>
__global__ void finalize_kernel(const acc_t* __restrict__ partial, const scalar_t* __restrict__ w,
                                int64_t w_sn, scalar_t* __restrict__ out, int64_t N, int64_t S,
                                int64_t K) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = i / K, k = i % K;
    acc_t acc = acc_t(0);
    for (int64_t seg = 0; seg < S; ++seg) acc += partial[(n * S + seg) * K + k];
    if (w != nullptr) acc *= static_cast<acc_t>(w[n * w_sn]);
    out[i] = static_cast<scalar_t>(acc);
  }
}

}  // namespace

#define VAEISO_DISPATCH_CUDA(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

int64_t segment_length_cuda() { return kSegment; }

at::ScalarType partial_dtype_cuda(at::ScalarType dt) {
  return dt == at::kDouble ? at::kDouble : at::kFloat;
}

void partials_cuda(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                   at::Tensor& partial) {
  if (s.N == 0 || s.K == 0 || s.L == 0) return;
  const int64_t tiles = (s.L + kTile - 1) / kTile;
  TORCH_CHECK(tiles <= int64_t(INT32_MAX), "pair_distances: others: too many elements per sample (",
              s.L, ")");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min(s.N, kMaxGridY)));
  const int64_t S = partial.size(1);
  VAEISO_DISPATCH_CUDA(base.scalar_type(), "pair_distances_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int V = run_length<scalar_t>();
    auto stream = c10::cuda::getCurrentCUDAStream();
    const auto* bp = base.const_data_ptr<scalar_t>();
    const auto* op = others.const_data_ptr<scalar_t>();
    auto* pp = partial.mutable_data_ptr<acc_t>();
    const bool vec = vec_aligned<V>(bp) && vec_aligned<V>(op) && s.base_sn % V == 0 &&
                     s.others_sn % V == 0 && s.others_sk % V == 0;
    auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, 0, stream>>>(bp, op, pp, s, S);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (m == Metric::kSSE) {
      vec ? launch(partials_kernel<Metric::kSSE, scalar_t, acc_t, true>)
          : launch(partials_kernel<Metric::kSSE, scalar_t, acc_t, false>);
    } else {
      vec ? launch(partials_kernel<Metric::kBCE, scalar_t, acc_t, true>)
          : launch(partials_kernel<Metric::kBCE, scalar_t, acc_t, false>);
    }
  });
}

void finalize_cuda(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                   at::Tensor& out) {
  const int64_t N = partial.size(0), S = partial.size(1), K = partial.size(2);
  if (N * K == 0) return;
  const int64_t blocks = std::min<int64_t>((N * K + 255) / 256, 65535);
  VAEISO_DISPATCH_CUDA(out.scalar_type(), "pair_distances_finalize_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    finalize_kernel<scalar_t, acc_t>
        <<<static_cast<unsigned>(blocks), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
            partial.const_data_ptr<acc_t>(),
            weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr,
            weight.has_value() ? weight->stride(0) : 0, out.mutable_data_ptr<scalar_t>(), N, S,
            K);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace vaeiso::distance
