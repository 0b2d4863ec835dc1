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

// The backward's scale and d scale / d norm from one square root and one division (r = 1/sqrt n:
// GDN s = r, ds = -r^3/2; IGDN s = n r, ds = r/2; simplified s = 1/n, ds = -s^2, or s = n, ds = 1).
template <typename T>
struct Scales {
  T s, ds;
};

template <typename T>
VAEISO_HD Scales<T> scales(T norm, bool inverse, bool simplified) {
  if (simplified) {
    if (inverse) return {norm, T(1)};
    const T s = T(1) / norm;
    return {s, -s * s};
  }
  const T r = T(1) / vsqrt(norm);
  if (inverse) return {norm * r, T(0.5) * r};
  return {r, T(-0.5) * r * r * r};
}

// Backward, per element with g = dL/dy: t = dL/dnorm (which feeds dbeta = sum t,
// dgamma = t f(x)^T, and u = gamma^T t), then dL/dx = g s + f'(x) u. Both kernels compute s in
// each of the two passes (a buffer of it cost the CPU more memory traffic than the square root).
template <typename T>
VAEISO_HD T grad_norm(T g, T x, T norm, bool inverse, bool simplified) {
  return g * x * scales(norm, inverse, simplified).ds;
}

template <typename T>
VAEISO_HD T grad_x_s(T g, T x, T s, T u, bool simplified) {
  return g * s + df(x, simplified) * u;
}

template <typename T>
VAEISO_HD T grad_x(T g, T x, T norm, T u, bool inverse, bool simplified) {
  return grad_x_s(g, x, scales(norm, inverse, simplified).s, u, simplified);
}

VAEISO_ISA_END
}  // namespace vaeiso::gdn
