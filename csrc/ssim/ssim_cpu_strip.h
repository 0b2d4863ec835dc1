// The SSIM family's two filter pipelines over one plane, without the passes around them: the
// strip pipeline (strip_pass: the rows of x and y a strip of output rows reaches read in place
// or staged once; then, a block of output rows at a time, the windowed moments formed in
// registers and filtered vertically, each input vector feeding every output row of the block,
// then horizontally) and the adjoint filter of the derivative maps back onto the image rows
// (adjoint_row(s)). Part of the per-ISA build of ssim_cpu_impl.h; the vector work is in
// ssim_cpu_fir.h.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_half.h"
#include "ssim/ssim_cpu_fir.h"
#include "ssim/ssim_cpu_scratch.h"

namespace vaeiso::ssim::VAEISO_CPU_ISA {

// sum_j p[j], and sum_j |y[j] - x[j]|, for j < n in a fixed order (cpu_simd.h).
template <typename T>
VAEISO_AI T row_sum(const T* p, int64_t n) {
  return simd::lane_sum<false>(p, p, n);
}

template <typename T>
VAEISO_AI T abs_diff_sum(const T* x, const T* y, int64_t n) {
  return simd::lane_sum<true>(x, y, n);
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
// Output rows per block of the moments FIR, and vectors per group: R x G x planes accumulators,
// up to kAccRegs, and fewer where they would not fit the registers beside one input vector's
// products and x, y (with AVX2 the five moments took R = 2 and spilled, slower than R = 1 in an
// interleaved microbenchmark).
constexpr int kVecRegs = kVecBytes == 64 ? 32 : 16;
constexpr bool mom_fits(int planes, int r, int g) { return r * g * planes + planes + 2 <= kVecRegs; }
constexpr int mom_rows(int planes) {
  int r = std::min(4, std::max(1, kAccRegs / planes));
  while (r > 1 && !mom_fits(planes, r, 1)) --r;
  return r;
}
constexpr int mom_group(int planes, int r) {
  int g = std::max(1, kAccRegs / (planes * r));
  while (g > 1 && !mom_fits(planes, r, g)) --g;
  return g;
}
template <unsigned M>
constexpr int kMomR = mom_rows(kPlanes<M>);
template <unsigned M>
constexpr int kMomG = mom_group(kPlanes<M>, kMomR<M>);

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

// R output rows of G consecutive vectors from column j0 of every moment in M, from the rows of
// x (xs, `is` apart) and y (ys, `iy` apart): out[m * ps + r * rs + j] = sum_{t < nt} w[t] mom_m(row
// r + t, j). The products are formed in registers, once per input vector for all R rows.
template <unsigned M, int R, int G, typename T>
VAEISO_AI void moments_group(const T* __restrict xs, const T* __restrict ys, int64_t is, int64_t iy,
                             const T* __restrict w, int64_t nt, T* __restrict out, int64_t ps, int64_t rs, int64_t j0) {
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
      const V x = loadu<V>(xs + t * is + j0 + i * L);
      const V y = kNeedsY<M> ? loadu<V>(ys + t * iy + j0 + i * L) : V{};
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
      for (int i = 0; i < G; ++i) storeu(out + m * ps + r * rs + j0 + i * L, acc[m][r][i]);
}

// moments_group over columns [0, n): groups of G vectors, then single ones, the last overlapping
// the previous when n is not a multiple of the vector length.
template <unsigned M, int R, int G, typename T>
VAEISO_AI void moments_rows(const T* xs, const T* ys, int64_t is, int64_t iy, const T* w, int64_t nt, T* out,
                            int64_t ps, int64_t rs, int64_t n) {
  constexpr int64_t L = Vec<T>::L;
  if (n < L) {  // narrower than one vector: scalar
    constexpr int NM = kPlanes<M>;
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < n; ++j) {
        T acc[NM] = {};
        for (int64_t t = 0; t < nt; ++t) {
          T p[NM];
          form_moments<M>(xs[(r + t) * is + j], kNeedsY<M> ? ys[(r + t) * iy + j] : T(0), p);
          for (int m = 0; m < NM; ++m) acc[m] += w[t] * p[m];
        }
        for (int m = 0; m < NM; ++m) out[m * ps + r * rs + j] = acc[m];
      }
    return;
  }
  int64_t j = 0;
  for (; j + G * L <= n; j += G * L) moments_group<M, R, G>(xs, ys, is, iy, w, nt, out, ps, rs, j);
  for (; j + L <= n; j += L) moments_group<M, R, 1>(xs, ys, is, iy, w, nt, out, ps, rs, j);
  if (j < n) moments_group<M, R, 1>(xs, ys, is, iy, w, nt, out, ps, rs, n - L);
}

// Output rows i .. i + R - 1 of a strip: the moments M of the x and y rows their windows start
// at (xs and ys; is and iy apart: staged rows or the images' own) filtered vertically into
// sc.vb (planes x R rows, margins zero), then each row horizontally into sc.v (planes x vs) for
// emit.
template <unsigned M, int R, typename T, typename Emit>
VAEISO_AI void strip_out_rows(const Geometry& g, const TaskBuffers<T>& sc, const T* w, const T* xs, const T* ys,
                              int64_t is, int64_t iy, int64_t i, Emit& emit) {
  constexpr int NM = kPlanes<M>;
  const Layout& lay = sc.lay;
  const int64_t st = lay.stride;
  // vb rows hold W values at column pad, so that the horizontal pass reads aligned rows
  moments_rows<M, R, kMomG<M>>(xs, ys, is, iy, w, g.ws, sc.vb + g.pad, R * st, st, g.W);
  for (int r = 0; r < R; ++r) {
    for (int m = 0; m < NM; ++m) fir_h(sc.vb + (m * R + r) * st, w, g.ws, sc.v + m * lay.vs, g.Wo);
    emit(i + r, static_cast<const T*>(sc.v));
  }
}

// The planes' own rows where a pass may read them in place: row a of x at x + a * sx, of y at
// y + a * sy (dense rows of the compute type). Null x: every row is staged.
template <typename T>
struct InPlace {
  const T* x = nullptr;
  const T* y = nullptr;
  int64_t sx = 0, sy = 0;
};

// The strip pipeline, vertical pass first. For output rows [o0, o1) of one plane: every image
// row the strip's windows reach is staged once, just before it is first needed, by
// `stage(ar, r, xrow, yrow)` (image row ar, strip row r; W values each, inside margins that stay
// zero) into sc.s (x then y: 2 x srows rows); rows outside the image are zero (the "same"
// padding). Then a block of output rows at a time, the moments M are formed and filtered
// (strip_out_rows) and handed to `emit(i, v)`: v holds one filtered row per moment, lay.vs
// apart. Staging is the only work repeated where strips overlap. With `in_place`, a block whose
// window rows all lie inside the image reads them there instead (no staging copy: it was a
// twelfth of the forward's time); only blocks at a "same"-padded edge are staged then.
template <unsigned M, typename T, typename Stage, typename Emit>
VAEISO_AI void strip_pass(const Geometry& g, const TaskBuffers<T>& sc, const T* w, int64_t o0, int64_t o1,
                          Stage&& stage, Emit&& emit, const InPlace<T>& in_place = {}) {
  // Rows are staged just before the first block that needs them, so that reading the images
  // overlaps the filtering (staged all at once, the strip's reads stalled on memory first).
  int64_t staged = 0;
  auto stage_to = [&](int64_t upto) {
    for (; staged < upto; ++staged) {
      const int64_t r = staged, ar = o0 + r - g.pad;
      T* xrow = sc.s + r * sc.lay.stride + sc.lay.lead;
      T* yrow = xrow + sc.srows * sc.lay.stride;
      if (ar < 0 || ar >= g.H) {
        zero(xrow, g.W);
        zero(yrow, g.W);
      } else {
        stage(ar, r, xrow, yrow);
      }
    }
  };
  auto block = [&](auto rows, int64_t i) {
    constexpr int R = decltype(rows)::value;
    const int64_t a0 = i - g.pad, r0 = i - o0;  // the window's first image row, and strip row
    if (in_place.x != nullptr && a0 >= 0 && a0 + g.ws - 1 + R <= g.H) {
      strip_out_rows<M, R>(g, sc, w, in_place.x + a0 * in_place.sx, in_place.y + a0 * in_place.sy, in_place.sx,
                           in_place.sy, i, emit);
      return;
    }
    if (in_place.x != nullptr) staged = std::max(staged, r0);  // rows read in place are not staged
    stage_to(r0 + g.ws - 1 + R);
    const int64_t st = sc.lay.stride;
    const T* xs = sc.s + r0 * st + sc.lay.lead;
    strip_out_rows<M, R>(g, sc, w, xs, xs + sc.srows * st, st, st, i, emit);
  };
  constexpr int R = kMomR<M>;
  int64_t i = o0;
  for (; i + R <= o1; i += R) block(std::integral_constant<int, R>{}, i);
  for (; i < o1; ++i) block(std::integral_constant<int, 1>{}, i);
}

// Rows per strip: the strip's staged x and y stay in about 128 KB (L2); small batches are cut
// into more strips so that both cores get work. Shape-only, so the summation order never
// depends on the thread count.
template <typename T>
int64_t strip_rows(const Geometry& g, int64_t planes) {
  const int64_t per_row = 2 * strip_layout<T>(g).stride * static_cast<int64_t>(sizeof(T));
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

// ---------------------------------------------------------------------- the adjoint filter

// One image row r of the adjoint filter applied to `nmaps` position maps at mp (plane stride P):
// G[m][col] = sum over positions p of w(p -> (r, col)) map_m[p], written to G + m * W.
template <typename T>
VAEISO_AI void adjoint_row(const T* mp, int64_t P, int nmaps, const T* wf, const Geometry& g, int64_t r,
                           const TaskBuffers<T>& sc, T* G) {
  const Layout& lay = sc.adj;
  const int64_t ws = g.ws, Wo = g.Wo;
  const int64_t q = r + g.pad, lo = q - ws + 1;  // map rows lo .. q reach padded row q
  const int64_t t0 = std::max<int64_t>(0, -lo), t1 = std::min<int64_t>(ws, g.Ho - lo);
  for (int m = 0; m < nmaps; ++m) {
    T* vm = sc.vpad + m * lay.stride;
    fir(mp + m * P + (lo + t0) * Wo, Wo, wf + t0, t1 - t0, vm + lay.lead, Wo);
    fir_h(vm, wf, ws, G + m * g.W, g.W);
  }
}

// Image rows r .. r + R - 1 at once, where every window lies inside the maps
// (adjoint_interior): map m of row r + k lands at G + (m * R + k) * W.
template <int R, typename T>
VAEISO_AI void adjoint_rows(const T* mp, int64_t P, const T* wf, const Geometry& g, int64_t r, const TaskBuffers<T>& sc,
                            T* G) {
  const Layout& lay = sc.adj;
  T* vpad = sc.vpad;
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

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
