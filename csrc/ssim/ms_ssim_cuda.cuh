// CUDA passes of the per-channel SSIM statistics (ms_ssim_kernels.h). Included at the end of
// ssim_cuda.cu, so that they share its tiling, window and fixed-order block reduction: one block
// per (output tile, image plane) as in forward_kernel, one partial per (plane, tile) and a
// fixed-order sum per plane in double (deterministic, no atomics). Shared memory is planned as
// for forward_kernel / backward_kernel (ssim_cuda_plan.h: the forward stages the 5 moments, the
// backward the 4 maps, `chunk` window taps at a time), so every window up to kMaxCudaWindow runs. The half types
// never reach these kernels (vaeiso_ext/ops/_ms_ssim.py computes them in float32).
#include "ssim/ms_ssim_kernels.h"
#include "ssim/ms_ssim_math.h"

namespace vaeiso::ssim {
namespace {

template <bool CS, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    channel_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, Str4 sx,
                           Str4 sy, Window<acc_t> win, Geometry g, int chunk, acc_t C1, acc_t C2,
                           acc_t scale,
                           bool with_l1, acc_t* __restrict__ part_v, acc_t* __restrict__ part_l1,
                           acc_t* __restrict__ maps) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* h = reinterpret_cast<acc_t*>(smem_raw);  // 5 x R x kTW: x, d, xx, dd, xd
  __shared__ acc_t red[kThreads / 32];
  const int ws = static_cast<int>(g.ws), R = kTH + chunk - 1;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t o0 = int64_t(blockIdx.y) * kTH, j0 = int64_t(blockIdx.x) * kTW, j = j0 + tx;
  const int64_t tiles = int64_t(gridDim.x) * gridDim.y, tile = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t planes = g.N * g.C, P = g.Ho * g.Wo;
  // Pixels whose |d| this tile counts: its output rows and columns shifted by -pad, the edge
  // tiles extended to the image's edges, so every pixel is counted by exactly one tile.
  const int64_t r_lo = blockIdx.y == 0 ? 0 : o0 - g.pad;
  const int64_t r_hi = blockIdx.y + 1 == gridDim.y ? g.H : o0 + kTH - g.pad;
  const int64_t c_lo = blockIdx.x == 0 ? 0 : j0 - g.pad;
  const int64_t c_hi = blockIdx.x + 1 == gridDim.x ? g.W : j0 + kTW - g.pad;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / g.C, c = plane % g.C;
    const scalar_t* xp = x + n * sx.s[0] + c * sx.s[1];
    const scalar_t* yp = y + n * sy.s[0] + c * sy.s[1];
    // The window staged `chunk` taps at a time (ssim_cuda_plan.h), as forward_kernel does.
    acc_t v[kRowsPerThread][5] = {};
    for (int t0 = 0; t0 < ws; t0 += chunk) {
      const int taps = min(chunk, ws - t0), rows = kTH + taps - 1;
      for (int r = ty; r < rows; r += kBY) {
        acc_t s[5] = {0, 0, 0, 0, 0};
        const int64_t ar = o0 + t0 + r - g.pad;
        if (j < g.Wo && ar >= 0 && ar < g.H) {
          for (int t = 0; t < ws; ++t) {
            const int64_t ac = j + t - g.pad;
            if (ac < 0 || ac >= g.W) continue;
            const acc_t xv = ld<scalar_t, acc_t>(xp, ar * sx.s[2] + ac * sx.s[3]);
            const acc_t dv = ld<scalar_t, acc_t>(yp, ar * sy.s[2] + ac * sy.s[3]) - xv;
            const acc_t wt = win.w[t];
            s[0] += wt * xv;
            s[1] += wt * dv;
            s[2] += wt * xv * xv;
            s[3] += wt * dv * dv;
            s[4] += wt * xv * dv;
          }
        }
        for (int m = 0; m < 5; ++m) h[(m * R + r) * kTW + tx] = s[m];
      }
      __syncthreads();
      for (int ii = 0; ii < kRowsPerThread; ++ii) {
        const int i = ty + ii * kBY;
        for (int t = 0; t < taps; ++t) {
          const acc_t wt = win.w[t0 + t];
          for (int m = 0; m < 5; ++m) v[ii][m] += wt * h[(m * R + i + t) * kTW + tx];
        }
      }
      __syncthreads();  // h is refilled by the next chunk (or plane)
    }
    acc_t local = 0;
    for (int ii = 0; ii < kRowsPerThread; ++ii) {
      const int64_t oi = o0 + ty + ii * kBY;
      if (oi >= g.Ho || j >= g.Wo) continue;
      const Stats<acc_t> st = stats_from_moments(v[ii][0], v[ii][2], v[ii][1], v[ii][3], v[ii][4]);
      local += CS ? one_minus_cs(st, C2) : one_minus_ssim(st, C1, C2);
      if (maps != nullptr) {
        const Grad<acc_t> gr = CS ? cs_grad(st, C2, scale) : ssim_grad(st, C1, C2, scale);
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
      for (int64_t ar = r_lo + ty; ar < r_hi; ar += kBY) {
        for (int64_t ac = c_lo + tx; ac < c_hi; ac += kBX) {
          const acc_t xv = ld<scalar_t, acc_t>(xp, ar * sx.s[2] + ac * sx.s[3]);
          l1 += ::fabs(ld<scalar_t, acc_t>(yp, ar * sy.s[2] + ac * sy.s[3]) - xv);
        }
      }
      l1 = block_sum(l1, red);
      if (tx == 0 && ty == 0) part_l1[plane * tiles + tile] = l1;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    channel_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ grad_l1,
                            const scalar_t* __restrict__ x, const scalar_t* __restrict__ y, Str4 sx,
                            Str4 sy, const acc_t* __restrict__ maps, Window<acc_t> win, Geometry g,
                            int chunk, acc_t inv_hw, scalar_t* __restrict__ gx, scalar_t* __restrict__ gy) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* V = reinterpret_cast<acc_t*>(smem_raw);  // 4 x kTH x CW
  const int ws = static_cast<int>(g.ws), CW = kTW + chunk - 1;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kBX + tx;
  const int64_t r0 = int64_t(blockIdx.y) * kTH, c0 = int64_t(blockIdx.x) * kTW;
  const int64_t planes = g.N * g.C, P = g.Ho * g.Wo;
  for (int64_t plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const int64_t n = plane / g.C, c = plane % g.C;
    const acc_t* mp = maps + plane * 4 * P;
    // The adjoint window filter staged `chunk` taps at a time, as backward_kernel in ssim_cuda.cu.
    acc_t G[kRowsPerThread][4] = {};
    for (int t0 = 0; t0 < ws; t0 += chunk) {
      const int taps = min(chunk, ws - t0), cols = kTW + taps - 1, jlo = ws - t0 - taps;
      for (int idx = tid; idx < kTH * cols; idx += kThreads) {
        const int r = idx / cols, lc = idx % cols;
        const int64_t q = r0 + r + g.pad, pc = c0 + g.pad - (ws - 1) + jlo + lc;
        acc_t s[4] = {0, 0, 0, 0};
        if (pc >= 0 && pc < g.Wo && r0 + r < g.H) {
          for (int t = 0; t < ws; ++t) {
            const int64_t pr = q - t;
            if (pr < 0 || pr >= g.Ho) continue;
            const acc_t wt = win.w[t];
            for (int m = 0; m < 4; ++m) s[m] += wt * mp[m * P + pr * g.Wo + pc];
          }
        }
        for (int m = 0; m < 4; ++m) V[(m * kTH + r) * CW + lc] = s[m];
      }
      __syncthreads();
      for (int ii = 0; ii < kRowsPerThread; ++ii) {
        const int i = ty + ii * kBY;
        for (int t = t0; t < t0 + taps; ++t) {
          const acc_t wt = win.w[t];
          for (int m = 0; m < 4; ++m) G[ii][m] += wt * V[(m * kTH + i) * CW + tx + t0 + taps - 1 - t];
        }
      }
      __syncthreads();  // V is refilled by the next chunk (or plane)
    }
    const acc_t gv = static_cast<acc_t>(grad[plane]);
    const acc_t gl = grad_l1 != nullptr ? static_cast<acc_t>(grad_l1[plane]) * inv_hw : acc_t(0);
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

}  // namespace

void channels_forward_cuda(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                           const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,
                           at::Tensor& l1, at::Tensor& maps) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid = tile_grid(g.Wo, g.Ho, g.N * g.C);
  const int64_t tiles = int64_t(grid.x) * grid.y, planes = g.N * g.C;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_channels_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    auto part_v = at::empty({planes * tiles}, acc_opts);
    auto part_l1 = at::empty({mode.with_l1 ? planes * tiles : 0}, acc_opts);
    auto kernel = mode.cs_only ? channel_forward_kernel<true, scalar_t, acc_t>
                               : channel_forward_kernel<false, scalar_t, acc_t>;
    const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kForward, g.ws, "ssim_channels");
    const double inv = 1.0 / static_cast<double>(g.Ho * g.Wo);
    kernel<<<grid, dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), strides_of<4>(x), strides_of<4>(y),
        make_window<acc_t>(window), g, static_cast<int>(p.chunk), static_cast<acc_t>(k.C1), static_cast<acc_t>(k.C2),
        static_cast<acc_t>(-inv), mode.with_l1, part_v.mutable_data_ptr<acc_t>(),
        mode.with_l1 ? part_l1.mutable_data_ptr<acc_t>() : nullptr,
        maps.numel() > 0 ? maps.mutable_data_ptr<acc_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<scalar_t, acc_t><<<blocks_for(planes * 256, 256), 256, 0, stream>>>(
        part_v.const_data_ptr<acc_t>(), tiles, planes, inv, false, one_minus.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (mode.with_l1) {
      finish_kernel<scalar_t, acc_t><<<blocks_for(planes * 256, 256), 256, 0, stream>>>(
          part_l1.const_data_ptr<acc_t>(), tiles, planes, 1.0 / static_cast<double>(g.H * g.W), false,
          l1.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

void channels_backward_cuda(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                            const at::Tensor& y, const at::Tensor& maps,
                            const std::vector<double>& window, const Geometry& g,
                            at::Tensor& grad_x, at::Tensor& grad_y) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid = tile_grid(g.W, g.H, g.N * g.C);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_channels_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto kernel = channel_backward_kernel<scalar_t, acc_t>;
    const auto p = plan_launch<acc_t>(kernel, cuda_plan::Pass::kBackward, g.ws, "ssim_channels_backward");
    kernel<<<grid, dim3(kBX, kBY), p.dynamic_bytes, stream>>>(
        grad.const_data_ptr<scalar_t>(),
        grad_l1.numel() > 0 ? grad_l1.const_data_ptr<scalar_t>() : nullptr, x.const_data_ptr<scalar_t>(),
        y.const_data_ptr<scalar_t>(), strides_of<4>(x), strides_of<4>(y), maps.const_data_ptr<acc_t>(),
        make_window<acc_t>(window), g, static_cast<int>(p.chunk),
        static_cast<acc_t>(1.0 / static_cast<double>(g.H * g.W)),
        grad_x.mutable_data_ptr<scalar_t>(), grad_y.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace vaeiso::ssim
