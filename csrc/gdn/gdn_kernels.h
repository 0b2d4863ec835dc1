// The GDN kernels of each device (gdn_cpu.cpp, gdn_cuda.cu), both built on gdn_math.h. Buffers are dense in one of two layouts: channel-first (N, C, S)
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

// CPU: the whole forward (out, and norm = beta + gamma f(x) unless norm is undefined) and backward (gx, gbeta, ggamma;
// each optional: undefined tensors are skipped), fused around the GEMMs (gdn_cpu_impl.h).
// gamma, beta, norm and the parameter gradients are dense in the accumulation dtype; `cl`
// says the layout of x, g, out, norm, gx.
void forward_cpu(const at::Tensor& x, const at::Tensor& beta, const at::Tensor& gamma,
                 at::Tensor& out, at::Tensor& norm, bool cl, Variant v);
void backward_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                  const at::Tensor& gamma, at::Tensor& gx, at::Tensor& gbeta, at::Tensor& ggamma,
                  bool cl, Variant v);

// CUDA: the element-wise passes around the cuBLAS GEMMs.
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
