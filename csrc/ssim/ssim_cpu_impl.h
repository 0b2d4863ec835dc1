// CPU passes of the SSIM family. Work is split into tasks of (image, channel, strip of rows);
// each task runs the one strip pipeline (strip_pass: the rows of x and y the strip's windows
// reach read in place or staged once; then, a block of output rows at a time, the windowed moments formed in
// registers and filtered vertically, each input vector feeding every output row of the block,
// then horizontally) and evaluates ssim_math.h per position. The per-(image, channel) forward
// (1 - SSIM or 1 - cs, optional L1), ssim_pairs and ssim_filter all run on it; the backward
// filters the derivative maps with the adjoint window the same way, vertically in blocks of rows.
// Per-task sums land in a fixed slot and are added in a fixed order, so results do not depend
// on the thread count.
//
// Compiled once per instruction set (ssim_cpu_{default,avx2,avx512}.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); ssim_cpu.cpp dispatches on dtype and picks one at run time.
// The pieces: ssim_cpu_strip.h (the two filter pipelines), ssim_cpu_fir.h (the FIR loops on one
// native vector register, cpu_simd.h), ssim_cpu_scratch.h (the tasks' buffers); this file holds
// the passes and their entry points. Images of a half type (storage S) are converted to float
// (T = acc_t<S>) as their rows are gathered; gradients are rounded to S once on store.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including ssim_cpu_impl.h"
#endif
#include "cpu_parallel.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_half.h"
#include "ssim/ssim_cpu_passes.h"
#include "ssim/ssim_cpu_strip.h"
#include "ssim/ssim_math.h"

namespace vaeiso::ssim {
VAEISO_SSIM_DECLARE_PASSES(VAEISO_CPU_ISA)
}

// No anonymous namespace: the whole file is private to its ISA build through VAEISO_CPU_ISA,
// and the task lambdas below capture these argument structs.
namespace vaeiso::ssim::VAEISO_CPU_ISA {

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
VAEISO_AI void combine_row(const T* __restrict G, int64_t gs, const T* __restrict xr, const T* __restrict yr, T gn,
                           T gl, int64_t W, S* __restrict ox, S* __restrict oy) {
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

template <bool CS, typename S, typename T>
VAEISO_AI void forward_tasks(const FwdArgs<S, T>& a, int64_t t0, int64_t t1, const TaskBuffers<T>& sc) {
  const Geometry& g = a.g;
  const int64_t pad = g.pad, Wo = g.Wo, vs = sc.lay.vs;
  const int64_t P = g.Ho * Wo;
  T* lrow = sc.lrow;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t st = task % a.nstrips, nc = task / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t o0 = st * a.th, o1 = std::min(g.Ho, o0 + a.th);
    // Image rows whose |d| this strip counts: [o0 - pad, o1 - pad), the first and last strips
    // extended to the image's edges, so every row is counted by exactly one strip.
    const int64_t l1_lo = st == 0 ? 0 : o0 - pad, l1_hi = st + 1 == a.nstrips ? g.H : o1 - pad;
    const S* xp = a.x + n * a.sx[0] + c * a.sx[1];
    const S* yp = a.y + n * a.sy[0] + c * a.sy[1];
    double acc = 0, l1 = 0;
    // Dense rows of the compute type are read in place (strip_pass); their |d| is summed here,
    // row by row in order as staging would (the same sum), which also brings the strip's own
    // rows into cache ahead of the filter.
    InPlace<T> in_place;
    if constexpr (std::is_same_v<S, T>) {
      if (a.sx[3] == 1 && a.sy[3] == 1) {
        in_place = {xp, yp, a.sx[2], a.sy[2]};
        if (a.with_l1)
          for (int64_t ar = l1_lo; ar < l1_hi; ++ar)
            l1 += static_cast<double>(abs_diff_sum(xp + ar * a.sx[2], yp + ar * a.sy[2], g.W));
      }
    }
    auto stage = [&](int64_t ar, int64_t, T* xrow, T* yrow) {
      gather_row(xp + ar * a.sx[2], a.sx[3], g.W, xrow);
      gather_row(yp + ar * a.sy[2], a.sy[3], g.W, yrow);
      if (a.with_l1 && in_place.x == nullptr && ar >= l1_lo && ar < l1_hi)
        l1 += static_cast<double>(abs_diff_sum(xrow, yrow, g.W));
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
    strip_pass<kAll>(g, sc, a.w, o0, o1, stage, emit, in_place);
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

template <bool L1, typename S, typename T>
VAEISO_AI void backward_tasks(const BwdArgs<S, T>& a, int64_t t0, int64_t t1, const TaskBuffers<T>& sc) {
  const Geometry& g = a.g;
  const int64_t W = g.W, P = g.Ho * g.Wo;
  T *G = sc.G, *xr = sc.xr, *yr = sc.yr;
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
        if (a.sx[3] == 1)
          xp = xs;
        else
          gather_row(xs, a.sx[3], W, xr);
        if (a.sy[3] == 1)
          yp = ys;
        else
          gather_row(ys, a.sy[3], W, yr);
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
        adjoint_rows<kRowsR>(mp, P, a.wf, g, r, sc, G);
        for (int k = 0; k < kRowsR; ++k) finish(r + k, G + k * W, kRowsR * W);
        r += kRowsR;
      } else {
        adjoint_row(mp, P, 4, a.wf, g, r, sc, G);
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

template <typename S, typename T>
VAEISO_AI void pairs_tasks(const PairArgs<S, T>& a, int64_t t0, int64_t t1, const TaskBuffers<T>& sc) {
  const Geometry& g = a.g;
  const int64_t Wo = g.Wo, W = g.W, vs = sc.lay.vs;
  T* bst = sc.bst;  // 4 x th x Wo: mu_x, s_xx, mu_x^2 + C1, 2 s_xx + C2
  T* lrow = sc.lrow;
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
    strip_pass<kX | kXX>(g, sc, a.w, o0, o1, stage_base, emit_base);

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
      strip_pass<kD | kDD | kXD>(g, sc, a.w, o0, o1, stage, emit);
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
VAEISO_AI void filter_tasks(const FilterArgs<T>& a, int64_t t0, int64_t t1, const TaskBuffers<T>& sc) {
  const Geometry& g = a.g;
  const int64_t Wo = g.Wo;
  if (a.transpose) {
    for (int64_t p = t0; p < t1; ++p) {
      for (int64_t r = 0; r < g.H; ++r)
        adjoint_row(a.src + p * g.Ho * Wo, g.Ho * Wo, 1, a.w, g, r, sc, a.dst + (p * g.H + r) * g.W);
    }
    return;
  }
  // The whole plane is one strip of the pipeline.
  for (int64_t p = t0; p < t1; ++p) {
    auto stage = [&](int64_t ar, int64_t, T* xrow, T*) {
      std::memcpy(xrow, a.src + (p * g.H + ar) * g.W, g.W * sizeof(T));
    };
    auto emit = [&](int64_t i, const T* vv) { std::memcpy(a.dst + (p * g.Ho + i) * Wo, vv, Wo * sizeof(T)); };
    strip_pass<kX>(g, sc, a.w, 0, g.Ho, stage, emit);
  }
}

// ---------------------------------------------------------------------------- entry points

template <typename S>
void forward(const S* x, const int64_t* sx, const S* y, const int64_t* sy, const double* window, const Geometry& g,
             Constants k, Terms terms, acc_t<S>* maps, double* one_minus, double* l1) {
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
  a.with_l1 = terms.with_l1;
  const int64_t ntasks = g.N * g.C * a.nstrips;
  std::vector<double> part_v(ntasks), part_l1(ntasks);
  a.part_v = part_v.data();
  a.part_l1 = part_l1.data();
  a.maps = maps;
  ScratchNeeds needs;
  needs.strip_rows = a.th;
  needs.value_row = true;
  run_tasks<T>(ntasks, g, needs, [&](int64_t b, int64_t e, const TaskBuffers<T>& sc) {
    if (terms.cs_only) {
      forward_tasks<true>(a, b, e, sc);
    } else {
      forward_tasks<false>(a, b, e, sc);
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
    if (terms.with_l1) l1[nc] = sl * inv_hw;
  }
}

template <typename S>
void backward(const acc_t<S>* grad, const acc_t<S>* grad_l1, const S* x, const int64_t* sx, const S* y,
              const int64_t* sy, const acc_t<S>* maps, const double* window, const Geometry& g, S* grad_x, S* grad_y) {
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
  ScratchNeeds needs;
  needs.adjoint_rows = 4 * kRowsR;
  needs.grad_rows = true;
  run_tasks<T>(g.N * g.C * a.nstrips, g, needs, [&](int64_t b, int64_t e, const TaskBuffers<T>& sc) {
    if (grad_l1 != nullptr) {
      backward_tasks<true>(a, b, e, sc);
    } else {
      backward_tasks<false>(a, b, e, sc);
    }
  });
}

template <typename S>
void pairs(const S* base, const int64_t* sb, const S* others, const int64_t* so, int64_t K, const double* window,
           const Geometry& g, Constants k, double* mean) {
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
  const int64_t want = 4 * static_cast<int64_t>(::vaeiso::num_threads());
  a.nkc = std::min<int64_t>(K, std::max<int64_t>(1, (want + strips - 1) / strips));
  a.kchunk = (K + a.nkc - 1) / a.nkc;
  a.nkc = (K + a.kchunk - 1) / a.kchunk;
  a.C1 = static_cast<T>(k.C1);
  a.C2 = static_cast<T>(k.C2);
  std::vector<double> partial(strips * K, 0.0);
  a.partial = partial.data();
  ScratchNeeds needs;
  needs.strip_rows = a.th;
  needs.value_row = true;
  needs.base_stats = true;
  run_tasks<T>(strips * a.nkc, g, needs,
               [&](int64_t b, int64_t e, const TaskBuffers<T>& sc) { pairs_tasks(a, b, e, sc); });
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
void filter(const T* src, T* dst, int64_t M, int64_t H, int64_t W, const double* window, int64_t ws, int64_t pad,
            bool transpose) {
  // Geometry of the image side (H x W): for the transpose the image is dst.
  const Geometry g = make_geometry(M, 1, H, W, ws, pad > 0);
  const auto w = cast_window<T>(window, ws, transpose);
  FilterArgs<T> a{src, dst, w.data(), g, transpose};
  ScratchNeeds needs;
  if (transpose) {
    needs.adjoint_rows = 1;
  } else {
    needs.strip_rows = g.Ho;
  }
  run_tasks<T>(M, g, needs, [&](int64_t b, int64_t e, const TaskBuffers<T>& sc) { filter_tasks(a, b, e, sc); });
}

#define VAEISO_SSIM_INSTANTIATE(S)                                                                                    \
  template void forward<S>(const S*, const int64_t*, const S*, const int64_t*, const double*, const Geometry&,        \
                           Constants, Terms, acc_t<S>*, double*, double*);                                            \
  template void backward<S>(const acc_t<S>*, const acc_t<S>*, const S*, const int64_t*, const S*, const int64_t*,     \
                            const acc_t<S>*, const double*, const Geometry&, S*, S*);                                 \
  template void pairs<S>(const S*, const int64_t*, const S*, const int64_t*, int64_t, const double*, const Geometry&, \
                         Constants, double*);
VAEISO_SSIM_INSTANTIATE(float)
VAEISO_SSIM_INSTANTIATE(double)
VAEISO_SSIM_INSTANTIATE(f16)
VAEISO_SSIM_INSTANTIATE(bf16)
#undef VAEISO_SSIM_INSTANTIATE
template void filter<float>(const float*, float*, int64_t, int64_t, int64_t, const double*, int64_t, int64_t, bool);
template void filter<double>(const double*, double*, int64_t, int64_t, int64_t, const double*, int64_t, int64_t, bool);

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
