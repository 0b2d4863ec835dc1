// The element-wise passes of GDN, one implementation per device (gdn_cpu.cpp, gdn_cuda.cu),
// both built on gdn_math.h. Buffers are dense in one of two layouts: channel-first (N, C, S)
// with `inner` = S, or channel-last (M, C) with `inner` = 1; channel of flat index i is
// (i / inner) % C. x, g, out use the input dtype; fx, norm, t, u, beta use the accumulation
// dtype (float for half types).
#pragma once
#include <ATen/core/Tensor.h>

namespace vaeiso::gdn {

struct Variant {
  bool inverse;
  bool simplified;
};

// fx = f(x)
void fx_cpu(const at::Tensor& x, at::Tensor& fx, Variant v);
// norm += beta[c]; out = x * scale(norm)
void forward_epilogue_cpu(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                          at::Tensor& out, int64_t C, int64_t inner, Variant v);
// t = g x dscale(norm); fx = f(x) when fx is defined
void backward_t_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    at::Tensor& t, at::Tensor& fx, Variant v);
// gx = g scale(norm) + df(x) u
void backward_x_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    const at::Tensor& u, at::Tensor& gx, Variant v);

#ifdef VAEISO_WITH_CUDA
void fx_cuda(const at::Tensor& x, at::Tensor& fx, Variant v);
void forward_epilogue_cuda(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                           at::Tensor& out, int64_t C, int64_t inner, Variant v);
void backward_t_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                     at::Tensor& t, at::Tensor& fx, Variant v);
void backward_x_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                     const at::Tensor& u, at::Tensor& gx, Variant v);
#endif

}  // namespace vaeiso::gdn
