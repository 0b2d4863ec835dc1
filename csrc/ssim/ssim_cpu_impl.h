// CPU passes of the SSIM family. Work is split into tasks of (image, channel, strip of rows);
// each task runs the one strip pipeline (strip_pass: the rows of x and y the strip's windows
// reach staged once; then, a block of output rows at a time, the windowed moments formed in
// registers and filtered vertically, each input vector feeding every output row of the block,
// then horizontally) and evaluates ssim_math.h per position. The per-(image, channel) forward
// (1 - SSIM or 1 - cs, optional L1), ssim_pairs and ssim_filter all run on it; the backward
// filters the derivative maps with the adjoint window the same way, vertically in blocks of rows.
// Per-task sums land in a fixed slot and are added in a fixed order, so results do not depend
// on the thread count.
//
// Compiled once per instruction set (ssim_cpu_{default,avx2,avx512}.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); ssim_cpu.cpp dispatches on dtype and picks one at run time.
// The FIR loops use GCC vector extensions of one native register. Images of a half type (storage
// S) are converted to float (T = acc_t<S>) as their rows are gathered; gradients are rounded to S
// once on store.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including ssim_cpu_impl.h"
#endif
#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu_half.h"
#include "cpu_workspace.h"
#include "ssim/ssim_cpu_passes.h"
#include "ssim/ssim_math.h"

#if defined(__GNUC__)
#define VAEISO_AI __attribute__((always_inline)) inline
#else
#define VAEISO_AI inline
#endif

namespace vaeiso::ssim {
VAEISO_SSIM_DECLARE_PASSES(VAEISO_CPU_ISA)
}

// No anonymous namespace: the whole file is private to its ISA build through VAEISO_CPU_ISA,
// and the task lambdas below capture these argument structs.
namespace vaeiso::ssim::VAEISO_CPU_ISA {

// One native register: 64 bytes with AVX-512, 32 with AVX, 16 (SSE2 and most others) otherwise.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int64_t L = kVecBytes / sizeof(T);
};

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
VAEISO_AI void fir_group(const T* __restrict in, int64_t is, const T* __restrict w, int64_t nt,
                         T* __restrict out, int64_t os, int64_t j0, const T* pf = nullptr) {
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
        V v;
        std::memcpy(&v, row + i * L, sizeof(V));
        for (int r = 0; r < R; ++r) acc[r][i] += wk[r] * v;
      }
    } else {  // the first and last R - 1 input rows reach only some output rows
      for (int i = 0; i < G; ++i) {
        V v;
        std::memcpy(&v, row + i * L, sizeof(V));
        for (int r = 0; r < R; ++r) {
          const int64_t k = t - r;
          if (k >= 0 && k < nt) acc[r][i] += w[k] * v;
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < G; ++i) std::memcpy(out + r * os + j0 + i * L, &acc[r][i], sizeof(V));
}

// out[r * os + j] = sum_{t < nt} w[t] * in[(r + t) * is + j] for r < R, j < n (zero when nt <= 0).
// in and out must not overlap. Vectors in groups of G, then single ones; the last overlaps the
// previous one when n is not a multiple of the vector length.
template <typename T, int R, int G>
VAEISO_AI void fir_rows(const T* __restrict in, int64_t is, const T* __restrict w, int64_t nt,
                        T* __restrict out, int64_t os, int64_t n, const T* pf = nullptr) {
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
VAEISO_AI void fir(const T* __restrict in, int64_t stride, const T* __restrict w, int64_t nt,
                   T* __restrict out, int64_t n) {
  fir_rows<T, 1, 8>(in, stride, w, nt, out, 0, n);
}

#if defined(__AVX512F__)
// The horizontal FIR of an NT-tap window in float, from a 64-byte aligned row (readable one
// vector past the last output's window). With every tap an unaligned load, 10 of 11 loads split
// a cache line and the loop ran at about one tap per cycle (perf: a third of each pass). Here
// the odd taps' shifted inputs come from two aligned vectors by valignd (the shuffle port) and
// the even ones from unaligned loads (the load ports): 1.7x faster (microbenchmark, 256 wide).
template <int G, int t>
VAEISO_AI void fir_h_tap(const float* __restrict p, const __m512* a, float wt, __m512* acc) {
  const __m512 wv = _mm512_set1_ps(wt);
  for (int i = 0; i < G; ++i) {
    __m512 v;
    if constexpr (t == 0) {
      v = a[i];
    } else if constexpr (t % 2 == 1) {
      v = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(a[i + 1]), _mm512_castps_si512(a[i]), t));
    } else {
      v = _mm512_loadu_ps(p + i * 16 + t);
    }
    acc[i] = _mm512_fmadd_ps(wv, v, acc[i]);
  }
}

template <int G, int... t>
VAEISO_AI void fir_h_group(const float* __restrict p, const float* __restrict w, float* __restrict out,
                           std::integer_sequence<int, t...>) {
  __m512 a[G + 1], acc[G];
  for (int i = 0; i <= G; ++i) a[i] = _mm512_load_ps(p + i * 16);
  for (int i = 0; i < G; ++i) acc[i] = _mm512_setzero_ps();
  (fir_h_tap<G, t>(p, a, w[t], acc), ...);
  for (int i = 0; i < G; ++i) _mm512_storeu_ps(out + i * 16, acc[i]);
}

template <int NT>
inline void fir_h_row(const float* __restrict in, const float* __restrict w, float* __restrict out, int64_t n) {
  static_assert(NT <= 16, "valignd shifts by less than one vector");
  using Taps = std::make_integer_sequence<int, NT>;
  int64_t j = 0;
  for (; j + 8 * 16 <= n; j += 8 * 16) fir_h_group<8>(in + j, w, out + j, Taps{});
  for (; j + 16 <= n; j += 16) fir_h_group<1>(in + j, w, out + j, Taps{});
  if (j < n) fir_group<float, 1, 1>(in, 1, w, NT, out, 0, n - 16);  // overlaps the previous vector
}
#endif

// One row of the horizontal FIR, out[j] = sum_{t < nt} w[t] in[j + t] for j < n, from a 64-byte
// aligned row readable up to one vector past in[n + nt - 1].
template <typename T>
VAEISO_AI void fir_h(const T* __restrict in, const T* __restrict w, int64_t nt, T* __restrict out, int64_t n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    if (n >= 16) {
      switch (nt) {
        case 11: return fir_h_row<11>(in, w, out, n);  // the SSIM window
        case 7: return fir_h_row<7>(in, w, out, n);
        case 9: return fir_h_row<9>(in, w, out, n);
        case 13: return fir_h_row<13>(in, w, out, n);
        case 15: return fir_h_row<15>(in, w, out, n);
        default: break;
      }
    }
  }
#endif
  fir(in, 1, w, nt, out, n);
}

// sum_j p[j] (Diff: sum_j |q[j] - p[j]|) for j < n in a fixed order: lanes of 4 vector
// accumulators, then the lanes in order, then the tail. A plain `acc += p[j]` loop stays scalar
// (no reassociation without -ffast-math) and cost as much as the filtering around it.
template <bool Diff, typename T>
VAEISO_AI T lane_sum(const T* __restrict p, const T* __restrict q, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  auto term = [&](int64_t j) {
    V v;
    std::memcpy(&v, p + j, sizeof(V));
    if constexpr (Diff) {
      V u;
      std::memcpy(&u, q + j, sizeof(V));
      v = u - v;
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

template <typename T>
VAEISO_AI T row_sum(const T* p, int64_t n) {
  return lane_sum<false>(p, p, n);
}

template <typename T>
VAEISO_AI T abs_diff_sum(const T* x, const T* y, int64_t n) {
  return lane_sum<true>(x, y, n);
}

// n elements of a strided row of storage type S into dst, converted to the compute type T.
template <typename S, typename T>
VAEISO_AI void gather_row(const S* src, int64_t stride, int64_t n, T* dst) {
  if constexpr (std::is_same_v<S, T>) {
    if (stride == 1) {
      std::memcpy(dst, src, n * sizeof(T));
      return;
    }
  }
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src[j * stride]);
  }
}

template <typename T>
VAEISO_AI void zero(T* p, int64_t n) {
  for (int64_t j = 0; j < n; ++j) p[j] = T(0);
}

// ------------------------------------------------------------------- the strip pipeline

// The windowed moments a pass filters, as bits of a mask; their planes come in this order.
// x is the base image, d = y - x the difference (ssim_math.h).
enum : unsigned { kX = 1, kD = 2, kXX = 4, kDD = 8, kXD = 16, kAll = 31 };

template <unsigned M>
constexpr int kPlanes = std::popcount(M);
// Output rows per block of the moments FIR, and vectors per group: R x G x planes accumulators.
template <unsigned M>
constexpr int kMomR = std::min(4, std::max(1, kAccRegs / kPlanes<M>));
template <unsigned M>
constexpr int kMomG = std::max(1, kAccRegs / (kPlanes<M> * kMomR<M>));

// Rows of the strip buffers: W values at `lead` (64-byte aligned, so the vertical FIR's loads and
// stores are aligned), zero margins of at least pad on each side, `stride` apart; filtered rows
// of Wo values `vs` apart.
struct Layout {
  int64_t lead, stride, vs;
};

template <typename T>
Layout layout_of(const Geometry& g) {
  constexpr int64_t A = 64 / sizeof(T);
  auto up = [](int64_t v) { return (v + A - 1) / A * A; };
  const int64_t lead = up(g.pad);
  return Layout{lead, up(lead + g.W + g.pad), up(g.Wo)};
}

// p rounded up to 64 bytes (strip_scratch asks for the slack).
template <typename T>
T* aligned_up(T* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<T*>((u + 63) / 64 * 64);
}

template <unsigned M>
constexpr bool kNeedsY = (M & (kD | kDD | kXD)) != 0;

// The moments in M of one x and y (vectors or scalars), in plane order, into p.
template <unsigned M, typename V>
VAEISO_AI void form_moments(V x, V y, V* p) {
  const V d = y - x;
  int q = 0;
  if constexpr ((M & kX) != 0) p[q++] = x;
  if constexpr ((M & kD) != 0) p[q++] = d;
  if constexpr ((M & kXX) != 0) p[q++] = x * x;
  if constexpr ((M & kDD) != 0) p[q++] = d * d;
  if constexpr ((M & kXD) != 0) p[q++] = x * d;
}

// R output rows of G consecutive vectors from column j0 of every moment in M, from the staged
// rows of x (xs) and y (ys), `is` apart: out[m * ps + r * rs + j] = sum_{t < nt} w[t] mom_m(row
// r + t, j). The products are formed in registers, once per input vector for all R rows.
template <unsigned M, int R, int G, typename T>
VAEISO_AI void moments_group(const T* __restrict xs, const T* __restrict ys, int64_t is, const T* __restrict w,
                             int64_t nt, T* __restrict out, int64_t ps, int64_t rs, int64_t j0) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  constexpr int NM = kPlanes<M>;
  V acc[NM][R][G];
  for (int m = 0; m < NM; ++m)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < G; ++i) acc[m][r][i] = V{};
  for (int64_t t = 0; t < nt + R - 1; ++t) {
    T wk[R];
    bool on[R];
    for (int r = 0; r < R; ++r) {
      const int64_t k = t - r;
      on[r] = k >= 0 && k < nt;
      wk[r] = on[r] ? w[k] : T(0);
    }
    const bool full = t >= R - 1 && t < nt;  // every output row takes this input row
    for (int i = 0; i < G; ++i) {
      V x, y = V{};
      std::memcpy(&x, xs + t * is + j0 + i * L, sizeof(V));
      if constexpr (kNeedsY<M>) std::memcpy(&y, ys + t * is + j0 + i * L, sizeof(V));
      V p[NM];
      form_moments<M>(x, y, p);
      for (int r = 0; r < R; ++r) {
        if (!full && !on[r]) continue;
        for (int m = 0; m < NM; ++m) acc[m][r][i] += wk[r] * p[m];
      }
    }
  }
  for (int m = 0; m < NM; ++m)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < G; ++i) std::memcpy(out + m * ps + r * rs + j0 + i * L, &acc[m][r][i], sizeof(V));
}

// moments_group over columns [0, n): groups of G vectors, then single ones, the last overlapping
// the previous when n is not a multiple of the vector length.
template <unsigned M, int R, int G, typename T>
VAEISO_AI void moments_rows(const T* xs, const T* ys, int64_t is, const T* w, int64_t nt, T* out, int64_t ps,
                            int64_t rs, int64_t n) {
  constexpr int64_t L = Vec<T>::L;
  if (n < L) {  // narrower than one vector: scalar
    constexpr int NM = kPlanes<M>;
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < n; ++j) {
        T acc[NM] = {};
        for (int64_t t = 0; t < nt; ++t) {
          T p[NM];
          form_moments<M>(xs[(r + t) * is + j], kNeedsY<M> ? ys[(r + t) * is + j] : T(0), p);
          for (int m = 0; m < NM; ++m) acc[m] += w[t] * p[m];
        }
        for (int m = 0; m < NM; ++m) out[m * ps + r * rs + j] = acc[m];
      }
    return;
  }
  int64_t j = 0;
  for (; j + G * L <= n; j += G * L) moments_group<M, R, G>(xs, ys, is, w, nt, out, ps, rs, j);
  for (; j + L <= n; j += L) moments_group<M, R, 1>(xs, ys, is, w, nt, out, ps, rs, j);
  if (j < n) moments_group<M, R, 1>(xs, ys, is, w, nt, out, ps, rs, n - L);
}

// Output rows i .. i + R - 1 of a strip: the moments M of the staged x and y planes (s: 2 x
// srows rows; r0 the strip row the window of row i starts at) filtered vertically into vb
// (planes x R rows, margins zero), then each row horizontally into v (planes x vs) for emit.
template <unsigned M, int R, typename T, typename Emit>
VAEISO_AI void strip_out_rows(const Geometry& g, const Layout& lay, const T* w, const T* s, int64_t srows,
                              int64_t r0, T* vb, T* v, int64_t i, Emit& emit) {
  constexpr int NM = kPlanes<M>;
  const int64_t st = lay.stride;
  const T* xs = s + r0 * st + lay.lead;
  // vb rows hold W values at column pad, so that the horizontal pass reads aligned rows
  moments_rows<M, R, kMomG<M>>(xs, xs + srows * st, st, w, g.ws, vb + g.pad, R * st, st, g.W);
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < NM; ++m) fir_h(vb + (m * R + r) * st, w, g.ws, v + m * lay.vs, g.Wo);
    emit(i + r, static_cast<const T*>(v));
  }
}

// The strip pipeline, vertical pass first. For output rows [o0, o1) of one plane: every image
// row the strip's windows reach is staged once, just before it is first needed, by
// `stage(ar, r, xrow, yrow)` (image row ar, strip row r; W values each, inside margins that stay
// zero) into s (x then y: 2 x srows rows); rows outside the image are zero (the "same" padding). Then a block of output rows at a time, the
// moments M are formed and filtered (strip_out_rows) and handed to `emit(i, v)`: v holds one
// filtered row per moment, lay.vs apart. Staging is the only work repeated where strips overlap.
// s and vb (kPlanes<M> x kMomR<M> rows) must come zeroed: only the interiors are written.
template <unsigned M, typename T, typename Stage, typename Emit>
VAEISO_AI void strip_pass(const Geometry& g, const Layout& lay, const T* w, int64_t o0, int64_t o1,
                          int64_t srows, T* s, T* vb, T* v, Stage&& stage, Emit&& emit) {
  // Rows are staged just before the first block that needs them, so that reading the images
  // overlaps the filtering (staged all at once, the strip's reads stalled on memory first).
  int64_t staged = 0;
  auto stage_to = [&](int64_t upto) {
    for (; staged < upto; ++staged) {
      const int64_t r = staged, ar = o0 + r - g.pad;
      T* xrow = s + r * lay.stride + lay.lead;
      T* yrow = xrow + srows * lay.stride;
      if (ar < 0 || ar >= g.H) {
        zero(xrow, g.W);
        zero(yrow, g.W);
      } else {
        stage(ar, r, xrow, yrow);
      }
    }
  };
  constexpr int R = kMomR<M>;
  int64_t i = o0;
  for (; i + R <= o1; i += R) {
    stage_to(i - o0 + g.ws - 1 + R);
    strip_out_rows<M, R>(g, lay, w, s, srows, i - o0, vb, v, i, emit);
  }
  for (; i < o1; ++i) {
    stage_to(i - o0 + g.ws);
    strip_out_rows<M, 1>(g, lay, w, s, srows, i - o0, vb, v, i, emit);
  }
}

// Scratch of strip_pass (s, vb, v) for strips of th output rows, with the alignment slack.
template <typename T>
int64_t strip_scratch(const Geometry& g, int64_t th) {
  const Layout lay = layout_of<T>(g);
  return 2 * (th + g.ws - 1) * lay.stride + 5 * 4 * lay.stride + 5 * lay.vs + 64 / sizeof(T);
}

// Rows per strip: the strip's staged x and y stay in about 128 KB (L2); small batches are cut
// into more strips so that both cores get work. Shape-only, so the summation order never
// depends on the thread count.
template <typename T>
int64_t strip_rows(const Geometry& g, int64_t planes) {
  const int64_t per_row = 2 * layout_of<T>(g).stride * static_cast<int64_t>(sizeof(T));
  int64_t th = std::max<int64_t>(8, (128 * 1024) / per_row - (g.ws - 1));
  if (planes < 8) {
    const int64_t want = (8 + planes - 1) / planes;
    th = std::min(th, std::max<int64_t>(8, (g.Ho + want - 1) / want));
  }
  return std::max<int64_t>(1, std::min(th, g.Ho));
}

template <typename T>
std::vector<T> cast_window(const double* w, int64_t ws, bool flip) {
  std::vector<T> out(ws);
  for (int64_t i = 0; i < ws; ++i) out[i] = static_cast<T>(flip ? w[ws - 1 - i] : w[i]);
  return out;
}

// 1 - v (into om) and the derivative maps of one output row from its five moment rows v (x, d,
// xx, dd, xd; vs apart).
template <bool CS, typename T>
VAEISO_AI void value_grad_row(const T* __restrict v, int64_t vs, int64_t Wo, T C1, T C2, T scale, T* __restrict om,
                              T* __restrict m0, T* __restrict m1, T* __restrict m2, T* __restrict m3) {
  const T *mx = v, *md = v + vs, *exx = v + 2 * vs, *edd = v + 3 * vs, *exd = v + 4 * vs;
  for (int64_t j = 0; j < Wo; ++j) {
    const Stats<T> st = stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]);
    om[j] = one_minus_value<CS>(st, C1, C2);
    const Grad<T> gr = value_grad<CS>(st, C1, C2, scale);
    m0[j] = gr.mx;
    m1[j] = gr.my;
    m2[j] = gr.s;
    m3[j] = gr.xy;
  }
}

// Gradient rows from the adjoint-filtered maps G (mx, my, s, xy; W values, gs apart), ssim_math.h Grad,
// weighted by gn, plus gl * sign(y - x) for the L1 term (L1: gl = grad_l1 / (H W)).
template <bool L1, typename S, typename T>
VAEISO_AI void combine_row(const T* __restrict G, int64_t gs, const T* __restrict xr, const T* __restrict yr,
                           T gn, T gl, int64_t W, S* __restrict ox, S* __restrict oy) {
  const T *Gmx = G, *Gmy = G + gs, *Gs = G + 2 * gs, *Gxy = G + 3 * gs;
  for (int64_t j = 0; j < W; ++j) {
    T gx = gn * (Gmx[j] + T(2) * xr[j] * Gs[j] + yr[j] * Gxy[j]);
    T gy = gn * (Gmy[j] + T(2) * yr[j] * Gs[j] + xr[j] * Gxy[j]);
    if constexpr (L1) {
      const T t = gl * sign0(yr[j] - xr[j]);
      gx -= t;
      gy += t;
    }
    ox[j] = store<S>(gx);
    oy[j] = store<S>(gy);
  }
}

// ------------------------------------------------------------------------------- forward

template <typename S, typename T = acc_t<S>>
struct FwdArgs {
  const S* x;
  const S* y;
  int64_t sx[4], sy[4];
  const T* w;
  Geometry g;
  int64_t th, nstrips;
  T C1, C2, scale;
  bool with_l1;
  double* part_v;   // [N * C * nstrips]: sum of 1 - v over the task's positions
  double* part_l1;  // [N * C * nstrips]: sum of |y - x| over the task's own image rows
  T* maps;          // nullptr when no backward is needed
};

template <typename T>
int64_t forward_scratch(const Geometry& g, int64_t th) {
  return strip_scratch<T>(g, th) + layout_of<T>(g).vs;
}

template <bool CS, typename S, typename T>
VAEISO_AI void forward_tasks(const FwdArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const Layout lay = layout_of<T>(g);
  const int64_t pad = g.pad, Wo = g.Wo, vs = lay.vs, srows = a.th + g.ws - 1;
  const int64_t P = g.Ho * Wo;
  T* s = aligned_up(scratch);            // staged x, y: 2 x srows rows
  T* vb = s + 2 * srows * lay.stride;    // 5 x kMomR rows
  T* v = vb + 5 * 4 * lay.stride;        // 5 x vs
  T* lrow = v + 5 * vs;                  // Wo
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t st = task % a.nstrips, nc = task / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t o0 = st * a.th, o1 = std::min(g.Ho, o0 + a.th);
    // Image rows whose |d| this strip counts: [o0 - pad, o1 - pad), the first and last strips
    // extended to the image's edges, so every row is counted by exactly one strip.
    const int64_t l1_lo = st == 0 ? 0 : o0 - pad, l1_hi = st + 1 == a.nstrips ? g.H : o1 - pad;
    const S* xp = a.x + n * a.sx[0] + c * a.sx[1];
    const S* yp = a.y + n * a.sy[0] + c * a.sy[1];
    double acc = 0, l1 = 0;
    auto stage = [&](int64_t ar, int64_t, T* xrow, T* yrow) {
      gather_row(xp + ar * a.sx[2], a.sx[3], g.W, xrow);
      gather_row(yp + ar * a.sy[2], a.sy[3], g.W, yrow);
      if (a.with_l1 && ar >= l1_lo && ar < l1_hi) l1 += static_cast<double>(abs_diff_sum(xrow, yrow, g.W));
    };
    auto emit = [&](int64_t i, const T* vv) {
      const T *mx = vv, *md = vv + vs, *exx = vv + 2 * vs, *edd = vv + 3 * vs, *exd = vv + 4 * vs;
      if (a.maps != nullptr) {  // the value and the maps from one evaluation of the statistics
        T* m0 = a.maps + nc * 4 * P + i * Wo;
        value_grad_row<CS>(vv, vs, Wo, a.C1, a.C2, a.scale, lrow, m0, m0 + P, m0 + 2 * P, m0 + 3 * P);
      } else {
        for (int64_t j = 0; j < Wo; ++j)
          lrow[j] = one_minus_value<CS>(stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]), a.C1, a.C2);
      }
      acc += static_cast<double>(row_sum(lrow, Wo));
    };
    strip_pass<kAll>(g, lay, a.w, o0, o1, srows, s, vb, v, stage, emit);
    a.part_v[task] = acc;
    a.part_l1[task] = l1;
  }
}


// ------------------------------------------------------------------------------ backward

template <typename S, typename T = acc_t<S>>
struct BwdArgs {
  const T* grad;     // (N, C) dense
  const T* grad_l1;  // (N, C) dense, or nullptr
  const S* x;
  const S* y;
  int64_t sx[4], sy[4];
  const T* maps;  // (N, C, 4, Ho, Wo) dense
  const T* wf;    // flipped window: the adjoint of the filter is a filter with wf
  Geometry g;
  int64_t tr, nstrips;
  T inv_hw;
  S* gx;
  S* gy;
};

// Rows of the adjoint's vertical results: Wo values at `lead` = ws - 1 - pad inside zero margins,
// `stride` apart (64-byte multiples). Image column c takes row columns c .. c + ws - 1, so the
// horizontal pass reads aligned rows; one vector of slack past them (fir_h).
template <typename T>
Layout adjoint_layout(const Geometry& g) {
  constexpr int64_t A = 64 / sizeof(T);
  auto up = [](int64_t v) { return (v + A - 1) / A * A; };
  return Layout{g.ws - 1 - g.pad, up(g.W + g.ws - 1) + A, 0};
}

// vpad: 4 x kRowsR adjoint rows (margins zero); G: 4 x kRowsR rows of W; x and y rows; slack.
template <typename T>
int64_t backward_scratch(const Geometry& g) {
  return 4 * kRowsR * adjoint_layout<T>(g).stride + 4 * kRowsR * g.W + 2 * g.W + 64 / sizeof(T);
}

// One image row r of the adjoint filter applied to `nmaps` position maps at mp (plane stride P):
// G[m][col] = sum over positions p of w(p -> (r, col)) map_m[p], written to G + m * W.
template <typename T>
VAEISO_AI void adjoint_row(const T* mp, int64_t P, int nmaps, const T* wf, const Geometry& g,
                           int64_t r, T* vpad, T* G) {
  const Layout lay = adjoint_layout<T>(g);
  const int64_t ws = g.ws, Wo = g.Wo;
  const int64_t q = r + g.pad, lo = q - ws + 1;  // map rows lo .. q reach padded row q
  const int64_t t0 = std::max<int64_t>(0, -lo), t1 = std::min<int64_t>(ws, g.Ho - lo);
  for (int m = 0; m < nmaps; ++m) {
    T* vm = vpad + m * lay.stride;
    fir(mp + m * P + (lo + t0) * Wo, Wo, wf + t0, t1 - t0, vm + lay.lead, Wo);
    fir_h(vm, wf, ws, G + m * g.W, g.W);
  }
}

// Image rows r .. r + R - 1 at once, where every window lies inside the maps
// (adjoint_interior): map m of row r + k lands at G + (m * R + k) * W.
template <int R, typename T>
VAEISO_AI void adjoint_rows(const T* mp, int64_t P, const T* wf, const Geometry& g, int64_t r, T* vpad, T* G) {
  const Layout lay = adjoint_layout<T>(g);
  const int64_t ws = g.ws, Wo = g.Wo, lv = lay.stride, lo = r + g.pad - ws + 1;
  // While filtering, each column group prefetches its part of the R map rows the block two
  // ahead newly reaches: the block reads 4 x (ws + R - 1) rows, too many streams for the
  // hardware prefetchers, and its loads stalled on memory (perf). Prefetching all those rows at
  // once per block stalled on the fill buffers instead; spread over the groups, the backward
  // ran 5-15% faster than either at N=4 and 16 3x256x256 and N=4 3x512x768 (interleaved A/B).
  const int64_t q = lo + ws - 1 + 2 * R;
  const bool pf = q + R <= g.Ho;
  for (int m = 0; m < 4; ++m)
    fir_rows<T, R, kRowG>(mp + m * P + lo * Wo, Wo, wf, ws, vpad + m * R * lv + lay.lead, lv, Wo,
                          pf ? mp + m * P + q * Wo : nullptr);
  for (int k = 0; k < 4 * R; ++k) fir_h(vpad + k * lv, wf, ws, G + k * g.W, g.W);
}

// Whether image rows r .. r + R - 1 see full windows of map rows (no clipping at the top or
// bottom of the maps).
inline bool adjoint_interior(const Geometry& g, int64_t r, int64_t R) {
  return r + g.pad - g.ws + 1 >= 0 && r + R - 1 + g.pad < g.Ho;
}

template <bool L1, typename S, typename T>
VAEISO_AI void backward_tasks(const BwdArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t W = g.W, P = g.Ho * g.Wo;
  T* vpad = aligned_up(scratch);
  T* G = vpad + 4 * kRowsR * adjoint_layout<T>(g).stride;
  T* xr = G + 4 * kRowsR * W;
  T* yr = xr + W;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t s = task % a.nstrips, nc = task / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t r0 = s * a.tr, r1 = std::min(g.H, r0 + a.tr);
    const T* mp = a.maps + nc * 4 * P;
    const T gn = a.grad[nc];
    const T gl = L1 ? a.grad_l1[nc] * a.inv_hw : T(0);
    // Image row r from G (its four adjoint maps gs apart); x and y read in place when their
    // rows are dense rows of T, else gathered.
    auto finish = [&](int64_t r, const T* Gr, int64_t gs) {
      const S* xs = a.x + n * a.sx[0] + c * a.sx[1] + r * a.sx[2];
      const S* ys = a.y + n * a.sy[0] + c * a.sy[1] + r * a.sy[2];
      const T* xp = xr;
      const T* yp = yr;
      if constexpr (std::is_same_v<S, T>) {
        if (a.sx[3] == 1) xp = xs; else gather_row(xs, a.sx[3], W, xr);
        if (a.sy[3] == 1) yp = ys; else gather_row(ys, a.sy[3], W, yr);
      } else {
        gather_row(xs, a.sx[3], W, xr);
        gather_row(ys, a.sy[3], W, yr);
      }
      S* ox = a.gx + (nc * g.H + r) * W;
      S* oy = a.gy + (nc * g.H + r) * W;
      combine_row<L1>(Gr, gs, xp, yp, gn, gl, W, ox, oy);
    };
    for (int64_t r = r0; r < r1;) {
      if (r + kRowsR <= r1 && adjoint_interior(g, r, kRowsR)) {
        adjoint_rows<kRowsR>(mp, P, a.wf, g, r, vpad, G);
        for (int k = 0; k < kRowsR; ++k) finish(r + k, G + k * W, kRowsR * W);
        r += kRowsR;
      } else {
        adjoint_row(mp, P, 4, a.wf, g, r, vpad, G);
        finish(r, G, W);
        ++r;
      }
    }
  }
}


// --------------------------------------------------------------------------------- pairs

template <typename S, typename T = acc_t<S>>
struct PairArgs {
  const S* base;
  const S* others;
  int64_t sb[4], so[5];
  const T* w;
  Geometry g;
  int64_t K, th, nstrips, kchunk, nkc;
  T C1, C2;
  double* partial;  // [N * C * nstrips][K]
};

template <typename T>
int64_t pairs_scratch(const Geometry& g, int64_t th) {
  return 4 * th * g.Wo + strip_scratch<T>(g, th) + layout_of<T>(g).vs;
}

template <typename S, typename T>
VAEISO_AI void pairs_tasks(const PairArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const Layout lay = layout_of<T>(g);
  const int64_t Wo = g.Wo, W = g.W, vs = lay.vs, srows = a.th + g.ws - 1;
  T* bst = scratch;                      // 4 x th x Wo: mu_x, s_xx, mu_x^2 + C1, 2 s_xx + C2
  T* s = aligned_up(bst + 4 * a.th * Wo);  // staged base (x) and other (y) rows
  T* vb = s + 2 * srows * lay.stride;
  T* v = vb + 5 * 4 * lay.stride;
  T* lrow = v + 5 * vs;                  // Wo
  T *bmu = bst, *bsxx = bst + a.th * Wo, *bx1 = bsxx + a.th * Wo, *bx2 = bx1 + a.th * Wo;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t kc = task % a.nkc, strip_id = task / a.nkc;
    const int64_t st = strip_id % a.nstrips, nc = strip_id / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t o0 = st * a.th, o1 = std::min(g.Ho, o0 + a.th);
    const int64_t k0 = kc * a.kchunk, k1 = std::min(a.K, k0 + a.kchunk);
    const S* bp = a.base + n * a.sb[0] + c * a.sb[1];

    // Base statistics (moments x, xx), once for all k of the chunk; the staged base rows stay.
    auto stage_base = [&](int64_t ar, int64_t, T* xrow, T*) { gather_row(bp + ar * a.sb[2], a.sb[3], W, xrow); };
    auto emit_base = [&](int64_t i, const T* vv) {
      const int64_t o = (i - o0) * Wo;
      for (int64_t j = 0; j < Wo; ++j) {
        const T mu = vv[j], sxx = clamp0(vv[vs + j] - mu * mu);
        bmu[o + j] = mu;
        bsxx[o + j] = sxx;
        bx1[o + j] = mu * mu + a.C1;
        bx2[o + j] = T(2) * sxx + a.C2;
      }
    };
    strip_pass<kX | kXX>(g, lay, a.w, o0, o1, srows, s, vb, v, stage_base, emit_base);

    // Per other: the moments d, dd, xd against the kept base rows.
    for (int64_t k = k0; k < k1; ++k) {
      const S* op = a.others + n * a.so[0] + k * a.so[1] + c * a.so[2];
      auto stage = [&](int64_t ar, int64_t, T*, T* yrow) { gather_row(op + ar * a.so[3], a.so[4], W, yrow); };
      double acc = 0;
      auto emit = [&](int64_t i, const T* vv) {
        const int64_t o = (i - o0) * Wo;
        const T *mu = bmu + o, *sxx = bsxx + o, *b1 = bx1 + o, *b2 = bx2 + o;
        for (int64_t j = 0; j < Wo; ++j)
          lrow[j] = one_minus_ssim_pre(mu[j], sxx[j], b1[j], b2[j], vv[j], vv[vs + j], vv[2 * vs + j], a.C1);
        acc += static_cast<double>(row_sum(lrow, Wo));
      };
      strip_pass<kD | kDD | kXD>(g, lay, a.w, o0, o1, srows, s, vb, v, stage, emit);
      a.partial[strip_id * a.K + k] = acc;
    }
  }
}


// -------------------------------------------------------------------------------- filter

template <typename T>
struct FilterArgs {
  const T* src;
  T* dst;
  const T* w;  // the window (forward) or the flipped window (transpose)
  Geometry g;  // N = planes, C = 1
  bool transpose;
};

template <typename T>
int64_t filter_scratch(const Geometry& g, bool transpose) {
  return transpose ? adjoint_layout<T>(g).stride + 64 / sizeof(T) : strip_scratch<T>(g, g.Ho);
}

template <typename T>
VAEISO_AI void filter_tasks(const FilterArgs<T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t Wo = g.Wo, srows = g.Ho + g.ws - 1;
  if (a.transpose) {
    for (int64_t p = t0; p < t1; ++p) {
      for (int64_t r = 0; r < g.H; ++r)
        adjoint_row(a.src + p * g.Ho * Wo, g.Ho * Wo, 1, a.w, g, r, aligned_up(scratch), a.dst + (p * g.H + r) * g.W);
    }
    return;
  }
  // The whole plane is one strip of the pipeline.
  const Layout lay = layout_of<T>(g);
  T* s = aligned_up(scratch);
  T* vb = s + 2 * srows * lay.stride;
  T* v = vb + 5 * 4 * lay.stride;
  for (int64_t p = t0; p < t1; ++p) {
    auto stage = [&](int64_t ar, int64_t, T* xrow, T*) {
      std::memcpy(xrow, a.src + (p * g.H + ar) * g.W, g.W * sizeof(T));
    };
    auto emit = [&](int64_t i, const T* vv) { std::memcpy(a.dst + (p * g.Ho + i) * Wo, vv, Wo * sizeof(T)); };
    strip_pass<kX>(g, lay, a.w, 0, g.Ho, srows, s, vb, v, stage, emit);
  }
}


template <typename S>
void forward(const S* x, const int64_t* sx, const S* y, const int64_t* sy, const double* window,
             const Geometry& g, Constants k, Mode mode, acc_t<S>* maps, double* one_minus, double* l1) {
  using T = acc_t<S>;
  const auto w = cast_window<T>(window, g.ws, false);
  FwdArgs<S> a{};
  a.x = x;
  a.y = y;
  std::copy(sx, sx + 4, a.sx);
  std::copy(sy, sy + 4, a.sy);
  a.w = w.data();
  a.g = g;
  a.th = strip_rows<T>(g, g.N * g.C);
  a.nstrips = (g.Ho + a.th - 1) / a.th;
  a.C1 = static_cast<T>(k.C1);
  a.C2 = static_cast<T>(k.C2);
  const double inv = 1.0 / static_cast<double>(g.positions());
  a.scale = static_cast<T>(-inv);  // the maps differentiate the mean of 1 - v
  a.with_l1 = mode.with_l1;
  const int64_t ntasks = g.N * g.C * a.nstrips;
  std::vector<double> part_v(ntasks), part_l1(ntasks);
  a.part_v = part_v.data();
  a.part_l1 = part_l1.data();
  a.maps = maps;
  const int64_t scratch = forward_scratch<T>(g, a.th);
  at::parallel_for(0, ntasks, 1, [&](int64_t b, int64_t e) {
    Scratch<T> buf(scratch);  // kept between calls (cpu_workspace.h)
    if (mode.cs_only) {
      forward_tasks<true>(a, b, e, buf.data());
    } else {
      forward_tasks<false>(a, b, e, buf.data());
    }
  });
  const double inv_hw = 1.0 / static_cast<double>(g.H * g.W);
  for (int64_t nc = 0; nc < g.N * g.C; ++nc) {
    double sv = 0, sl = 0;
    for (int64_t t = 0; t < a.nstrips; ++t) {
      sv += part_v[nc * a.nstrips + t];
      sl += part_l1[nc * a.nstrips + t];
    }
    one_minus[nc] = sv * inv;
    if (mode.with_l1) l1[nc] = sl * inv_hw;
  }
}

template <typename S>
void backward(const acc_t<S>* grad, const acc_t<S>* grad_l1, const S* x, const int64_t* sx, const S* y,
              const int64_t* sy, const acc_t<S>* maps, const double* window, const Geometry& g,
              S* grad_x, S* grad_y) {
  using T = acc_t<S>;
  const auto wf = cast_window<T>(window, g.ws, true);
  BwdArgs<S> a{};
  a.grad = grad;
  a.grad_l1 = grad_l1;
  a.x = x;
  a.y = y;
  std::copy(sx, sx + 4, a.sx);
  std::copy(sy, sy + 4, a.sy);
  a.maps = maps;
  a.wf = wf.data();
  a.g = g;
  a.tr = g.N * g.C >= 8 ? g.H : std::max<int64_t>(8, (g.H * g.N * g.C + 7) / 8);
  a.tr = std::min(a.tr, g.H);
  a.nstrips = (g.H + a.tr - 1) / a.tr;
  a.inv_hw = static_cast<T>(1.0 / static_cast<double>(g.H * g.W));
  a.gx = grad_x;
  a.gy = grad_y;
  const int64_t scratch = backward_scratch<T>(g);
  at::parallel_for(0, g.N * g.C * a.nstrips, 1, [&](int64_t b, int64_t e) {
    Scratch<T> buf(scratch);  // kept between calls (cpu_workspace.h)
    if (grad_l1 != nullptr) {
      backward_tasks<true>(a, b, e, buf.data());
    } else {
      backward_tasks<false>(a, b, e, buf.data());
    }
  });
}

template <typename S>
void pairs(const S* base, const int64_t* sb, const S* others, const int64_t* so, int64_t K,
           const double* window, const Geometry& g, Constants k, double* mean) {
  using T = acc_t<S>;
  const auto w = cast_window<T>(window, g.ws, false);
  PairArgs<S> a{};
  a.base = base;
  a.others = others;
  std::copy(sb, sb + 4, a.sb);
  std::copy(so, so + 5, a.so);
  a.w = w.data();
  a.g = g;
  a.K = K;
  a.th = strip_rows<T>(g, g.N * g.C);
  a.nstrips = (g.Ho + a.th - 1) / a.th;
  // Split K so that small batches still feed every thread; each k's sum is the same
  // whatever the split, so this does not change the result.
  const int64_t strips = g.N * g.C * a.nstrips;
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  a.nkc = std::min<int64_t>(K, std::max<int64_t>(1, (want + strips - 1) / strips));
  a.kchunk = (K + a.nkc - 1) / a.nkc;
  a.nkc = (K + a.kchunk - 1) / a.kchunk;
  a.C1 = static_cast<T>(k.C1);
  a.C2 = static_cast<T>(k.C2);
  std::vector<double> partial(strips * K, 0.0);
  a.partial = partial.data();
  const int64_t scratch = pairs_scratch<T>(g, a.th);
  at::parallel_for(0, strips * a.nkc, 1, [&](int64_t b, int64_t e) {
    Scratch<T> buf(scratch);  // kept between calls (cpu_workspace.h)
    pairs_tasks(a, b, e, buf.data());
  });
  const double inv = 1.0 / static_cast<double>(g.C * g.positions());
  const int64_t per_image = g.C * a.nstrips;
  for (int64_t n = 0; n < g.N; ++n) {
    for (int64_t kk = 0; kk < K; ++kk) {
      double s = 0;
      for (int64_t t = 0; t < per_image; ++t) s += partial[(n * per_image + t) * K + kk];
      mean[n * K + kk] = s * inv;
    }
  }
}

template <typename T>
void filter(const T* src, T* dst, int64_t M, int64_t H, int64_t W, const double* window, int64_t ws,
            int64_t pad, bool transpose) {
  // Geometry of the image side (H x W): for the transpose the image is dst.
  const Geometry g = make_geometry(M, 1, H, W, ws, pad > 0);
  const auto w = cast_window<T>(window, ws, transpose);
  FilterArgs<T> a{src, dst, w.data(), g, transpose};
  const int64_t scratch = filter_scratch<T>(g, transpose);
  at::parallel_for(0, M, 1, [&](int64_t b, int64_t e) {
    Scratch<T> buf(scratch);  // kept between calls (cpu_workspace.h)
    filter_tasks(a, b, e, buf.data());
  });
}

#define VAEISO_SSIM_INSTANTIATE(S)                                                                \
  template void forward<S>(const S*, const int64_t*, const S*, const int64_t*, const double*,     \
                           const Geometry&, Constants, Mode, acc_t<S>*, double*, double*);        \
  template void backward<S>(const acc_t<S>*, const acc_t<S>*, const S*, const int64_t*, const S*, \
                            const int64_t*, const acc_t<S>*, const double*, const Geometry&, S*,  \
                            S*);                                                                  \
  template void pairs<S>(const S*, const int64_t*, const S*, const int64_t*, int64_t,             \
                         const double*, const Geometry&, Constants, double*);
VAEISO_SSIM_INSTANTIATE(float)
VAEISO_SSIM_INSTANTIATE(double)
VAEISO_SSIM_INSTANTIATE(f16)
VAEISO_SSIM_INSTANTIATE(bf16)
#undef VAEISO_SSIM_INSTANTIATE
template void filter<float>(const float*, float*, int64_t, int64_t, int64_t, const double*, int64_t,
                            int64_t, bool);
template void filter<double>(const double*, double*, int64_t, int64_t, int64_t, const double*,
                             int64_t, int64_t, bool);

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
