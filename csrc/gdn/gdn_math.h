// Per-element GDN math shared by the CPU and CUDA kernels (docs/ops.md, gdn):
//   norm_i = beta_i + sum_j gamma[i, j] f(x_j),   y_i = x_i * scale(norm_i)
// f(x) = x^2 (|x| simplified); scale = 1/sqrt, sqrt (inverse), 1/norm, norm (simplified).
// The channel mixing is a GEMM done by the vendor BLAS; everything else is these functions.
#pragma once
#include "host_device.h"

#ifndef __CUDACC__
#include <cmath>
#endif

namespace vaeiso::gdn {
VAEISO_ISA_BEGIN

template <typename T>
VAEISO_HD T vsqrt(T v) {
#ifdef __CUDA_ARCH__
  return ::sqrt(v);
#else
  return std::sqrt(v);
#endif
}

template <typename T>
VAEISO_HD T f(T x, bool simplified) {
  return simplified ? (x < T(0) ? -x : x) : x * x;
}

// d f / d x; at x = 0 the |x| branch gives 0 (torch.abs's convention); NaN stays NaN.
template <typename T>
VAEISO_HD T df(T x, bool simplified) {
  if (!simplified) return T(2) * x;
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x * T(0));
}

template <typename T>
VAEISO_HD T scale(T norm, bool inverse, bool simplified) {
  if (simplified) return inverse ? norm : T(1) / norm;
  const T s = vsqrt(norm);
  return inverse ? s : T(1) / s;
}

// d scale / d norm
template <typename T>
VAEISO_HD T dscale(T norm, bool inverse, bool simplified) {
  if (simplified) return inverse ? T(1) : T(-1) / (norm * norm);
  const T s = vsqrt(norm);
  return inverse ? T(0.5) / s : T(-0.5) / (norm * s);
}

// Backward, per element with g = dL/dy: the part of dL/dx that does not go through the
// GEMM, and t = dL/dnorm (which feeds dbeta = sum t, dgamma = t f(x)^T, and gamma^T t).
template <typename T>
VAEISO_HD T grad_norm(T g, T x, T norm, bool inverse, bool simplified) {
  return g * x * dscale(norm, inverse, simplified);
}

template <typename T>
VAEISO_HD T grad_x(T g, T x, T norm, T u, bool inverse, bool simplified) {
  return g * scale(norm, inverse, simplified) + df(x, simplified) * u;
}

VAEISO_ISA_END
}  // namespace vaeiso::gdn
