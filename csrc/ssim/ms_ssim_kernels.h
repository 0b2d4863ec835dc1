// Per-channel SSIM passes for MS-SSIM and the fused SSIM + L1 loss (docs/ops.md, ms_ssim and ssim_l1_loss), one
// implementation per device (ms_ssim_cpu_impl.h, built into the SSIM CPU units; ms_ssim_cuda.cuh,
// built into ssim_cuda.cu), both on ssim_math.h / ms_ssim_math.h. ms_ssim.cpp checks and
// allocates; these only compute. Conventions as ssim_kernels.h, except that values and
// gradients are per (image, channel).
#pragma once
#include "ssim/ssim_kernels.h"

namespace vaeiso::ssim {

struct ChannelMode {
  bool cs_only;  // the contrast-structure term instead of SSIM
  bool with_l1;  // also the mean |y - x| per channel
};

// one_minus (N, C) dense: the mean over positions of 1 - v, v = cs or SSIM; l1 (N, C) dense (when
// mode.with_l1): the mean of |y - x| over pixels; maps (when not empty, (N, C, 4, Ho, Wo)):
// d(one_minus[n, c]) / d(moments) per position.
void channels_forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                          const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,
                          at::Tensor& l1, at::Tensor& maps);
// grad_x, grad_y (dense (N, C, H, W)) = sum over (n, c) of grad[n, c] d(one_minus[n, c]) +
// grad_l1[n, c] d(l1[n, c]); grad_l1 empty when there is no L1 term.
void channels_backward_cpu(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                           const at::Tensor& y, const at::Tensor& maps,
                           const std::vector<double>& window, const Geometry& g,
                           at::Tensor& grad_x, at::Tensor& grad_y);
#ifdef VAEISO_WITH_CUDA
void channels_forward_cuda(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                           const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,
                           at::Tensor& l1, at::Tensor& maps);
void channels_backward_cuda(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                            const at::Tensor& y, const at::Tensor& maps,
                            const std::vector<double>& window, const Geometry& g,
                            at::Tensor& grad_x, at::Tensor& grad_y);
#endif

// Defined in ssim.cpp, shared by the SSIM family's host code.
std::vector<double> gaussian_window(int64_t ws, double sigma);
void check_window(const char* op, int64_t ws, double sigma);
Constants check_constants(const char* op, double k1, double k2, double data_range);
void check_image(const char* op, const at::Tensor& x, const char* name, int64_t ws);
at::ScalarType check_pair(const char* op, const at::Tensor& y, const char* yname,
                          const at::Tensor& x, const char* xname, bool mixed);

}  // namespace vaeiso::ssim
