// The per-channel SSIM CPU passes (MS-SSIM, SSIM + L1) as each instruction-set build exports them
// (ms_ssim_cpu_impl.h defines them, ms_ssim_cpu.cpp dispatches on dtype and ISA). Raw storage S
// (float or double) read through strides (N, C, H, W); per-(image, channel) means come back in
// double; maps and gradients are dense S. No tensors and no checks here (see ssim_cpu_passes.h).
#pragma once
#include <cstdint>

#include "ssim/ms_ssim_kernels.h"

#define VAEISO_MS_SSIM_DECLARE_PASSES(ns)                                                         \
  namespace ns {                                                                                  \
  template <typename S>                                                                           \
  void channels_forward(const S* x, const int64_t* sx, const S* y, const int64_t* sy,             \
                        const double* window, const Geometry& g, Constants k, ChannelMode mode,   \
                        double* one_minus, double* l1, S* maps);                                  \
  template <typename S>                                                                           \
  void channels_backward(const S* grad, const S* grad_l1, const S* x, const int64_t* sx,          \
                         const S* y, const int64_t* sy, const S* maps, const double* window,      \
                         const Geometry& g, S* grad_x, S* grad_y);                                \
  }
