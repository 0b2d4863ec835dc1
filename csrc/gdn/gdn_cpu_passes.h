// The GDN CPU passes as each instruction-set build exports them (gdn_cpu_impl.h defines them,
// gdn_cpu.cpp dispatches on dtype and ISA): raw dense buffers in one layout (gdn_kernels.h),
// S the storage type of x, g, out (float, double, f16, bf16) and A = acc_t<S> that of fx, norm,
// t, u, beta. No tensors and no checks here: those stay out of the ISA units.
#pragma once
#include <cstdint>

#include "cpu_half.h"
#include "gdn/gdn_kernels.h"

#define VAEISO_GDN_DECLARE_PASSES(ns)                                                             \
  namespace ns {                                                                                  \
  template <typename S>                                                                           \
  void fx(const S* x, acc_t<S>* fx, int64_t n, Variant v);                                        \
  template <typename S>                                                                           \
  void forward_epilogue(const S* x, acc_t<S>* norm, const acc_t<S>* beta, S* out, int64_t n,      \
                        int64_t C, int64_t inner, Variant v);                                     \
  template <typename S>                                                                           \
  void backward_t(const S* g, const S* x, const acc_t<S>* norm, acc_t<S>* t, acc_t<S>* fx,        \
                  int64_t n, Variant v);                                                          \
  template <typename S>                                                                           \
  void backward_x(const S* g, const S* x, const acc_t<S>* norm, const acc_t<S>* u, S* gx,         \
                  int64_t n, Variant v);                                                          \
  }
