// The CPU kernels' one SIMD layer: vector types, loads and stores, the shifted vectors of a
// sliding window, square roots, and the fixed-order reductions. Every intrinsic the SSIM,
// distance and GDN kernels use lives here; the kernels themselves are written with GCC vector
// extensions (`+`, `*`, contracted to FMA by the AVX2 and AVX-512 builds) on these types.
//
// Included by the per-ISA units only (they define VAEISO_CPU_ISA): everything below is in
// `vaeiso::simd::VAEISO_CPU_ISA` (an inline namespace, host_device.h), so each build's copy of
// an inline function has its own name and the linker never mixes them (docs/design.md).
#pragma once
#ifndef VAEISO_CPU_ISA
#error "cpu_simd.h is for the per-ISA units: define VAEISO_CPU_ISA before including it"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "host_device.h"

#if defined(__GNUC__)
#define VAEISO_AI __attribute__((always_inline)) inline
#else
#define VAEISO_AI inline
#endif

// 32-byte vectors in a build without AVX are lowered to two SSE registers; they never cross a
// non-inlined call between builds, so GCC's note that their ABI differs does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace vaeiso::simd {
VAEISO_ISA_BEGIN

// One native register: 64 bytes with AVX-512, 32 with AVX, 16 (SSE2 and most others) otherwise.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

// A vector of Bytes / sizeof(T) lanes of T (the native register unless Bytes says otherwise).
template <typename T, int Bytes = kVecBytes>
struct VecOf {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int64_t L = Bytes / static_cast<int>(sizeof(T));
};
template <typename T>
using Vec = VecOf<T>;

// Unaligned load and store through memcpy (one vector move once inlined).
template <typename V, typename T>
VAEISO_AI V loadu(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
VAEISO_AI void storeu(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
// Aligned load: p must be aligned to the vector's size.
template <typename V, typename T>
VAEISO_AI V load_aligned(const T* p) {
  return *reinterpret_cast<const V*>(__builtin_assume_aligned(p, sizeof(V)));
}

template <typename M>
VAEISO_AI bool all_lanes(M m) {
  for (int l = 0; l < static_cast<int>(sizeof(m) / sizeof(m[0])); ++l)
    if (!m[l]) return false;
  return true;
}

// --------------------------------------------------------------- sliding-window vectors

// Whether window_vec avoids the cache-line-splitting loads of a sliding window for T in this
// build: a 64-byte unaligned load crosses a line at every offset but 0 (a 32-byte one at half
// of them), and a filter of one unaligned load per tap ran at about one tap per cycle.
template <typename T>
constexpr bool kAlignedWindows = kVecBytes >= 32 && (std::is_same_v<T, float> || std::is_same_v<T, double>);

// The vector of the L values at p + t (t >= 0), given a[k] = the aligned vector at p + k L for
// k <= ceil(t / L). Where the build has the shuffles, a shift of two aligned vectors replaces the
// unaligned load for some taps (the shuffle port instead of the load ports), so the two kinds
// of work share the taps:
//  - AVX-512: odd shifts by valignd / valignq, even ones by unaligned loads;
//  - AVX2 float: the middle vector m (a[k]'s upper half, a[k + 1]'s lower, vperm2f128) gives
//    shift 4 itself and the odd shifts with one vpalignr each (it shifts within 128-bit lanes);
//    shifts 2 and 6 by unaligned loads;
//  - AVX2 double: m is shift 2, vshufpd of a[k] or a[k + 1] with m the odd ones.
// Otherwise an unaligned load.
template <int t, typename T>
VAEISO_AI typename Vec<T>::type window_vec(const T* p, const typename Vec<T>::type* a) {
  using V = typename Vec<T>::type;
  constexpr int L = static_cast<int>(Vec<T>::L), k = t / L, s = t % L;
  if constexpr (s == 0) {
    return a[k];
  } else if constexpr (!kAlignedWindows<T>) {
    return loadu<V>(p + t);
#if defined(__AVX512F__)
  } else if constexpr (s % 2 == 0) {
    return loadu<V>(p + t);
  } else if constexpr (std::is_same_v<T, float>) {
    return (V)_mm512_alignr_epi32((__m512i)a[k + 1], (__m512i)a[k], s);
  } else {
    return (V)_mm512_alignr_epi64((__m512i)a[k + 1], (__m512i)a[k], s);
  }
#elif defined(__AVX2__)
  } else if constexpr (std::is_same_v<T, float>) {
    if constexpr (s == 2 || s == 6) {
      return loadu<V>(p + t);
    } else {
      const __m256 m = _mm256_permute2f128_ps((__m256)a[k], (__m256)a[k + 1], 0x21);
      if constexpr (s == 4) return (V)m;
      if constexpr (s < 4) return (V)_mm256_alignr_epi8((__m256i)m, (__m256i)a[k], 4 * s);
      if constexpr (s > 4) return (V)_mm256_alignr_epi8((__m256i)a[k + 1], (__m256i)m, 4 * (s - 4));
    }
  } else {
    const __m256d m = _mm256_permute2f128_pd((__m256d)a[k], (__m256d)a[k + 1], 0x21);
    if constexpr (s == 2) return (V)m;
    if constexpr (s == 1) return (V)_mm256_shuffle_pd((__m256d)a[k], m, 5);
    if constexpr (s == 3) return (V)_mm256_shuffle_pd(m, (__m256d)a[k + 1], 5);
  }
#else
  } else {
    return loadu<V>(p + t);
  }
#endif
}

// ------------------------------------------------------------------------- square roots

// sqrt per lane (IEEE, correctly rounded).
template <typename V>
VAEISO_AI V vsqrt(V v) {
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32 && std::is_same_v<decltype(v[0] + 0), float>) return (V)_mm256_sqrt_ps((__m256)v);
  if constexpr (sizeof(V) == 32 && std::is_same_v<decltype(v[0] + 0), double>) return (V)_mm256_sqrt_pd((__m256d)v);
#endif
  V r;
  for (int l = 0; l < static_cast<int>(sizeof(V) / sizeof(v[0])); ++l) r[l] = std::sqrt(v[l]);
  return r;
}

// 1 / sqrt per lane. float in the AVX2 and AVX-512 builds: the hardware estimate (12 or 14 bits)
// and one Newton step, within 3 ulp of the exact quotient, at a fraction of a square root and a
// division (GDN's epilogue ran at the speed of those two); a vector with a lane outside the
// normal range (0, subnormal, inf, negative, NaN) takes the exact path, so those stay IEEE's.
// Otherwise 1 / sqrt exactly.
template <typename V>
VAEISO_AI V rsqrt(V v) {
  using T = decltype(v[0] + 0);
  if constexpr (std::is_same_v<T, float>) {
    constexpr T lo = std::numeric_limits<float>::min(), hi = std::numeric_limits<float>::max();
#if defined(__AVX512F__)
    if constexpr (sizeof(V) == 64) {
      const __m512 x = (__m512)v;
      const __mmask16 ok =
          _mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, _mm512_set1_ps(hi), _CMP_LE_OQ);
      const V y = (V)_mm512_rsqrt14_ps(x);
      if (ok == 0xffff) return y * (T(1.5) - (T(0.5) * v * y) * y);
    }
#endif
#if defined(__AVX2__)
    if constexpr (sizeof(V) == 32) {
      const __m256 x = (__m256)v;
      const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ),
                                      _mm256_cmp_ps(x, _mm256_set1_ps(hi), _CMP_LE_OQ));
      const V y = (V)_mm256_rsqrt_ps(x);
      if (_mm256_movemask_ps(ok) == 0xff) return y * (T(1.5) - (T(0.5) * v * y) * y);
    }
#endif
  }
  return T(1) / vsqrt(v);
}

// --------------------------------------------------------------------------- reductions

// sum_j p[j] (Diff: sum_j |q[j] - p[j]|) for j < n in a fixed order: lanes of 4 vector
// accumulators, then the lanes in order, then the tail. A plain `acc += p[j]` loop stays scalar
// (no reassociation without -ffast-math) and cost as much as the filtering around it.
template <bool Diff, typename T>
VAEISO_AI T lane_sum(const T* __restrict p, const T* __restrict q, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  auto term = [&](int64_t j) {
    V v = loadu<V>(p + j);
    if constexpr (Diff) {
      v = loadu<V>(q + j) - v;
      v = v < V{} ? -v : v;
    }
    return v;
  };
  V acc[4] = {V{}, V{}, V{}, V{}};
  int64_t j = 0;
  for (; j + 4 * L <= n; j += 4 * L)
    for (int i = 0; i < 4; ++i) acc[i] += term(j + i * L);
  for (; j + L <= n; j += L) acc[0] += term(j);
  const V t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  T out = T(0);
  for (int64_t i = 0; i < L; ++i) out += t[i];
  for (; j < n; ++j) out += Diff ? std::abs(q[j] - p[j]) : p[j];
  return out;
}

// r[p] = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) of the eight lanes of s[p], p = 0..7,
// bitwise: hadd adds lanes (0, 1), (2, 3), ... in that order, so the transposing reduction
// performs the same additions as the scalar tree.
VAEISO_AI void reduce8(const VecOf<float, 32>::type* s, float* r) {
#ifdef __AVX2__
  __m256 v[8];
  std::memcpy(v, s, sizeof(v));
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  const __m256 sum = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  _mm256_storeu_ps(r, sum);
#else
  for (int p = 0; p < 8; ++p) {
    const auto& x = s[p];
    r[p] = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
  }
#endif
}

VAEISO_ISA_END
}  // namespace vaeiso::simd
