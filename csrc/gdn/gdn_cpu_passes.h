// The GDN CPU kernels as each instruction-set build exports them (gdn_cpu_impl.h defines them,
// gdn_cpu.cpp dispatches on dtype and ISA): raw dense buffers in one layout (gdn_entry.h),
// S the storage type of x, g, out, gx (float, double, f16, bf16) and A = acc_t<S> that of norm,
// beta, gamma and the parameter gradients. No tensors and no checks here: those stay out of the
// ISA units. Layout: N images of C channels by Sp positions (channel-first), or Sp positions of
// C channels (channel-last, N unused). Null pointers: outputs not wanted (norm, gx, gbeta,
// ggamma).
#pragma once
#include <cstdint>

#include "cpu_half.h"
#include "gdn/gdn_entry.h"

#define VAEISO_GDN_DECLARE_PASSES(ns)                                                                                 \
  namespace ns {                                                                                                      \
  template <typename S>                                                                                               \
  void forward(const S* x, const acc_t<S>* beta, const acc_t<S>* gamma, S* out, acc_t<S>* norm, int64_t N, int64_t C, \
               int64_t Sp, bool cl, Variant v);                                                                       \
  template <typename S>                                                                                               \
  void backward(const S* g, const S* x, const acc_t<S>* norm, const acc_t<S>* gamma, S* gx, acc_t<S>* gbeta,          \
                acc_t<S>* ggamma, int64_t N, int64_t C, int64_t Sp, bool cl, Variant v);                              \
  }
