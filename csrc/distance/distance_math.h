// Per-element terms of the pair distances (docs/ops.md, pair_distances), shared by the CPU and CUDA kernels.
// D(b, o) = sum over elements of term(b, o); b is the base (the target), o the other.
//   sse: (o - b)^2
//   bce: the Bernoulli KL  b log(b/o) + (1-b) log((1-b)/(1-o)), evaluated without cancellation.
#pragma once
#include "host_device.h"

#ifndef __CUDACC__
#include <cmath>
#endif

namespace vaeiso::distance {

// Outside the per-ISA namespace: the dispatcher and the ISA units share these types.
enum class Metric : int { kSSE = 0, kBCE = 1 };
// The per-sample factor of the paper's convex metrics (App. D), computed from the base in the
// kernel: none, a_x (metric "downward": a_x ||x - y||^2) or 1 / a_x ("upward").
enum class Scale : int { kNone = 0, kDownward = 1, kUpward = 2 };

VAEISO_ISA_BEGIN

template <typename T>
VAEISO_HD T vlog(T v) {
#ifdef __CUDA_ARCH__
  return ::log(v);
#else
  return std::log(v);
#endif
}

// The series forms below also take a CPU SIMD vector T (GCC vector extension) with element
// type E: constants are written as E, never as T, and comparisons give a lane mask there.
template <typename T, typename E = T>
VAEISO_HD T vabs(T v) {
  return v < E(0) ? -v : v;
}

// |t| below this uses the series form of log1p(t) - t; above it the direct form loses at most
// ~3 bits (relative error ~ 2 eps / |t|).
constexpr double kSmallT = 0.25;

// 1/3 + w/5 + w^2/7 + ...: the atanh series tail. |u| <= 1/7 below kSmallT, so w = u^2 <= 0.0205
// and 5 terms reach float precision, 10 reach double.
template <typename T, typename E = T>
VAEISO_HD T atanh_tail(T w) {
  T s;
  if constexpr (sizeof(E) >= 8) {
    s = E(1) / E(19) + w * (E(1) / E(21));
    s = E(1) / E(17) + w * s;
    s = E(1) / E(15) + w * s;
    s = E(1) / E(13) + w * s;
    s = E(1) / E(11) + w * s;
    s = E(1) / E(9) + w * s;
    s = E(1) / E(7) + w * s;
    s = E(1) / E(5) + w * s;
    s = E(1) / E(3) + w * s;
  } else {
    s = E(1) / E(9) + w * (E(1) / E(11));
    s = E(1) / E(7) + w * s;
    s = E(1) / E(5) + w * s;
    s = E(1) / E(3) + w * s;
  }
  return s;
}

// One half of the Bernoulli KL: p log(p / q) + (q - p), with weight p >= 0 and p, q the
// probabilities of the same outcome under the target and the other; d = q - p is passed in,
// computed from the inputs directly (for the second half, 1 - o minus 1 - b would carry the
// rounding of both complements). It equals -p g(t) with g(t) = log1p(t) - t, t = d / p.
// For |t| < kSmallT, with u = t / (2 + t) = d / (p + q): log1p(t) = 2 atanh(u) =
// 2 (u + u^3/3 + ...) and t - 2u = t u, so -p g(t) = d u - 2 p u^3 (1/3 + u^2/5 + ...): no
// cancellation (the second term is at most ~4% of the first) and one division.
// When p == 0 the log term is 0 (the xlogy convention: binary targets give no NaN) and d is
// what remains.
template <typename T, typename E = T>
VAEISO_HD auto kl_half_is_small(T p, T d) {
  return vabs<T, E>(d) < E(kSmallT) * p;  // false for p == 0 and for NaN
}

// The series branch alone, branch-free (valid where kl_half_is_small): the CPU kernel evaluates
// it for a whole vector of elements and falls back to kl_half only where it does not apply.
template <typename T, typename E = T>
VAEISO_HD T kl_half_series(T p, T q, T d) {
  const T u = d / (p + q);
  const T w = u * u;
  return d * u - E(2) * p * u * w * atanh_tail<T, E>(w);
}

template <typename T>
VAEISO_HD T kl_half(T p, T q, T d) {
  if (p == T(0)) return d;
  if (kl_half_is_small(p, d)) return kl_half_series(p, q, d);
  return p * vlog(p / q) + d;
}

template <typename T>
VAEISO_HD T bce_term(T b, T o) {
  // The first-order terms (o - b) and (b - o) of the two halves cancel exactly, so adding
  // them to each half changes nothing and keeps each half non-negative and cancellation-free.
  return kl_half(b, o, o - b) + kl_half(T(1) - b, T(1) - o, b - o);
}

template <typename T>
VAEISO_HD T sse_term(T b, T o) {
  const T d = o - b;
  return d * d;
}

template <Metric M, typename T>
VAEISO_HD T term(T b, T o) {
  if constexpr (M == Metric::kSSE) {
    return sse_term(b, o);
  } else {
    return bce_term(b, o);
  }
}

// ---- derivatives (the fused backward, docs/ops.md, pair_distances) ----
//   sse: dD/do = 2 (o - b), dD/db = -dD/do.
//   bce: dD/do = (1-b)/(1-o) - b/o = (o - b) / (o (1 - o)),
//        dD/db = log(b/o) - log((1-b)/(1-o)) = log(b (1 - o) / (o (1 - b))) = log1p(x),
//        x = (b - o) / (o (1 - b)).
// The combined forms have no cancellation for o near b; where a weight b or 1 - b (or o,
// 1 - o) is 0 they fall back to the two-ratio forms in the value's zero-weight convention
// (a term with weight 0 is its linear remainder: dD/db contributes -1, a 0/0 ratio is 0), as
// the eager formulas of vaeiso_ext/ops/_distance.py do.

template <typename T>
VAEISO_HD T safe_ratio(T num, T den) {
  return (num == T(0) && den == T(0)) ? T(0) : num / den;
}

template <typename T>
VAEISO_HD T log_ratio(T p, T q) {
  return p == T(0) ? T(-1) : vlog(p) - vlog(q);
}

// Whether the series forms below apply: |x| < kSmallT with x as above. It implies
// 0 < o < 1 and b < 1 (so every denominator is positive); false for NaN.
template <typename T, typename E = T>
VAEISO_HD auto bce_grad_is_small(T b, T o) {
  return vabs<T, E>(b - o) < E(kSmallT) * (o * (E(1) - b));
}

// dD/do where bce_grad_is_small (branch-free: the CPU kernel evaluates it for a whole vector).
template <typename T, typename E = T>
VAEISO_HD T bce_grad_other_series(T b, T o) {
  return (o - b) / (o * (E(1) - o));
}

// dD/db where bce_grad_is_small: log1p(x) = 2 atanh(u) with u = x / (2 + x)
// = (b - o) / (b (1 - o) + o (1 - b)), |u| < 1/7 (the atanh series of kl_half_series).
template <typename T, typename E = T>
VAEISO_HD T bce_grad_base_series(T b, T o) {
  const T u = (b - o) / (b * (E(1) - o) + o * (E(1) - b));
  const T w = u * u;
  return E(2) * u + E(2) * u * w * atanh_tail<T, E>(w);
}

template <typename T>
VAEISO_HD T bce_grad_other(T b, T o) {
  if (bce_grad_is_small(b, o)) return bce_grad_other_series(b, o);
  const T den = o * (T(1) - o);
  if (den != T(0)) return (o - b) / den;
  return safe_ratio(T(1) - b, T(1) - o) - safe_ratio(b, o);
}

template <typename T>
VAEISO_HD T bce_grad_base(T b, T o) {
  if (bce_grad_is_small(b, o)) return bce_grad_base_series(b, o);
  const T bc = T(1) - b;
  if (b != T(0) && bc != T(0)) return vlog((b * (T(1) - o)) / (o * bc));  // products: no 1 + x rounding
  return log_ratio(b, o) - log_ratio(bc, T(1) - o);
}

// ---- the convex metrics' factor (App. D) ----
// a_x = 2/3 + 2 ||x||^2 / 21 from the base's squared norm s (downward), or its inverse (upward);
// its derivative is slope * x, slope = 4/21 (downward) or -(4/21) a^2 (upward, a = 1 / a_x).

template <typename T>
VAEISO_HD T scale_of(T sq_norm, Scale sc) {
  const T a = T(2) / T(3) + T(2) * sq_norm / T(21);
  return sc == Scale::kUpward ? T(1) / a : a;
}

template <typename T>
VAEISO_HD T scale_slope(T a, Scale sc) {
  return sc == Scale::kUpward ? -T(4) / T(21) * a * a : T(4) / T(21);
}

VAEISO_ISA_END
}  // namespace vaeiso::distance
