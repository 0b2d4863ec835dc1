// The SSIM family's window filters (FIR) on one vector register type (cpu_simd.h): vertical
// FIRs over blocks of rows, and the horizontal FIR of one row read aligned. Part of the per-ISA
// build of ssim_cpu_impl.h.
#pragma once
#include <cstdint>
#include <utility>

#include "cpu_simd.h"
#include "ssim/ssim_math.h"  // opens vaeiso::ssim::VAEISO_CPU_ISA as the inline namespace it is

namespace vaeiso::ssim::VAEISO_CPU_ISA {

using simd::kAlignedWindows;
using simd::kVecBytes;
using simd::load_aligned;
using simd::loadu;
using simd::storeu;
using simd::Vec;
using simd::window_vec;

// Accumulators: FMA latency x issue rate is about 8 vector operations in flight, so the
// one-row FIR keeps 8 independent chains and the R-row FIRs R x G of them, as many as the
// registers hold (32 with AVX-512, 16 otherwise).
constexpr int kAccRegs = kVecBytes == 64 ? 20 : 10;
constexpr int kRowsR = 4;  // rows per block of the adjoint's vertical FIR (one map at a time)
constexpr int kRowG = kVecBytes == 64 ? 4 : 2;

// R output rows of G consecutive vectors from column j0: out[r * os + j] = sum_{t < nt} w[t]
// in[(r + t) * is + j]. Each input vector is loaded once for every output row it reaches, so a
// vertical FIR over R rows loads (nt + R - 1) / (nt R) vectors per FMA instead of one. A non-null
// pf has R rows (is apart) whose same columns are prefetched.
template <typename T, int R, int G>
VAEISO_AI void fir_group(const T* __restrict in, int64_t is, const T* __restrict w, int64_t nt, T* __restrict out,
                         int64_t os, int64_t j0, const T* pf = nullptr) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  if (pf != nullptr) {  // R rows (is apart) at this group's columns, for a later call
    constexpr int64_t kLines = (G * L * static_cast<int64_t>(sizeof(T)) + 63) / 64, kLine = 64 / sizeof(T);
    for (int r = 0; r < R; ++r)
      for (int64_t i = 0; i < kLines; ++i) __builtin_prefetch(pf + r * is + j0 + i * kLine);
  }
  V acc[R][G];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < G; ++i) acc[r][i] = V{};
  for (int64_t t = 0; t < nt + R - 1; ++t) {
    const T* row = in + t * is + j0;
    if (t >= R - 1 && t < nt) {  // every output row takes this input row
      T wk[R];
      for (int r = 0; r < R; ++r) wk[r] = w[t - r];
      for (int i = 0; i < G; ++i) {
        const V v = loadu<V>(row + i * L);
        for (int r = 0; r < R; ++r) acc[r][i] += wk[r] * v;
      }
    } else {  // the first and last R - 1 input rows reach only some output rows
      for (int i = 0; i < G; ++i) {
        const V v = loadu<V>(row + i * L);
        for (int r = 0; r < R; ++r) {
          const int64_t k = t - r;
          if (k >= 0 && k < nt) acc[r][i] += w[k] * v;
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < G; ++i) storeu(out + r * os + j0 + i * L, acc[r][i]);
}

// out[r * os + j] = sum_{t < nt} w[t] * in[(r + t) * is + j] for r < R, j < n (zero when nt <= 0).
// in and out must not overlap. Vectors in groups of G, then single ones; the last overlaps the
// previous one when n is not a multiple of the vector length.
template <typename T, int R, int G>
VAEISO_AI void fir_rows(const T* __restrict in, int64_t is, const T* __restrict w, int64_t nt, T* __restrict out,
                        int64_t os, int64_t n, const T* pf = nullptr) {
  constexpr int64_t L = Vec<T>::L;
  if (n < L) {
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < n; ++j) {
        T acc = T(0);
        for (int64_t t = 0; t < nt; ++t) acc += w[t] * in[(r + t) * is + j];
        out[r * os + j] = acc;
      }
    return;
  }
  int64_t j = 0;
  for (; j + G * L <= n; j += G * L) fir_group<T, R, G>(in, is, w, nt, out, os, j, pf);
  for (; j + L <= n; j += L) fir_group<T, R, 1>(in, is, w, nt, out, os, j, pf);
  if (j < n) fir_group<T, R, 1>(in, is, w, nt, out, os, n - L);
}

// One output row: out[j] = sum_{t < nt} w[t] * in[t * stride + j] for j < n.
template <typename T>
VAEISO_AI void fir(const T* __restrict in, int64_t stride, const T* __restrict w, int64_t nt, T* __restrict out,
                   int64_t n) {
  fir_rows<T, 1, 8>(in, stride, w, nt, out, 0, n);
}

// G output vectors of the horizontal NT-tap FIR from the aligned p: the aligned vectors the
// taps reach are loaded once, and each tap's shifted inputs come from them or from the load
// ports as window_vec chooses (no load that splits a cache line on most taps). With one
// unaligned load per tap, 10 of 11 loads split a line on AVX-512 and the loop ran at about one
// tap per cycle (perf: a third of each pass); this way 1.7x faster (256 wide).
template <int t, int G, typename T, typename V>
VAEISO_AI void fir_h_tap(const T* __restrict p, const V* a, T wt, V* acc) {
  constexpr int64_t L = Vec<T>::L;
  for (int i = 0; i < G; ++i) acc[i] += wt * window_vec<t>(p + i * L, a + i);
}

template <typename T, int G, int... t>
VAEISO_AI void fir_h_group(const T* __restrict p, const T* __restrict w, T* __restrict out,
                           std::integer_sequence<int, t...>) {
  using V = typename Vec<T>::type;
  constexpr int L = static_cast<int>(Vec<T>::L), NT = sizeof...(t);
  constexpr int K = G + (NT - 1 + L - 1) / L;  // aligned vectors the taps reach
  V a[K], acc[G];
  for (int k = 0; k < K; ++k) a[k] = load_aligned<V>(p + k * L);
  for (int i = 0; i < G; ++i) acc[i] = V{};
  (fir_h_tap<t, G>(p, a, w[t], acc), ...);
  for (int i = 0; i < G; ++i) storeu(out + i * L, acc[i]);
}

template <typename T, int NT>
inline void fir_h_row(const T* __restrict in, const T* __restrict w, T* __restrict out, int64_t n) {
  constexpr int64_t L = Vec<T>::L;
  // Output vectors per group: their accumulators, the aligned vectors and the shifted ones within
  // the registers (32 with AVX-512; 16 with AVX2, where groups of 4 spilled and ran slower than
  // one unaligned load per tap, groups of 2 faster: an interleaved microbenchmark, to be timed
  // on a quiet machine).
  constexpr int G = kVecBytes == 64 ? 8 : 2;
  using Taps = std::make_integer_sequence<int, NT>;
  int64_t j = 0;
  for (; j + G * L <= n; j += G * L) fir_h_group<T, G>(in + j, w, out + j, Taps{});
  for (; j + L <= n; j += L) fir_h_group<T, 1>(in + j, w, out + j, Taps{});
  if (j < n) fir_group<T, 1, 1>(in, 1, w, NT, out, 0, n - L);  // overlaps the previous vector
}

// One row of the horizontal FIR, out[j] = sum_{t < nt} w[t] in[j + t] for j < n, from a 64-byte
// aligned row readable up to one vector past in[n + nt - 1]. The windows the ops use (odd, 7 to
// 15 taps) take the aligned path where the build has one; the rest the generic FIR.
template <typename T>
VAEISO_AI void fir_h(const T* __restrict in, const T* __restrict w, int64_t nt, T* __restrict out, int64_t n) {
  if constexpr (kAlignedWindows<T>) {
    if (n >= Vec<T>::L) {
      switch (nt) {
        case 11:
          return fir_h_row<T, 11>(in, w, out, n);  // the SSIM window
        case 7:
          return fir_h_row<T, 7>(in, w, out, n);
        case 9:
          return fir_h_row<T, 9>(in, w, out, n);
        case 13:
          return fir_h_row<T, 13>(in, w, out, n);
        case 15:
          return fir_h_row<T, 15>(in, w, out, n);
        default:
          break;
      }
    }
  }
  fir(in, 1, w, nt, out, n);
}

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
