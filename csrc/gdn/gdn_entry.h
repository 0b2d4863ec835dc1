// The GDN kernels of each device (gdn_cpu.cpp, gdn_cuda.cu), both built on gdn_math.h. Buffers are dense in one of two
// layouts: channel-first (N, C, S) with `inner` = S, or channel-last (M, C) with `inner` = 1; channel of flat index i
// is (i / inner) % C. x, g, out use the input dtype; fx, norm, t, u, beta use the accumulation dtype (float for half
// types).
#pragma once
#include "common.h"

namespace vaeiso::gdn {

struct Variant {
  bool inverse;
  bool simplified;
};

// CPU: the whole forward (out, and norm = beta + gamma f(x) unless norm is undefined) and backward (gx, gbeta, ggamma;
// each optional: undefined tensors are skipped), fused around the GEMMs (gdn_cpu_impl.h).
// gamma, beta, norm and the parameter gradients are dense in the accumulation dtype; `cl`
// says the layout of x, g, out, norm, gx.
void forward_cpu(const Tensor& x, const Tensor& beta, const Tensor& gamma, Tensor& out, Tensor& norm, bool cl,
                 Variant v);
void backward_cpu(const Tensor& g, const Tensor& x, const Tensor& norm, const Tensor& gamma, Tensor& gx, Tensor& gbeta,
                  Tensor& ggamma, bool cl, Variant v);

// CUDA: the element-wise passes around the cuBLAS GEMMs.
#ifdef VAEISO_WITH_CUDA
void fx_cuda(const Tensor& x, Tensor& fx, Variant v);
void forward_epilogue_cuda(const Tensor& x, Tensor& norm, const Tensor& beta, Tensor& out, int64_t C, int64_t inner,
                           Variant v);
void backward_t_cuda(const Tensor& g, const Tensor& x, const Tensor& norm, Tensor& t, Tensor& fx, Variant v);
void backward_x_cuda(const Tensor& g, const Tensor& x, const Tensor& norm, const Tensor& u, Tensor& gx, Variant v);

// The channel-mixing GEMMs in cuBLAS on torch's handle (gdn_cuda_gemm.cpp), full float32 (TF32
// off whatever torch's setting: gemm policy, docs/design.md). out = mix fx per position, mix =
// gamma (or gamma^T when `transposed`; gamma dense (C, C)); ggamma[i, k] = sum over positions of
// t_i fx_k. Dense buffers in the layout `cl` says, accumulation dtype.
void mix_channels_cuda(const Tensor& gamma, bool transposed, const Tensor& fx, Tensor& out, bool cl);
void gamma_grad_cuda(const Tensor& t, const Tensor& fx, Tensor& ggamma, bool cl);
#endif

}  // namespace vaeiso::gdn
