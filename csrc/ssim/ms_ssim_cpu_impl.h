// CPU passes of the per-channel SSIM statistics (ms_ssim_kernels.h). Included after
// ssim_cpu_impl.h in the same per-ISA translation units (ssim_cpu_default.cpp, ssim_cpu_avx2.cpp),
// so that they reuse its FIR loops and strip layout: tasks of (image, channel, strip of rows),
// per-task sums in fixed slots added in a fixed order (results independent of the thread count).
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including ms_ssim_cpu_impl.h"
#endif
#include <cmath>

#include "ssim/ms_ssim_cpu_passes.h"
#include "ssim/ms_ssim_math.h"

namespace vaeiso::ssim {
VAEISO_MS_SSIM_DECLARE_PASSES(VAEISO_CPU_ISA)
}

// No anonymous namespace, as in ssim_cpu_impl.h: VAEISO_CPU_ISA keeps this ISA build's copy apart.
namespace vaeiso::ssim::VAEISO_CPU_ISA {

template <typename T>
struct ChanFwdArgs {
  const T* x;
  const T* y;
  int64_t sx[4], sy[4];
  const T* w;
  Geometry g;
  int64_t th, nstrips;
  T C1, C2, scale;
  bool with_l1;
  double* part_v;   // [N * C * nstrips]: sum of 1 - v over the task's positions
  double* part_l1;  // [N * C * nstrips]: sum of |d| over the task's own image rows
  T* maps;          // nullptr when no backward is needed
};

template <bool CS, typename T>
VAEISO_AI void channel_forward_tasks(const ChanFwdArgs<T>& a, int64_t t0, int64_t t1, T* scratch) {
  const Geometry& g = a.g;
  const int64_t ws = g.ws, pad = g.pad, Wo = g.Wo, Wp = g.W + 2 * pad, rows = a.th + ws - 1;
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
    const int64_t o0 = s * a.th, o1 = std::min(g.Ho, o0 + a.th), nrows = o1 - o0 + ws - 1;
    // Image rows whose |d| this strip counts: [o0 - pad, o1 - pad), the first and last strips
    // extended to the image's edges, so every row is counted by exactly one strip.
    const int64_t l1_lo = s == 0 ? 0 : o0 - pad, l1_hi = s + 1 == a.nstrips ? g.H : o1 - pad;
    const T* xp = a.x + n * a.sx[0] + c * a.sx[1];
    const T* yp = a.y + n * a.sy[0] + c * a.sy[1];
    double l1 = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const int64_t ar = o0 + r - pad;
      if (ar < 0 || ar >= g.H) {
        for (int m = 0; m < 5; ++m) zero(h + (m * rows + r) * Wo, Wo);
        continue;
      }
      stage_row(xp + ar * a.sx[2], a.sx[3], yp + ar * a.sy[2], a.sy[3], g.W, pad, xr, dr, pxx, pdd, pxd);
      const T* di = dr + pad;  // d = y - x of this row, for the L1 sum
      if (a.with_l1 && ar >= l1_lo && ar < l1_hi) {
        T racc = T(0);
        for (int64_t j = 0; j < g.W; ++j) racc += std::abs(di[j]);
        l1 += static_cast<double>(racc);
      }
      filter_staged_row(xr, dr, pxx, pdd, pxd, a.w, ws, h, rows, r, Wo);
    }
    double acc = 0;
    const int64_t P = g.Ho * Wo;
    for (int64_t i = o0; i < o1; ++i) {
      for (int m = 0; m < 5; ++m) fir(h + (m * rows + (i - o0)) * Wo, Wo, a.w, ws, v + m * Wo, Wo);
      const T *mx = v, *md = v + Wo, *exx = v + 2 * Wo, *edd = v + 3 * Wo, *exd = v + 4 * Wo;
      for (int64_t j = 0; j < Wo; ++j) {
        const Stats<T> st = stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]);
        lrow[j] = CS ? one_minus_cs(st, a.C2) : one_minus_ssim(st, a.C1, a.C2);
      }
      T racc = T(0);
      for (int64_t j = 0; j < Wo; ++j) racc += lrow[j];
      acc += static_cast<double>(racc);
      if (a.maps != nullptr) {
        T* m0 = a.maps + nc * 4 * P + i * Wo;
        T *m1 = m0 + P, *m2 = m0 + 2 * P, *m3 = m0 + 3 * P;
        for (int64_t j = 0; j < Wo; ++j) {
          const Stats<T> st = stats_from_moments(mx[j], exx[j], md[j], edd[j], exd[j]);
          const Grad<T> gr = CS ? cs_grad(st, a.C2, a.scale) : ssim_grad(st, a.C1, a.C2, a.scale);
          m0[j] = gr.mx;
          m1[j] = gr.my;
          m2[j] = gr.s;
          m3[j] = gr.xy;
        }
      }
    }
    a.part_v[task] = acc;
    a.part_l1[task] = l1;
  }
}

template <typename T>
struct ChanBwdArgs {
  const T* grad;     // (N, C) dense
  const T* grad_l1;  // (N, C) dense, or nullptr
  const T* x;
  const T* y;
  int64_t sx[4], sy[4];
  const T* maps;  // (N, C, 4, Ho, Wo) dense
  const T* wf;    // flipped window
  Geometry g;
  int64_t tr, nstrips;
  T inv_hw;
  T* gx;
  T* gy;
};

template <typename T>
VAEISO_AI void channel_backward_tasks(const ChanBwdArgs<T>& a, int64_t t0, int64_t t1, T* scratch) {
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
    const T gl = a.grad_l1 != nullptr ? a.grad_l1[nc] * a.inv_hw : T(0);
    for (int64_t r = r0; r < r1; ++r) {
      adjoint_row(mp, P, 4, a.wf, g, r, vpad, G);
      gather_row(a.x + n * a.sx[0] + c * a.sx[1] + r * a.sx[2], a.sx[3], W, xr);
      gather_row(a.y + n * a.sy[0] + c * a.sy[1] + r * a.sy[2], a.sy[3], W, yr);
      T* ox = a.gx + (nc * g.H + r) * W;
      T* oy = a.gy + (nc * g.H + r) * W;
      combine_row(G, xr, yr, gn, W, ox, oy);
      if (a.grad_l1 != nullptr) {
        for (int64_t j = 0; j < W; ++j) {
          const T t = gl * sign0(yr[j] - xr[j]);
          ox[j] -= t;
          oy[j] += t;
        }
      }
    }
  }
}

template <typename S>
void channels_forward(const S* x, const int64_t* sx, const S* y, const int64_t* sy,
                      const double* window, const Geometry& g, Constants k, ChannelMode mode,
                      double* one_minus, double* l1, S* maps) {
  using T = S;
  const auto w = cast_window<T>(window, g.ws, false);
  ChanFwdArgs<T> a{};
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
      channel_forward_tasks<true>(a, b, e, buf.data());
    } else {
      channel_forward_tasks<false>(a, b, e, buf.data());
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
void channels_backward(const S* grad, const S* grad_l1, const S* x, const int64_t* sx, const S* y,
                       const int64_t* sy, const S* maps, const double* window, const Geometry& g,
                       S* grad_x, S* grad_y) {
  using T = S;
  const auto wf = cast_window<T>(window, g.ws, true);
  ChanBwdArgs<T> a{};
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
    channel_backward_tasks(a, b, e, buf.data());
  });
}

// float and double only: ops.ms_ssim / ssim_l1_loss compute the half types in float32 (the
// pyramid and the product over levels run in torch ops there), and ms_ssim.cpp refuses them.
#define VAEISO_MS_SSIM_INSTANTIATE(S)                                                             \
  template void channels_forward<S>(const S*, const int64_t*, const S*, const int64_t*,          \
                                    const double*, const Geometry&, Constants, ChannelMode,      \
                                    double*, double*, S*);                                       \
  template void channels_backward<S>(const S*, const S*, const S*, const int64_t*, const S*,     \
                                     const int64_t*, const S*, const double*, const Geometry&,   \
                                     S*, S*);
VAEISO_MS_SSIM_INSTANTIATE(float)
VAEISO_MS_SSIM_INSTANTIATE(double)
#undef VAEISO_MS_SSIM_INSTANTIATE

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
