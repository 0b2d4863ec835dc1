// CUDA element-wise passes of GDN (grid-stride loops, 64-bit indices, float accumulation for
// half types), built on the same gdn_math.h as the CPU passes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "gdn/gdn_kernels.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(b, 1), 65535LL * 8));
}

#define VAEISO_GRID_STRIDE(i, n)                                                     \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n);         \
       i += int64_t(blockDim.x) * gridDim.x)

template <typename scalar_t, typename acc_t>
__global__ void fx_kernel(const scalar_t* __restrict__ x, acc_t* __restrict__ fx, int64_t n,
                          Variant v) {
  VAEISO_GRID_STRIDE(i, n) { fx[i] = f(static_cast<acc_t>(x[i]), v.simplified); }
}

template <typename scalar_t, typename acc_t>
__global__ void epilogue_kernel(const scalar_t* __restrict__ x, acc_t* __restrict__ norm,
                                const acc_t* __restrict__ beta, scalar_t* __restrict__ out,
                                int64_t n, int64_t C, int64_t inner, Variant v) {
  VAEISO_GRID_STRIDE(i, n) {
    const acc_t nv = norm[i] + beta[(i / inner) % C];
    norm[i] = nv;
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * scale(nv, v.inverse, v.simplified));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_t_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                  const acc_t* __restrict__ norm, acc_t* __restrict__ t,
                                  acc_t* __restrict__ fx, int64_t n, Variant v) {
  VAEISO_GRID_STRIDE(i, n) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    t[i] = grad_norm(static_cast<acc_t>(g[i]), xv, norm[i], v.inverse, v.simplified);
    if (fx != nullptr) fx[i] = f(xv, v.simplified);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_x_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                  const acc_t* __restrict__ norm, const acc_t* __restrict__ u,
                                  scalar_t* __restrict__ gx, int64_t n, Variant v) {
  VAEISO_GRID_STRIDE(i, n) {
    gx[i] = static_cast<scalar_t>(grad_x(static_cast<acc_t>(g[i]), static_cast<acc_t>(x[i]),
                                         norm[i], u[i], v.inverse, v.simplified));
  }
}

}  // namespace

#define VAEISO_DISPATCH_CUDA(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void fx_cuda(const at::Tensor& x, at::Tensor& fx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_fx_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    fx_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), fx.mutable_data_ptr<acc_t>(), n, v);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void forward_epilogue_cuda(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                           at::Tensor& out, int64_t C, int64_t inner, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_forward_epilogue_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    epilogue_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.const_data_ptr<scalar_t>(), norm.mutable_data_ptr<acc_t>(),
            beta.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), n, C, inner, v);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_t_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                     at::Tensor& t, at::Tensor& fx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_backward_t_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_t_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            norm.const_data_ptr<acc_t>(), t.mutable_data_ptr<acc_t>(),
            fx.defined() ? fx.mutable_data_ptr<acc_t>() : nullptr, n, v);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_x_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                     const at::Tensor& u, at::Tensor& gx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_backward_x_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_x_kernel<scalar_t, acc_t>
        <<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            norm.const_data_ptr<acc_t>(), u.const_data_ptr<acc_t>(),
            gx.mutable_data_ptr<scalar_t>(), n, v);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace vaeiso::gdn
