// CUDA passes of the SSIM family, on the same ssim_math.h as the CPU passes.
//
// The per-(image, channel) forward and ssim_pairs: one block per (output tile, image plane).
// The block filters its tile with filter_tile (ssim_cuda_tile.cuh: horizontally into shared
// memory, vertically into registers), evaluates ssim_math.h, and reduces its sum in a fixed order
// into one partial per tile; a second kernel adds the partials per output in double, in a fixed
// order (deterministic: no atomics). The forward also sums |y - x| over the tile's own pixels
// for the fused L1 loss; ssim_pairs keeps the base statistics of the tile in registers and loops
// over the K others; ssim_filter (under ssim_metric_gram) runs on the same tile filter. The
// backward filters the derivative maps with the adjoint window (adjoint_tile: vertical pass into
// shared memory, horizontal pass in registers) and writes dense gradients; the filter's
// transpose runs on the same adjoint tile.
// float16/bfloat16 are read and written as such and computed in float.
#include "cuda_host.h"
#include <cuda_runtime.h>

#include "ssim/ssim_cuda_index.h"
#include "ssim/ssim_cuda_plan.h"
#include "ssim/ssim_cuda_tile.cuh"
#include "ssim/ssim_entry.h"
#include "ssim/ssim_math.h"
#include "tensor_strides.h"

namespace vaeiso::ssim {
namespace {

// Tile geometry and shared-memory planning live in ssim_cuda_plan.h (tested on the CPU). Large
// windows are staged `chunk` taps at a time (the kernels' `chunk` argument), so the shared
// memory stays within the device's limit for every window up to kMaxCudaWindow.
using namespace cuda_tile;

// ------------------------------------------------------------------------------- forward

// Per plane (image, channel): the sum of 1 - v (v = cs when CS, else SSIM) over the tile's
// positions into part_v, with with_l1 the sum of |y - x| over the tile's own pixels into
// part_l1, and the derivative maps when maps is not null.
template <bool CS, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, Strides<4> sx, Strides<4> sy,
                   Window<acc_t> win, Geometry g, int chunk, acc_t C1, acc_t C2, acc_t scale, bool with_l1,
                   acc_t* __restrict__ part_v, acc_t* __restrict__ part_l1, acc_t* __restrict__ maps) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* h = reinterpret_cast<acc_t*>(smem_raw);  // 5 x R x kTW: x, d, xx, dd, xd
  __shared__ acc_t red[kThreads / 32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o0 = int64_t(blockIdx.y) * kTH, j = int64_t(blockIdx.x) * kTW + tx;
  const int64_t tiles = int64_t(gridDim.x) * gridDim.y, tile = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t planes = g.N * g.C, P = g.Ho * g.Wo;
  // Pixels whose |d| this tile counts (ssim_cuda_index.h): every pixel by exactly one tile.
  const cuda_index::Span rows = cuda_index::l1_span(blockIdx.y, gridDim.y, kTH, g.H, g.pad);
  const cuda_index::Span cols = cuda_index::l1_span(blockIdx.x, gridDim.x, kTW, g.W, g.pad);
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / g.C, c = plane % g.C;
    const scalar_t* xp = x + n * sx.s[0] + c * sx.s[1];
    const scalar_t* yp = y + n * sy.s[0] + c * sy.s[1];
    acc_t v[kRowsPerThread][5];
    filter_tile<5>(win, g, chunk, o0, j, h, v, [&](int64_t ar, int64_t ac, acc_t wt, acc_t(&s)[5]) {
      const acc_t xv = ld<scalar_t, acc_t>(xp, ar * sx.s[2] + ac * sx.s[3]);
      const acc_t dv = ld<scalar_t, acc_t>(yp, ar * sy.s[2] + ac * sy.s[3]) - xv;
      s[0] += wt * xv;
      s[1] += wt * dv;
      s[2] += wt * xv * xv;
      s[3] += wt * dv * dv;
      s[4] += wt * xv * dv;
    });
    acc_t local = 0;
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int64_t oi = o0 + ty + ii * kBY;
      if (oi >= g.Ho || j >= g.Wo) continue;
      const Stats<acc_t> st = stats_from_moments(v[ii][0], v[ii][2], v[ii][1], v[ii][3], v[ii][4]);
      local += one_minus_value<CS>(st, C1, C2);
      if (maps != nullptr) {
        const Grad<acc_t> gr = value_grad<CS>(st, C1, C2, scale);
        acc_t* mp = maps + plane * 4 * P + oi * g.Wo + j;
        mp[0] = gr.mx;
        mp[P] = gr.my;
        mp[2 * P] = gr.s;
        mp[3 * P] = gr.xy;
      }
    }
    local = block_sum(local, red);
    if (tx == 0 && ty == 0) part_v[plane * tiles + tile] = local;
    if (with_l1) {
      acc_t l1 = 0;
      for (int64_t ar = rows.lo + ty; ar < rows.hi; ar += kBY) {
        for (int64_t ac = cols.lo + tx; ac < cols.hi; ac += kBX) {
          const acc_t xv = ld<scalar_t, acc_t>(xp, ar * sx.s[2] + ac * sx.s[3]);
          l1 += ::fabs(ld<scalar_t, acc_t>(yp, ar * sy.s[2] + ac * sy.s[3]) - xv);
        }
      }
      l1 = block_sum(l1, red);
      if (tx == 0 && ty == 0) part_l1[plane * tiles + tile] = l1;
    }
  }
}

// out[o] = inv * the sum of the `per` partials of output o, summed in double in a fixed order.
template <typename out_t, typename acc_t>
__global__ void __launch_bounds__(256)
    finish_kernel(const acc_t* __restrict__ partial, int64_t per, int64_t nout, double inv, out_t* __restrict__ out) {
  __shared__ double red[256];
  for (int64_t o = blockIdx.x; o < nout; o += gridDim.x) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < per; i += blockDim.x) s += static_cast<double>(partial[o * per + i]);
    red[threadIdx.x] = s;
    __syncthreads();
    for (int half = 128; half > 0; half >>= 1) {
      if (threadIdx.x < half) red[threadIdx.x] += red[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = static_cast<out_t>(red[0] * inv);
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------ backward

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const acc_t* __restrict__ grad, const acc_t* __restrict__ grad_l1, const scalar_t* __restrict__ x,
                    const scalar_t* __restrict__ y, Strides<4> sx, Strides<4> sy, const acc_t* __restrict__ maps,
                    Window<acc_t> win, Geometry g, int chunk, acc_t inv_hw, scalar_t* __restrict__ gx,
                    scalar_t* __restrict__ gy) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* V = reinterpret_cast<acc_t*>(smem_raw);  // 4 x kTH x (kTW + chunk - 1)
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t r0 = int64_t(blockIdx.y) * kTH, c0 = int64_t(blockIdx.x) * kTW;
  const int64_t planes = g.N * g.C, P = g.Ho * g.Wo;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / g.C, c = plane % g.C;
    const acc_t* mp = maps + plane * 4 * P;
    // G[ii][m]: the 4 derivative maps filtered with the adjoint window at this thread's pixels.
    acc_t G[kRowsPerThread][4];
    adjoint_tile<4>(win, g, chunk, r0, c0, V, G, [&](int64_t pr, int64_t pc, acc_t wt, acc_t(&s)[4]) {
      for (int m = 0; m < 4; ++m) s[m] += wt * mp[m * P + pr * g.Wo + pc];
    });
    // grad, grad_l1: (N, C) per plane; the L1 term's derivative is grad_l1 sign(y - x) / (H W).
    const acc_t gv = grad[plane];
    const acc_t gl = grad_l1 != nullptr ? grad_l1[plane] * inv_hw : acc_t(0);
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int i = ty + ii * kBY;
      const int64_t row = r0 + i, col = c0 + tx;
      if (row >= g.H || col >= g.W) continue;
      const acc_t* Gi = G[ii];
      const acc_t xv = ld<scalar_t, acc_t>(x, n * sx.s[0] + c * sx.s[1] + row * sx.s[2] + col * sx.s[3]);
      const acc_t yv = ld<scalar_t, acc_t>(y, n * sy.s[0] + c * sy.s[1] + row * sy.s[2] + col * sy.s[3]);
      const acc_t tl = gl * sign0(yv - xv);
      const int64_t o = (plane * g.H + row) * g.W + col;
      gx[o] = static_cast<scalar_t>(gv * (Gi[0] + acc_t(2) * xv * Gi[2] + yv * Gi[3]) - tl);
      gy[o] = static_cast<scalar_t>(gv * (Gi[1] + acc_t(2) * yv * Gi[2] + xv * Gi[3]) + tl);
    }
  }
}

// --------------------------------------------------------------------------------- pairs

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    pairs_kernel(const scalar_t* __restrict__ base, const scalar_t* __restrict__ others, Strides<4> sb, Strides<5> so,
                 Window<acc_t> win, Geometry g, int chunk, int64_t K, acc_t C1, acc_t C2, acc_t* __restrict__ partial) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* h = reinterpret_cast<acc_t*>(smem_raw);  // 3 x R x kTW
  __shared__ acc_t red[kThreads / 32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o0 = int64_t(blockIdx.y) * kTH, j = int64_t(blockIdx.x) * kTW + tx;
  const int64_t tiles = int64_t(gridDim.x) * gridDim.y, tile = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t planes = g.N * g.C;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / g.C, c = plane % g.C;
    const scalar_t* bp = base + n * sb.s[0] + c * sb.s[1];
    // Base statistics of this thread's output positions, once for all K.
    acc_t m[kRowsPerThread][2];
    filter_tile<2>(win, g, chunk, o0, j, h, m, [&](int64_t ar, int64_t ac, acc_t wt, acc_t(&s)[2]) {
      const acc_t xv = ld<scalar_t, acc_t>(bp, ar * sb.s[2] + ac * sb.s[3]);
      s[0] += wt * xv;
      s[1] += wt * xv * xv;
    });
    acc_t bmu[kRowsPerThread], bsxx[kRowsPerThread], bx1[kRowsPerThread], bx2[kRowsPerThread];
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      bmu[ii] = m[ii][0];
      bsxx[ii] = clamp0(m[ii][1] - m[ii][0] * m[ii][0]);
      bx1[ii] = m[ii][0] * m[ii][0] + C1;
      bx2[ii] = acc_t(2) * bsxx[ii] + C2;
    }
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* op = others + n * so.s[0] + k * so.s[1] + c * so.s[2];
      acc_t v[kRowsPerThread][3];
      filter_tile<3>(win, g, chunk, o0, j, h, v, [&](int64_t ar, int64_t ac, acc_t wt, acc_t(&s)[3]) {
        const acc_t xv = ld<scalar_t, acc_t>(bp, ar * sb.s[2] + ac * sb.s[3]);
        const acc_t dv = ld<scalar_t, acc_t>(op, ar * so.s[3] + ac * so.s[4]) - xv;
        s[0] += wt * dv;
        s[1] += wt * dv * dv;
        s[2] += wt * xv * dv;
      });
      acc_t local = 0;
      for (int ii = 0; ii < kRowsPerThread; ++ii) {
        const int i = ty + ii * kBY;
        if (o0 + i >= g.Ho || j >= g.Wo) continue;
        local += one_minus_ssim_pre(bmu[ii], bsxx[ii], bx1[ii], bx2[ii], v[ii][0], v[ii][1], v[ii][2], C1);
      }
      local = block_sum(local, red);
      if (tx == 0 && ty == 0) partial[((n * K + k) * g.C + c) * tiles + tile] = local;
    }
  }
}

// -------------------------------------------------------------------------------- filter

// Forward, on the tile staging of the SSIM pass: dst (M, Ho, Wo) from the dense planes src
// (M, H, W); g.N = M planes of one channel.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) filter_kernel(const scalar_t* __restrict__ src, Window<acc_t> win,
                                                          Geometry g, int chunk, scalar_t* __restrict__ dst) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* h = reinterpret_cast<acc_t*>(smem_raw);  // 1 x R x kTW
  const int ty = threadIdx.y;
  const int64_t o0 = int64_t(blockIdx.y) * kTH, j = int64_t(blockIdx.x) * kTW + threadIdx.x;
  for (int64_t plane = blockIdx.z; plane < g.N; plane += gridDim.z) {
    const scalar_t* sp = src + plane * g.H * g.W;
    acc_t v[kRowsPerThread][1];
    filter_tile<1>(win, g, chunk, o0, j, h, v, [&](int64_t ar, int64_t ac, acc_t wt, acc_t(&s)[1]) {
      s[0] += wt * ld<scalar_t, acc_t>(sp, ar * g.W + ac);
    });
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int64_t oi = o0 + ty + ii * kBY;
      if (oi < g.Ho && j < g.Wo) dst[(plane * g.Ho + oi) * g.Wo + j] = static_cast<scalar_t>(v[ii][0]);
    }
  }
}

// Transpose (the adjoint), on the adjoint tile of the backward: dst (M, H, W) from the dense
// positions src (M, Ho, Wo); g.N = M planes of one channel.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) filter_transpose_kernel(const scalar_t* __restrict__ src, Window<acc_t> win,
                                                                    Geometry g, int chunk, scalar_t* __restrict__ dst) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* V = reinterpret_cast<acc_t*>(smem_raw);  // 1 x kTH x (kTW + chunk - 1)
  const int ty = threadIdx.y;
  const int64_t r0 = int64_t(blockIdx.y) * kTH, c0 = int64_t(blockIdx.x) * kTW, col = c0 + threadIdx.x;
  for (int64_t plane = blockIdx.z; plane < g.N; plane += gridDim.z) {
    const scalar_t* sp = src + plane * g.Ho * g.Wo;
    acc_t G[kRowsPerThread][1];
    adjoint_tile<1>(win, g, chunk, r0, c0, V, G, [&](int64_t pr, int64_t pc, acc_t wt, acc_t(&s)[1]) {
      s[0] += wt * ld<scalar_t, acc_t>(sp, pr * g.Wo + pc);
    });
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int64_t row = r0 + ty + ii * kBY;
      if (row < g.H && col < g.W) dst[(plane * g.H + row) * g.W + col] = static_cast<scalar_t>(G[ii][0]);
    }
  }
}

// -------------------------------------------------------------------------------- pyramid pooling

// MS-SSIM's 2x2 average pooling (ssim_math.h, pool_at): one output pixel per thread, dense planes
// src (M, H, W) into dst (M, Ho, Wo). Memory-bound; a grid-stride loop over all of them.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(256)
    pool_kernel(const scalar_t* __restrict__ src, int64_t M, int64_t H, int64_t W, scalar_t* __restrict__ dst) {
  const int64_t Ho = pooled_size(H), Wo = pooled_size(W), n = M * Ho * Wo;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = k % Wo, i = (k / Wo) % Ho;
    const scalar_t* plane = src + (k / (Wo * Ho)) * H * W;
    const auto at = [&](int64_t r, int64_t c) { return ld<scalar_t, acc_t>(plane, r * W + c); };
    dst[k] = static_cast<scalar_t>(pool_at<acc_t>(at, H, W, i, j));
  }
}

// Its adjoint: one input pixel per thread, dst (M, H, W) from the pooled gradient src (M, Ho, Wo).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(256) pool_transpose_kernel(const scalar_t* __restrict__ src, int64_t M, int64_t H,
                                                             int64_t W, scalar_t* __restrict__ dst) {
  const int64_t Ho = pooled_size(H), Wo = pooled_size(W), n = M * H * W;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = k % W, r = (k / W) % H, p = k / (W * H);
    const acc_t g = ld<scalar_t, acc_t>(src, (p * Ho + pool_window_of(r, H)) * Wo + pool_window_of(c, W));
    dst[k] = static_cast<scalar_t>(pool_share<acc_t>(g));
  }
}

// ------------------------------------------------------------------------------- helpers

// The launch plan of a pass on the current device (ssim_cuda_plan.h), opting the kernel in to
// more than 48 KB of shared memory when the plan needs it. The opt-in is always the largest the
// device allows beside the kernel's static shared memory (as the runtime counts it), never this
// call's need: the attribute is the kernel's, shared by every host thread, and a thread that set
// it to a smaller need between another thread's set and launch would fail that launch. Every
// writer writes the same value.
template <typename acc_t, typename Kernel>
cuda_plan::Plan plan_launch(Kernel kernel, cuda_plan::Pass pass, int64_t ws, const char* op) {
  int dev = 0, max_bytes = 0;
  VAEISO_CUDA_CHECK(cudaGetDevice(&dev));
  VAEISO_CUDA_CHECK(cudaDeviceGetAttribute(&max_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const auto p = cuda_plan::plan(pass, ws, sizeof(acc_t), max_bytes);
  // Cannot happen on any device with >= 16 KB per block; kept as a clear error, not a bad launch.
  VAEISO_CHECK(p.chunk >= 1, op, ": this GPU's shared memory per block (", max_bytes,
               " bytes) is too small for the SSIM tile");
  if (p.opt_in) {
    cudaFuncAttributes attr{};
    VAEISO_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int64_t most = int64_t(max_bytes) - int64_t(attr.sharedSizeBytes);
    // The planner budgets p.static_bytes beside the tile (the resource gate checks the built
    // kernels against it); should the runtime count more, a clear error instead of a bad launch.
    VAEISO_CHECK(p.dynamic_bytes <= most, op, ": the SSIM tile needs ", p.dynamic_bytes,
                 " bytes of dynamic shared memory, this kernel may use ", most, " (static ", attr.sharedSizeBytes,
                 " of ", max_bytes, " bytes per block)");
    VAEISO_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(most)));
  }
  return p;
}

dim3 tile_grid(int64_t cols, int64_t rows, int64_t planes) {
  const int64_t gx = cuda_index::tiles_for(cols, kTW), gy = cuda_index::tiles_for(rows, kTH);
  VAEISO_CHECK(gx <= INT32_MAX && gy <= 65535, "ssim: image too large for the CUDA tiling (", rows, " x ", cols, ")");
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy),
              static_cast<unsigned>(std::min<int64_t>(planes, 65535)));
}

int blocks_for(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>((n + threads - 1) / threads, 1), 65535LL * 8));
}

}  // namespace

void forward_cuda(const Tensor& x, const Tensor& y, const std::vector<double>& window, const Geometry& g, Constants k,
                  Terms terms, Tensor& one_minus, Tensor& l1, Tensor& maps) {
  const auto stream = current_stream(x);
  const dim3 grid = tile_grid(g.Wo, g.Ho, g.N * g.C);
  const int64_t tiles = int64_t(grid.x) * grid.y, planes = g.N * g.C;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "ssim_forward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    const auto acc = std::is_same_v<acc_t, double> ? dt::kDouble : dt::kFloat;
    auto part_v = alloc({planes * tiles}, acc, x);
    auto part_l1 = alloc({terms.with_l1 ? planes * tiles : 0}, acc, x);
    auto kernel = terms.cs_only ? forward_kernel<true, scalar_t, acc_t> : forward_kernel<false, scalar_t, acc_t>;
    const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kForward, g.ws, "ssim_forward");
    const double inv = 1.0 / static_cast<double>(g.Ho * g.Wo);
    kernel<<<grid, dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
        cdata<scalar_t>(x), cdata<scalar_t>(y), strides_of<4>(x), strides_of<4>(y), make_window<acc_t>(window), g,
        static_cast<int>(p.chunk), static_cast<acc_t>(k.C1), static_cast<acc_t>(k.C2), static_cast<acc_t>(-inv),
        terms.with_l1, mdata<acc_t>(part_v), terms.with_l1 ? mdata<acc_t>(part_l1) : nullptr,
        maps.numel() > 0 ? mdata<acc_t>(maps) : nullptr);
    check_launch();
    finish_kernel<acc_t, acc_t><<<blocks_for(planes * 256, 256), 256, 0, stream>>>(cdata<acc_t>(part_v), tiles, planes,
                                                                                   inv, mdata<acc_t>(one_minus));
    check_launch();
    if (terms.with_l1) {
      finish_kernel<acc_t, acc_t><<<blocks_for(planes * 256, 256), 256, 0, stream>>>(
          cdata<acc_t>(part_l1), tiles, planes, 1.0 / static_cast<double>(g.H * g.W), mdata<acc_t>(l1));
      check_launch();
    }
  });
}

void backward_cuda(const Tensor& grad, const Tensor& grad_l1, const Tensor& x, const Tensor& y, const Tensor& maps,
                   const std::vector<double>& window, const Geometry& g, Tensor& grad_x, Tensor& grad_y) {
  const auto stream = current_stream(x);
  const dim3 grid = tile_grid(g.W, g.H, g.N * g.C);
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "ssim_backward_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    auto kernel = backward_kernel<scalar_t, acc_t>;
    const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kBackward, g.ws, "ssim_backward");
    kernel<<<grid, dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
        cdata<acc_t>(grad), grad_l1.numel() > 0 ? cdata<acc_t>(grad_l1) : nullptr, cdata<scalar_t>(x),
        cdata<scalar_t>(y), strides_of<4>(x), strides_of<4>(y), cdata<acc_t>(maps), make_window<acc_t>(window), g,
        static_cast<int>(p.chunk), static_cast<acc_t>(1.0 / static_cast<double>(g.H * g.W)), mdata<scalar_t>(grad_x),
        mdata<scalar_t>(grad_y));
    check_launch();
  });
}

void pairs_cuda(const Tensor& base, const Tensor& others, const std::vector<double>& window, const Geometry& g,
                Constants k, Tensor& out) {
  const auto stream = current_stream(base);
  const int64_t K = others.size(1);
  const dim3 grid = tile_grid(g.Wo, g.Ho, g.N * g.C);
  const int64_t tiles = int64_t(grid.x) * grid.y;
  VAEISO_DISPATCH_CUDA(base.scalar_type(), "ssim_pairs_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    auto partial = alloc({g.N * K * g.C * tiles}, std::is_same_v<acc_t, double> ? dt::kDouble : dt::kFloat, base);
    auto kernel = pairs_kernel<scalar_t, acc_t>;
    const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kPairs, g.ws, "ssim_pairs");
    kernel<<<grid, dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
        cdata<scalar_t>(base), cdata<scalar_t>(others), strides_of<4>(base), strides_of<5>(others),
        make_window<acc_t>(window), g, static_cast<int>(p.chunk), K, static_cast<acc_t>(k.C1), static_cast<acc_t>(k.C2),
        mdata<acc_t>(partial));
    check_launch();
    const double inv = 1.0 / static_cast<double>(g.C * g.Ho * g.Wo);
    finish_kernel<scalar_t, acc_t><<<blocks_for(g.N * K * 256, 256), 256, 0, stream>>>(
        cdata<acc_t>(partial), g.C * tiles, g.N * K, inv, mdata<scalar_t>(out));
    check_launch();
  });
}

void filter_cuda(const Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad, bool transpose,
                 Tensor& dst) {
  const auto stream = current_stream(src);
  const int64_t M = src.size(0);
  const Tensor& img = transpose ? dst : src;
  const Geometry g = make_geometry(M, 1, img.size(1), img.size(2), ws, pad > 0);
  VAEISO_DISPATCH_CUDA(src.scalar_type(), "ssim_filter_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    const auto win = make_window<acc_t>(window);
    if (!transpose) {
      auto kernel = filter_kernel<scalar_t, acc_t>;
      const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kFilter, ws, "ssim_filter");
      kernel<<<tile_grid(g.Wo, g.Ho, M), dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
          cdata<scalar_t>(src), win, g, static_cast<int>(p.chunk), mdata<scalar_t>(dst));
    } else {
      auto kernel = filter_transpose_kernel<scalar_t, acc_t>;
      const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kFilterTranspose, ws, "ssim_filter");
      kernel<<<tile_grid(g.W, g.H, M), dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
          cdata<scalar_t>(src), win, g, static_cast<int>(p.chunk), mdata<scalar_t>(dst));
    }
    check_launch();
  });
}

void pool_cuda(const Tensor& src, bool transpose, Tensor& dst) {
  const auto stream = current_stream(src);
  const Tensor& img = transpose ? dst : src;
  const int64_t M = src.size(0), H = img.size(1), W = img.size(2);
  VAEISO_DISPATCH_CUDA(src.scalar_type(), "ssim_pool_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    const int blocks = blocks_for(dst.numel(), 256);
    if (transpose)
      pool_transpose_kernel<scalar_t, acc_t>
          <<<blocks, 256, 0, stream>>>(cdata<scalar_t>(src), M, H, W, mdata<scalar_t>(dst));
    else
      pool_kernel<scalar_t, acc_t><<<blocks, 256, 0, stream>>>(cdata<scalar_t>(src), M, H, W, mdata<scalar_t>(dst));
    check_launch();
  });
}

}  // namespace vaeiso::ssim
