// CPU passes of the SSIM family. Work is split into tasks of (image, channel, strip of rows);
// each task runs the one strip pipeline (strip_pass: the moment rows staged, filtered
// horizontally into a cache-resident buffer, then vertically) and evaluates ssim_math.h per
// position. The per-(image, channel) forward (1 - SSIM or 1 - cs, optional L1), ssim_pairs and
// ssim_filter all run on it. Per-task sums land in a fixed slot and are added in a fixed order,
// so results do not depend on the thread count.
//
// Compiled once per instruction set (ssim_cpu_default.cpp, ssim_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); ssim_cpu.cpp dispatches on dtype and picks one at run time.
// The FIR loops use GCC vector extensions of one native register. Images of a half type (storage
// S) are converted to float (T = acc_t<S>) as their rows are gathered; gradients are rounded to S
// once on store.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including ssim_cpu_impl.h"
#endif
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_half.h"
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

// One native register: 32 bytes with AVX, 16 (SSE2 and most other targets) otherwise.
#if defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int64_t L = kVecBytes / sizeof(T);
};

// G vectors of outputs starting at j[0..G): independent accumulators, so the FMA latency of
// one chain hides behind the others.
template <typename T, int G>
VAEISO_AI void fir_group(const T* __restrict in, int64_t stride, const T* __restrict w, int64_t nt,
                         T* __restrict out, const int64_t* j) {
  using V = typename Vec<T>::type;
  V acc[G];
  for (int i = 0; i < G; ++i) acc[i] = V{};
  for (int64_t t = 0; t < nt; ++t) {
    const T wt = w[t];
    const T* row = in + t * stride;
    for (int i = 0; i < G; ++i) {
      V v;
      std::memcpy(&v, row + j[i], sizeof(V));
      acc[i] += wt * v;
    }
  }
  for (int i = 0; i < G; ++i) std::memcpy(out + j[i], &acc[i], sizeof(V));
}

// out[j] = sum_{t < nt} w[t] * in[t * stride + j] for j < n. in and out must not overlap.
template <typename T>
VAEISO_AI void fir(const T* __restrict in, int64_t stride, const T* __restrict w, int64_t nt,
                   T* __restrict out, int64_t n) {
  constexpr int64_t L = Vec<T>::L;
  if (nt <= 0) {
    for (int64_t j = 0; j < n; ++j) out[j] = T(0);
    return;
  }
  if (n < L) {
    for (int64_t j = 0; j < n; ++j) {
      T acc = T(0);
      for (int64_t t = 0; t < nt; ++t) acc += w[t] * in[t * stride + j];
      out[j] = acc;
    }
    return;
  }
  // Full vectors; the last one overlaps the previous when n is not a multiple of L.
  const int64_t nv = (n + L - 1) / L;
  int64_t i = 0;
  for (; i + 4 <= nv; i += 4) {
    const int64_t j[4] = {std::min(i * L, n - L), std::min((i + 1) * L, n - L),
                          std::min((i + 2) * L, n - L), std::min((i + 3) * L, n - L)};
    fir_group<T, 4>(in, stride, w, nt, out, j);
  }
  const int64_t rest = nv - i;
  if (rest == 3) {
    const int64_t j[3] = {i * L, (i + 1) * L, n - L};
    fir_group<T, 3>(in, stride, w, nt, out, j);
  } else if (rest == 2) {
    const int64_t j[2] = {i * L, n - L};
    fir_group<T, 2>(in, stride, w, nt, out, j);
  } else if (rest == 1) {
    const int64_t j[1] = {n - L};
    fir_group<T, 1>(in, stride, w, nt, out, j);
  }
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

// One image row of the forward: x and d = y - x into the padded row buffers xr, dr (their
// margins stay zero) and the products x*x, d*d, x*d.
template <typename S, typename T>
VAEISO_AI void stage_row(const S* xsrc, int64_t xs, const S* ysrc, int64_t ys, int64_t W, int64_t pad,
                         T* xr, T* dr, T* pxx, T* pdd, T* pxd) {
  T* xi = xr + pad;
  T* di = dr + pad;
  gather_row(xsrc, xs, W, xi);
  gather_row(ysrc, ys, W, di);
  for (int64_t j = 0; j < W; ++j) {
    const T xv = xi[j], dv = di[j] - xv;
    di[j] = dv;
    pxx[pad + j] = xv * xv;
    pdd[pad + j] = dv * dv;
    pxd[pad + j] = xv * dv;
  }
}

template <typename T>
VAEISO_AI void zero(T* p, int64_t n) {
  for (int64_t j = 0; j < n; ++j) p[j] = T(0);
}

// The strip pipeline. For output rows [o0, o1) of one plane: each image row the window reaches
// is staged by `stage(ar, r, src)` (image row ar, strip row r; it points src[0..NM) at NM rows
// padded by g.pad on each side, margins zero) and filtered horizontally into h (NM planes of
// `hrows` x Wo); then each output row i is filtered vertically into v (NM x Wo) and handed to
// `emit(i, v)`. Rows outside the image are zero (the "same" padding).
template <int NM, typename T, typename Stage, typename Emit>
VAEISO_AI void strip_pass(const Geometry& g, const T* w, int64_t o0, int64_t o1, int64_t hrows, T* h,
                          T* v, Stage&& stage, Emit&& emit) {
  const int64_t ws = g.ws, Wo = g.Wo, nrows = o1 - o0 + ws - 1;
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t ar = o0 + r - g.pad;
    if (ar < 0 || ar >= g.H) {
      for (int m = 0; m < NM; ++m) zero(h + (m * hrows + r) * Wo, Wo);
      continue;
    }
    const T* src[NM];
    stage(ar, r, src);
    for (int m = 0; m < NM; ++m) fir(src[m], 1, w, ws, h + (m * hrows + r) * Wo, Wo);
  }
  for (int64_t i = o0; i < o1; ++i) {
    for (int m = 0; m < NM; ++m) fir(h + (m * hrows + (i - o0)) * Wo, Wo, w, ws, v + m * Wo, Wo);
    emit(i, static_cast<const T*>(v));
  }
}

// Rows per strip: the strip's horizontal results (`maps` arrays of Wo) stay in about 192 KB;
// small batches are cut into more strips so that both cores get work. Shape-only, so the
// summation order never depends on the thread count.
int64_t strip_rows(const Geometry& g, int64_t maps, int64_t elem, int64_t planes) {
  const int64_t per_row = std::max<int64_t>(1, maps * g.Wo * elem);
  int64_t th = std::max<int64_t>(8, (192 * 1024) / per_row - (g.ws - 1));
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

// The derivative maps of one output row from its five moment rows v (x, d, xx, dd, xd).
template <bool CS, typename T>
VAEISO_AI void grad_row(const T* __restrict v, int64_t Wo, T C1, T C2, T scale, T* __restrict m0,
                        T* __restrict m1, T* __restrict m2, T* __restrict m3) {
  const T *mx = v, *md = v + Wo, *exx = v + 2 * Wo, *edd = v + 3 * Wo, *exd = v + 4 * Wo;
  for (int64_t j = 0; j < Wo; ++j) {
    const Grad<T> gr = value_grad<CS>(stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]), C1, C2, scale);
    m0[j] = gr.mx;
    m1[j] = gr.my;
    m2[j] = gr.s;
    m3[j] = gr.xy;
  }
}

// Gradient rows from the adjoint-filtered maps G (mx, my, s, xy; W each), ssim_math.h Grad,
// weighted by gn, plus gl * sign(y - x) for the L1 term (L1: gl = grad_l1 / (H W)).
template <bool L1, typename S, typename T>
VAEISO_AI void combine_row(const T* __restrict G, const T* __restrict xr, const T* __restrict yr, T gn,
                           T gl, int64_t W, S* __restrict ox, S* __restrict oy) {
  const T *Gmx = G, *Gmy = G + W, *Gs = G + 2 * W, *Gxy = G + 3 * W;
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
  const int64_t Wp = g.W + 2 * g.pad;
  return 5 * Wp + 5 * (th + g.ws - 1) * g.Wo + 6 * g.Wo;
}

template <bool CS, typename S, typename T>
VAEISO_AI void forward_tasks(const FwdArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t ws = g.ws, pad = g.pad, Wo = g.Wo, Wp = g.W + 2 * pad, rows = a.th + ws - 1;
  const int64_t P = g.Ho * Wo;
  T* xr = scratch;
  T* dr = xr + Wp;
  T* pxx = dr + Wp;
  T* pdd = pxx + Wp;
  T* pxd = pdd + Wp;
  T* h = pxd + Wp;  // 5 maps x rows x Wo: x, d, xx, dd, xd
  T* v = h + 5 * rows * Wo;
  T* lrow = v + 5 * Wo;
  zero(scratch, 5 * Wp);  // the padding margins stay zero
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t s = task % a.nstrips, nc = task / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t o0 = s * a.th, o1 = std::min(g.Ho, o0 + a.th);
    // Image rows whose |d| this strip counts: [o0 - pad, o1 - pad), the first and last strips
    // extended to the image's edges, so every row is counted by exactly one strip.
    const int64_t l1_lo = s == 0 ? 0 : o0 - pad, l1_hi = s + 1 == a.nstrips ? g.H : o1 - pad;
    const S* xp = a.x + n * a.sx[0] + c * a.sx[1];
    const S* yp = a.y + n * a.sy[0] + c * a.sy[1];
    double acc = 0, l1 = 0;
    auto stage = [&](int64_t ar, int64_t, const T** src) {
      stage_row(xp + ar * a.sx[2], a.sx[3], yp + ar * a.sy[2], a.sy[3], g.W, pad, xr, dr, pxx, pdd, pxd);
      if (a.with_l1 && ar >= l1_lo && ar < l1_hi) {
        const T* di = dr + pad;
        T racc = T(0);
        for (int64_t j = 0; j < g.W; ++j) racc += std::abs(di[j]);
        l1 += static_cast<double>(racc);
      }
      src[0] = xr;
      src[1] = dr;
      src[2] = pxx;
      src[3] = pdd;
      src[4] = pxd;
    };
    auto emit = [&](int64_t i, const T* vv) {
      const T *mx = vv, *md = vv + Wo, *exx = vv + 2 * Wo, *edd = vv + 3 * Wo, *exd = vv + 4 * Wo;
      for (int64_t j = 0; j < Wo; ++j)
        lrow[j] = one_minus_value<CS>(stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]), a.C1, a.C2);
      T racc = T(0);
      for (int64_t j = 0; j < Wo; ++j) racc += lrow[j];
      acc += static_cast<double>(racc);
      if (a.maps != nullptr) {
        T* m0 = a.maps + nc * 4 * P + i * Wo;
        grad_row<CS>(vv, Wo, a.C1, a.C2, a.scale, m0, m0 + P, m0 + 2 * P, m0 + 3 * P);
      }
    };
    strip_pass<5>(g, a.w, o0, o1, rows, h, v, stage, emit);
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

template <typename T>
int64_t backward_scratch(const Geometry& g) {
  return 4 * (g.Wo + 2 * (g.ws - 1)) + 6 * g.W;
}

// One image row r of the adjoint filter applied to `nmaps` position maps at mp (plane stride P):
// G[m][col] = sum over positions p of w(p -> (r, col)) map_m[p], written to G + m * W.
template <typename T>
VAEISO_AI void adjoint_row(const T* mp, int64_t P, int nmaps, const T* wf, const Geometry& g,
                           int64_t r, T* vpad, T* G) {
  const int64_t ws = g.ws, Wo = g.Wo, lv = Wo + 2 * (ws - 1);
  const int64_t q = r + g.pad, lo = q - ws + 1;  // map rows lo .. q reach padded row q
  const int64_t t0 = std::max<int64_t>(0, -lo), t1 = std::min<int64_t>(ws, g.Ho - lo);
  for (int m = 0; m < nmaps; ++m) {
    T* vm = vpad + m * lv;
    if (t1 > t0) {
      fir(mp + m * P + (lo + t0) * Wo, Wo, wf + t0, t1 - t0, vm + ws - 1, Wo);
    } else {
      zero(vm + ws - 1, Wo);
    }
    fir(vm + g.pad, 1, wf, ws, G + m * g.W, g.W);
  }
}

template <bool L1, typename S, typename T>
VAEISO_AI void backward_tasks(const BwdArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t W = g.W, P = g.Ho * g.Wo;
  T* vpad = scratch;  // 4 x (Wo + 2 (ws - 1)), margins zero
  T* G = vpad + 4 * (g.Wo + 2 * (g.ws - 1));
  T* xr = G + 4 * W;
  T* yr = xr + W;
  zero(vpad, 4 * (g.Wo + 2 * (g.ws - 1)));
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t s = task % a.nstrips, nc = task / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t r0 = s * a.tr, r1 = std::min(g.H, r0 + a.tr);
    const T* mp = a.maps + nc * 4 * P;
    const T gn = a.grad[nc];
    const T gl = L1 ? a.grad_l1[nc] * a.inv_hw : T(0);
    for (int64_t r = r0; r < r1; ++r) {
      adjoint_row(mp, P, 4, a.wf, g, r, vpad, G);
      gather_row(a.x + n * a.sx[0] + c * a.sx[1] + r * a.sx[2], a.sx[3], W, xr);
      gather_row(a.y + n * a.sy[0] + c * a.sy[1] + r * a.sy[2], a.sy[3], W, yr);
      S* ox = a.gx + (nc * g.H + r) * W;
      S* oy = a.gy + (nc * g.H + r) * W;
      combine_row<L1>(G, xr, yr, gn, gl, W, ox, oy);
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
  const int64_t Wp = g.W + 2 * g.pad, rows = th + g.ws - 1;
  return rows * Wp + 3 * Wp + 4 * th * g.Wo + 3 * rows * g.Wo + 4 * g.Wo;
}

template <typename S, typename T>
VAEISO_AI void pairs_tasks(const PairArgs<S, T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t ws = g.ws, pad = g.pad, Wo = g.Wo, Wp = g.W + 2 * pad, rows = a.th + ws - 1;
  T* xrows = scratch;          // rows x Wp: the strip's base rows, zero-padded
  T* dr = xrows + rows * Wp;   // Wp
  T* pdd = dr + Wp;            // Wp
  T* pxd = pdd + Wp;           // Wp
  T* bst = pxd + Wp;           // 4 x th x Wo: mu_x, s_xx, mu_x^2 + C1, 2 s_xx + C2
  T* h = bst + 4 * a.th * Wo;  // 3 x rows x Wo
  T* v = h + 3 * rows * Wo;    // 3 x Wo
  T* lrow = v + 3 * Wo;        // Wo
  zero(scratch, rows * Wp + 3 * Wp);
  T *bmu = bst, *bsxx = bst + a.th * Wo, *bx1 = bsxx + a.th * Wo, *bx2 = bx1 + a.th * Wo;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t kc = task % a.nkc, strip_id = task / a.nkc;
    const int64_t s = strip_id % a.nstrips, nc = strip_id / a.nstrips, c = nc % g.C, n = nc / g.C;
    const int64_t o0 = s * a.th, o1 = std::min(g.Ho, o0 + a.th);
    const int64_t k0 = kc * a.kchunk, k1 = std::min(a.K, k0 + a.kchunk);
    const S* bp = a.base + n * a.sb[0] + c * a.sb[1];

    // Base statistics (moments x, xx), once for all k of the chunk; the base rows are kept.
    auto stage_base = [&](int64_t ar, int64_t r, const T** src) {
      T* xrow = xrows + r * Wp;
      gather_row(bp + ar * a.sb[2], a.sb[3], g.W, xrow + pad);
      for (int64_t j = 0; j < g.W; ++j) pdd[pad + j] = xrow[pad + j] * xrow[pad + j];
      src[0] = xrow;
      src[1] = pdd;
    };
    auto emit_base = [&](int64_t i, const T* vv) {
      const int64_t o = (i - o0) * Wo;
      for (int64_t j = 0; j < Wo; ++j) {
        const T mu = vv[j], sxx = clamp0(vv[Wo + j] - mu * mu);
        bmu[o + j] = mu;
        bsxx[o + j] = sxx;
        bx1[o + j] = mu * mu + a.C1;
        bx2[o + j] = T(2) * sxx + a.C2;
      }
    };
    strip_pass<2>(g, a.w, o0, o1, rows, h, v, stage_base, emit_base);

    // Per other: the moments d, dd, xd against the kept base rows.
    for (int64_t k = k0; k < k1; ++k) {
      const S* op = a.others + n * a.so[0] + k * a.so[1] + c * a.so[2];
      auto stage = [&](int64_t ar, int64_t r, const T** src) {
        const T* xrow = xrows + r * Wp;
        T* di = dr + pad;
        gather_row(op + ar * a.so[3], a.so[4], g.W, di);
        for (int64_t j = 0; j < g.W; ++j) {
          const T xv = xrow[pad + j], dv = di[j] - xv;
          di[j] = dv;
          pdd[pad + j] = dv * dv;
          pxd[pad + j] = xv * dv;
        }
        src[0] = dr;
        src[1] = pdd;
        src[2] = pxd;
      };
      double acc = 0;
      auto emit = [&](int64_t i, const T* vv) {
        const int64_t o = (i - o0) * Wo;
        const T *mu = bmu + o, *sxx = bsxx + o, *b1 = bx1 + o, *b2 = bx2 + o;
        for (int64_t j = 0; j < Wo; ++j)
          lrow[j] = one_minus_ssim_pre(mu[j], sxx[j], b1[j], b2[j], vv[j], vv[Wo + j], vv[2 * Wo + j], a.C1);
        T racc = T(0);
        for (int64_t j = 0; j < Wo; ++j) racc += lrow[j];
        acc += static_cast<double>(racc);
      };
      strip_pass<3>(g, a.w, o0, o1, rows, h, v, stage, emit);
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
VAEISO_AI void filter_tasks(const FilterArgs<T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t ws = g.ws, pad = g.pad, Wo = g.Wo, Wp = g.W + 2 * pad;
  if (a.transpose) {
    T* vpad = scratch;
    zero(vpad, Wo + 2 * (ws - 1));
    for (int64_t p = t0; p < t1; ++p) {
      for (int64_t r = 0; r < g.H; ++r)
        adjoint_row(a.src + p * g.Ho * Wo, g.Ho * Wo, 1, a.w, g, r, vpad, a.dst + (p * g.H + r) * g.W);
    }
    return;
  }
  // The whole plane is one strip of the pipeline.
  const int64_t rows = g.Ho + ws - 1;
  T* rb = scratch;    // Wp, margins zero
  T* h = rb + Wp;     // rows x Wo
  T* v = h + rows * Wo;  // Wo
  zero(rb, Wp);
  for (int64_t p = t0; p < t1; ++p) {
    auto stage = [&](int64_t ar, int64_t, const T** src) {
      std::memcpy(rb + pad, a.src + (p * g.H + ar) * g.W, g.W * sizeof(T));
      src[0] = rb;
    };
    auto emit = [&](int64_t i, const T* vv) { std::memcpy(a.dst + (p * g.Ho + i) * Wo, vv, Wo * sizeof(T)); };
    strip_pass<1>(g, a.w, 0, g.Ho, rows, h, v, stage, emit);
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
  a.th = strip_rows(g, 5, sizeof(T), g.N * g.C);
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
    std::vector<T> buf(scratch);
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
    std::vector<T> buf(scratch);
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
  a.th = strip_rows(g, 4, sizeof(T), g.N * g.C);
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
    std::vector<T> buf(scratch);
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
  const int64_t scratch =
      transpose ? g.Wo + 2 * (ws - 1) + g.W : (g.W + 2 * g.pad) + (g.Ho + ws - 1 + 1) * g.Wo;
  at::parallel_for(0, M, 1, [&](int64_t b, int64_t e) {
    std::vector<T> buf(scratch);
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
