// The SSIM CPU passes as each instruction-set build exports them (ssim_cpu_impl.h defines them,
// ssim_cpu.cpp dispatches on dtype and ISA). Images are raw storage S (float, double, f16,
// bf16) read through their strides (sx: N, C, H, W; so: N, K, C, H, W); maps, grad and the
// filter work in acc_t<S>; per-(image, channel) results come back as double means. No tensors
// and no checks here: those stay out of the ISA units.
#pragma once
#include <cstdint>

#include "cpu_half.h"
#include "ssim/ssim_entry.h"

#define VAEISO_SSIM_DECLARE_PASSES(ns)                                                                                \
  namespace ns {                                                                                                      \
  template <typename S>                                                                                               \
  void forward(const S* x, const int64_t* sx, const S* y, const int64_t* sy, const double* window, const Geometry& g, \
               Constants k, Terms terms, acc_t<S>* maps, double* one_minus, double* l1);                              \
  template <typename S>                                                                                               \
  void backward(const acc_t<S>* grad, const acc_t<S>* grad_l1, const S* x, const int64_t* sx, const S* y,             \
                const int64_t* sy, const acc_t<S>* maps, const double* window, const Geometry& g, S* grad_x,          \
                S* grad_y);                                                                                           \
  template <typename S>                                                                                               \
  void pairs(const S* base, const int64_t* sb, const S* others, const int64_t* so, int64_t K, const double* window,   \
             const Geometry& g, Constants k, double* mean);                                                           \
  template <typename T>                                                                                               \
  void filter(const T* src, T* dst, int64_t M, int64_t H, int64_t W, const double* window, int64_t ws, int64_t pad,   \
              bool transpose);                                                                                        \
  }
