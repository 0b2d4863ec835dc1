// CUDA pair distances. Forward: a partial pass, then a finalize pass. A block owns one tile of kTile elements of one
// sample: it loads that tile of base into shared memory once, then its warps sweep (k, segment) tasks over the K
// others, each warp reducing one 256-element segment of one other with shuffles (fixed order:
// deterministic) and writing one partial. Each lane owns kPerLane elements of a segment, in
// runs of kVec (16 bytes: 8 halves, 4 floats, 2 doubles) that it loads with one 128-bit access
// when the inputs are aligned (cuda_vec.cuh); unaligned inputs take the same elements one at
// a time, in the same order, so both paths give the same bits. Terms and partials use float
// for float/half/bfloat16 and double for double; the finalize adds the partials in double.
// Backward: one thread per element of base, visiting the K others in order (the derivatives of
// distance_math.h).
#include "cuda_host.h"

#include <type_traits>

#include "cuda_vec.cuh"
#include "distance/distance_cuda_index.h"
#include "distance/distance_entry.h"

namespace vaeiso::distance {
namespace {

// The tiling (kTile elements per block, kSegment per warp task and partial, kPerLane per lane)
// and its index arithmetic: distance_cuda_index.h, checked on the CPU.
using namespace cuda_index;
constexpr int64_t kMaxGridY = 65535;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The length V of a lane's runs (lane_element, distance_cuda_index.h): one 16-byte vector.
template <typename scalar_t>
constexpr int run_length() {
  return kVec<scalar_t> < kPerLane ? kVec<scalar_t> : kPerLane;
}

// kVecOK: base, others and their sample/other strides are 16-byte aligned (checked on the host).
template <Metric M, typename scalar_t, typename acc_t, bool kVecOK>
__global__ void __launch_bounds__(kThreads)
    partials_kernel(const scalar_t* __restrict__ base, const scalar_t* __restrict__ others, acc_t* __restrict__ partial,
                    Strided s, int64_t S) {
  constexpr int V = run_length<scalar_t>(), kRuns = kPerLane / V;
  __shared__ alignas(32) acc_t tile[kTile];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t t0 = int64_t(blockIdx.x) * kTile;
  const int64_t tile_len = tile_length(s.L, blockIdx.x);
  const int segs = static_cast<int>(segments(tile_len));
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
          const int e0 = lane_element(r, lane, 0, V);
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
            const int e = lane_element(r, lane, q, V);
            if (e < len) acc += term<M>(bt[e], static_cast<acc_t>(o[e]));
          }
        }
      }
      acc = warp_sum(acc);
      if (lane == 0) partial[(n * S + segment_of(blockIdx.x, seg)) * s.K + k] = acc;
    }
    __syncthreads();  // the tile is reused for the next sample
  }
}

// out[n, k] = (the S partials of (n, k), added in order in double) * w[n], as the CPU does: a
// float running sum would add ~4,000 float roundings at L = 10^6.
template <typename scalar_t, typename acc_t, typename out_t>
__global__ void finalize_kernel(const acc_t* __restrict__ partial, const scalar_t* __restrict__ w, int64_t w_sn,
                                out_t* __restrict__ out, int64_t N, int64_t S, int64_t K) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t n = i / K, k = i % K;
    double acc = 0.0;
    for (int64_t seg = 0; seg < S; ++seg) acc += static_cast<double>(partial[(n * S + seg) * K + k]);
    if (w != nullptr) acc *= static_cast<double>(static_cast<acc_t>(w[n * w_sn]));
    if constexpr (std::is_same_v<out_t, double>) {
      out[i] = acc;
    } else {
      out[i] = static_cast<out_t>(static_cast<acc_t>(acc));  // via acc_t, as the CPU rounds
    }
  }
}

template <Metric M, typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ base, const scalar_t* __restrict__ others,
                                const scalar_t* __restrict__ grad, int64_t g_sn, int64_t g_sk,
                                const scalar_t* __restrict__ w, int64_t w_sn, scalar_t* __restrict__ gb,
                                scalar_t* __restrict__ go, Strided s) {
  for (int64_t n = blockIdx.y; n < s.N; n += gridDim.y) {
    const acc_t wn = w != nullptr ? static_cast<acc_t>(w[n * w_sn]) : acc_t(1);
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.L; i += int64_t(blockDim.x) * gridDim.x) {
      const acc_t b = static_cast<acc_t>(base[n * s.base_sn + i]);
      acc_t db = acc_t(0);
      for (int64_t k = 0; k < s.K; ++k) {
        const acc_t o = static_cast<acc_t>(others[n * s.others_sn + k * s.others_sk + i]);
        const acc_t gw = static_cast<acc_t>(grad[n * g_sn + k * g_sk]) * wn;
        acc_t po, pb;
        if constexpr (M == Metric::kSSE) {
          po = acc_t(2) * (o - b);
          pb = -po;
        } else {
          po = bce_grad_other(b, o);
          pb = bce_grad_base(b, o);
        }
        if (go != nullptr) go[(n * s.K + k) * s.L + i] = static_cast<scalar_t>(gw * po);
        db += gw * pb;
      }
      if (gb != nullptr) gb[n * s.L + i] = static_cast<scalar_t>(db);
    }
  }
}

}  // namespace

namespace {

void partials_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Tensor& partial) {
  if (s.N == 0 || s.K == 0 || s.L == 0) return;
  const int64_t tiles = tiles_for(s.L);
  VAEISO_CHECK(tiles <= int64_t(INT32_MAX), "pair_distances: others: too many elements per sample (", s.L, ")");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min(s.N, kMaxGridY)));
  const int64_t S = partial.size(1);
  VAEISO_DISPATCH_CUDA(base.scalar_type(), "pair_distances_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    constexpr int V = run_length<scalar_t>();
    auto stream = current_stream(base);
    const auto* bp = cdata<scalar_t>(base);
    const auto* op = cdata<scalar_t>(others);
    auto* pp = mdata<acc_t>(partial);
    const bool vec =
        vec_aligned<V>(bp) && vec_aligned<V>(op) && s.base_sn % V == 0 && s.others_sn % V == 0 && s.others_sk % V == 0;
    auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, 0, stream>>>(bp, op, pp, s, S);
      check_launch();
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

// out: (N, K) in the inputs' dtype (`scalar_type`), or double (the D of grad_weight).
void finalize_cuda(const Tensor& partial, ScalarType scalar_type, const std::optional<Tensor>& weight, Tensor& out) {
  const int64_t N = partial.size(0), S = partial.size(1), K = partial.size(2);
  if (N * K == 0) return;
  const int64_t blocks = std::min<int64_t>((N * K + 255) / 256, 65535);
  VAEISO_DISPATCH_CUDA(scalar_type, "pair_distances_finalize_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    auto launch = [&](auto* out_ptr) {
      finalize_kernel<<<static_cast<unsigned>(blocks), 256, 0, current_stream(partial)>>>(
          cdata<acc_t>(partial), weight.has_value() ? cdata<scalar_t>(*weight) : nullptr,
          weight.has_value() ? weight->stride(0) : 0, out_ptr, N, S, K);
      check_launch();
    };
    if (out.scalar_type() == dt::kDouble) {
      launch(mdata<double>(out));
    } else {
      launch(mdata<scalar_t>(out));
    }
  });
}

// D (N, K) of the forward without weight into `out` (the inputs' dtype, or double).
void distances_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m,
                    const std::optional<Tensor>& weight, Tensor& out) {
  const int64_t S = segments(s.L);
  const auto pdt = base.scalar_type() == dt::kDouble ? dt::kDouble : dt::kFloat;
  auto partial = alloc({s.N, S, s.K}, pdt, base);
  partials_cuda(base, others, s, m, partial);
  finalize_cuda(partial, base.scalar_type(), weight, out);
}

// ---- the convex metrics' factor (distance_math.h): a warp per sample sums the squared norm
// (in double, a fixed order: deterministic); its share of d/d base, one thread per element.
template <typename scalar_t, typename acc_t>
__global__ void scales_kernel(const scalar_t* __restrict__ base, Strided s, Scale sc, scalar_t* __restrict__ a) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t n = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; n < s.N; n += warps) {
    double sq = 0;
    for (int64_t i = lane; i < s.L; i += kWarp) {
      const double v = static_cast<double>(static_cast<acc_t>(base[n * s.base_sn + i]));
      sq += v * v;
    }
    sq = warp_sum(sq);
    if (lane == 0) a[n] = static_cast<scalar_t>(static_cast<acc_t>(scale_of(sq, sc)));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void scale_grad_kernel(const scalar_t* __restrict__ base, Strided s, Scale sc,
                                  const scalar_t* __restrict__ a, const scalar_t* __restrict__ gw,
                                  scalar_t* __restrict__ gb) {
  const int64_t total = s.N * s.L;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / s.L, i = e % s.L;
    const acc_t c = static_cast<acc_t>(gw[n]) * scale_slope(static_cast<acc_t>(a[n]), sc);
    gb[e] = static_cast<scalar_t>(static_cast<acc_t>(gb[e]) + c * static_cast<acc_t>(base[n * s.base_sn + i]));
  }
}

unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>((n + threads - 1) / threads, 1), 65535LL * 8));
}

}  // namespace

static void scales_cuda(const Tensor& base, const Strided& s, Scale sc, Tensor& a) {
  VAEISO_DISPATCH_CUDA(base.scalar_type(), "pair_distances_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    scales_kernel<scalar_t, acc_t><<<grid_for(s.N * kWarp, 256), 256, 0, current_stream(base)>>>(
        cdata<scalar_t>(base), s, sc, mdata<scalar_t>(a));
    check_launch();
  });
}

static void scale_grad_cuda(const Tensor& base, const Strided& s, Scale sc, const Tensor& a, const Tensor& grad_weight,
                            Tensor& grad_base) {
  VAEISO_DISPATCH_CUDA(base.scalar_type(), "pair_distances_backward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    scale_grad_kernel<scalar_t, acc_t><<<grid_for(s.N * s.L, 256), 256, 0, current_stream(base)>>>(
        cdata<scalar_t>(base), s, sc, cdata<scalar_t>(a), cdata<scalar_t>(grad_weight), mdata<scalar_t>(grad_base));
    check_launch();
  });
}

// A convex metric's factor a(base) (N,) is written first and taken as the passes' weight.
void forward_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc,
                  const std::optional<Tensor>& weight, Tensor& out) {
  if (sc == Scale::kNone) {
    distances_cuda(base, others, s, m, weight, out);
    return;
  }
  auto a = alloc({s.N}, base.scalar_type(), base);
  scales_cuda(base, s, sc, a);
  distances_cuda(base, others, s, m, a, out);
}

// A convex metric: the passes with the factor as their weight, whose gradient (sum over k of
// grad D) then gives the factor's share of d/d base.
void backward_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc, const Tensor& grad,
                   const std::optional<Tensor>& weight, Tensor& grad_base, Tensor& grad_others, Tensor& grad_weight) {
  if (sc != Scale::kNone) {
    auto a = alloc({s.N}, base.scalar_type(), base);
    scales_cuda(base, s, sc, a);
    Tensor grad_factor = grad_base.defined() ? alloc({s.N}, base.scalar_type(), base) : Tensor();
    backward_cuda(base, others, s, m, Scale::kNone, grad, a, grad_base, grad_others, grad_factor);
    if (grad_base.defined()) scale_grad_cuda(base, s, sc, a, grad_factor, grad_base);
    return;
  }
  if (grad_base.defined() || grad_others.defined()) {
    const int64_t bx = std::min<int64_t>((s.L + 255) / 256, 65535);
    const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(std::min(s.N, kMaxGridY)));
    VAEISO_DISPATCH_CUDA(base.scalar_type(), "pair_distances_backward_cuda", [&] {
      using acc_t = opmath_t<scalar_t>;
      auto launch = [&](auto kernel) {
        kernel<<<grid, 256, 0, current_stream(base)>>>(
            cdata<scalar_t>(base), cdata<scalar_t>(others), cdata<scalar_t>(grad), grad.stride(0), grad.stride(1),
            weight.has_value() ? cdata<scalar_t>(*weight) : nullptr, weight.has_value() ? weight->stride(0) : 0,
            grad_base.defined() ? mdata<scalar_t>(grad_base) : nullptr,
            grad_others.defined() ? mdata<scalar_t>(grad_others) : nullptr, s);
        check_launch();
      };
      if (m == Metric::kSSE) {
        launch(backward_kernel<Metric::kSSE, scalar_t, acc_t>);
      } else {
        launch(backward_kernel<Metric::kBCE, scalar_t, acc_t>);
      }
    });
  }
  if (grad_weight.defined()) {
    // d/d weight[n] = sum over k of grad[n, k] D[n, k], with D from the forward pass kept in
    // double as on the CPU (in a half dtype D would be rounded to 11 or 8 bits, or overflow).
    auto d = alloc({s.N, s.K}, dt::kDouble, base);
    distances_cuda(base, others, s, m, std::nullopt, d);
    copy_into(grad_weight, torch::stable::sum(mul(to_dtype(grad, dt::kDouble), d), std::vector<int64_t>{1}));
  }
}

}  // namespace vaeiso::distance
