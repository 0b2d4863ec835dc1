// Per-window SSIM math shared by the CPU and CUDA kernels (docs/ops.md, ssim to ssim_l1_loss).
//
// The kernels filter the base image x and the difference d = y - x (never y itself): from the
// windowed moments mu_x, s_xx and mu_d, s_dd, s_xd everything follows without cancellation,
//   mu_y = mu_x + mu_d,  s_xy = s_xx + s_xd,  s_yy = s_xx + 2 s_xd + s_dd,
//   1 - SSIM = (mu_d^2 B2 + A1 s_dd) / (B1 B2),
//   A1 = 2 mu_x mu_y + C1, B1 = mu_x^2 + mu_y^2 + C1, A2 = 2 s_xy + C2, B2 = s_xx + s_yy + C2,
// so 1 - SSIM keeps its digits in float32 when y is a tiny perturbation of x. The variances
// are clamped at 0 against round-off (NaN passes through the clamp).
#pragma once
#include <cstdint>

#include "host_device.h"

namespace vaeiso::ssim {
VAEISO_ISA_BEGIN

template <typename T>
VAEISO_HD T clamp0(T v) {
  return v < T(0) ? T(0) : v;
}

// Windowed statistics of one output position (first and second raw moments in, central out).
template <typename T>
struct Stats {
  T mu_x, s_xx;        // base
  T mu_d, s_dd, s_xd;  // difference d = y - x
};

template <typename T>
VAEISO_HD Stats<T> stats_from_moments(T mu_x, T e_xx, T mu_d, T e_dd, T e_xd) {
  Stats<T> s;
  s.mu_x = mu_x;
  s.s_xx = clamp0(e_xx - mu_x * mu_x);
  s.mu_d = mu_d;
  s.s_dd = clamp0(e_dd - mu_d * mu_d);
  s.s_xd = e_xd - mu_x * mu_d;
  return s;
}

// 1 - SSIM at one position, in the cancellation-free form.
template <typename T>
VAEISO_HD T one_minus_ssim(const Stats<T>& s, T C1, T C2) {
  const T mu_y = s.mu_x + s.mu_d;
  const T s_yy = clamp0(s.s_xx + T(2) * s.s_xd + s.s_dd);
  const T A1 = T(2) * s.mu_x * mu_y + C1;
  const T B1 = s.mu_x * s.mu_x + mu_y * mu_y + C1;
  const T B2 = s.s_xx + s_yy + C2;
  return (s.mu_d * s.mu_d * B2 + A1 * s.s_dd) / (B1 * B2);
}

// The same with base-only terms precomputed once per position (ssim_pairs):
// bx1 = mu_x^2 + C1 and bx2 = 2 s_xx + C2.
template <typename T>
VAEISO_HD T one_minus_ssim_pre(T mu_x, T s_xx, T bx1, T bx2, T mu_d, T e_dd, T e_xd, T C1) {
  const T s_dd = clamp0(e_dd - mu_d * mu_d);
  const T s_xd = e_xd - mu_x * mu_d;
  const T mu_y = mu_x + mu_d;
  // B2 = s_xx + s_yy + C2 with s_yy = max(s_xx + 2 s_xd + s_dd, 0)
  const T s_yy = clamp0(s_xx + T(2) * s_xd + s_dd);
  const T B2 = bx2 - s_xx + s_yy;
  const T B1 = bx1 + mu_y * mu_y;
  const T A1 = T(2) * mu_x * mu_y + C1;
  return (mu_d * mu_d * B2 + A1 * s_dd) / (B1 * B2);
}

// Derivatives of SSIM at one position with respect to the raw moments of x and y:
// d/d(w*x) = mx, d/d(w*y) = my, d/d(w*x^2) = d/d(w*y^2) = s, d/d(w*xy) = xy.
// The backward pass turns them into gradients by filtering with the transposed window:
//   dL/dx = w^T*mx + 2 x w^T*s + y w^T*xy,   dL/dy = w^T*my + 2 y w^T*s + x w^T*xy.
// The variance clamp is treated as the identity here (it only acts on round-off).
template <typename T>
struct Grad {
  T mx, my, s, xy;
};

template <typename T>
VAEISO_HD Grad<T> ssim_grad(const Stats<T>& st, T C1, T C2, T scale) {
  const T mu_x = st.mu_x, mu_y = st.mu_x + st.mu_d;
  const T s_xy = st.s_xx + st.s_xd;
  const T s_yy = clamp0(st.s_xx + T(2) * st.s_xd + st.s_dd);
  const T A1 = T(2) * mu_x * mu_y + C1;
  const T A2 = T(2) * s_xy + C2;
  const T B1 = mu_x * mu_x + mu_y * mu_y + C1;
  const T B2 = st.s_xx + s_yy + C2;
  const T inv = T(1) / (B1 * B2);  // the only division
  const T S = A1 * A2 * inv;
  const T ds = -S * (B1 * inv);   // dSSIM/ds_xx = dSSIM/ds_yy = -S / B2
  const T dxy = T(2) * A1 * inv;  // dSSIM/ds_xy
  const T t = T(2) * A2 * inv, u = T(2) * S * (B2 * inv);
  Grad<T> g;
  // partials at fixed central moments, then the chain through s = E[..] - mu mu
  g.mx = scale * (mu_y * t - mu_x * u - T(2) * mu_x * ds - mu_y * dxy);
  g.my = scale * (mu_x * t - mu_y * u - T(2) * mu_y * ds - mu_x * dxy);
  g.s = scale * ds;
  g.xy = scale * dxy;
  return g;
}

// The contrast-structure term of MS-SSIM's upper levels, cs = A2 / B2, and its complement
// without cancellation: 1 - cs = (s_xx + s_yy - 2 s_xy) / B2 = s_dd / B2.
template <typename T>
VAEISO_HD T one_minus_cs(const Stats<T>& s, T C2) {
  const T s_yy = clamp0(s.s_xx + T(2) * s.s_xd + s.s_dd);
  return s.s_dd / (s.s_xx + s_yy + C2);
}

// d(cs)/d(raw moments) times `scale`, in the layout of ssim_grad.
template <typename T>
VAEISO_HD Grad<T> cs_grad(const Stats<T>& st, T C2, T scale) {
  const T mu_x = st.mu_x, mu_y = st.mu_x + st.mu_d;
  const T s_xy = st.s_xx + st.s_xd;
  const T s_yy = clamp0(st.s_xx + T(2) * st.s_xd + st.s_dd);
  const T inv = T(1) / (st.s_xx + s_yy + C2);
  const T cs = (T(2) * s_xy + C2) * inv;
  const T ds = -cs * inv;    // dcs/ds_xx = dcs/ds_yy
  const T dxy = T(2) * inv;  // dcs/ds_xy
  Grad<T> g;
  g.mx = scale * (-T(2) * mu_x * ds - mu_y * dxy);
  g.my = scale * (-T(2) * mu_y * ds - mu_x * dxy);
  g.s = scale * ds;
  g.xy = scale * dxy;
  return g;
}

// 1 - v at one position, v = cs (CS) or SSIM, and its derivative maps.
template <bool CS, typename T>
VAEISO_HD T one_minus_value(const Stats<T>& s, T C1, T C2) {
  if constexpr (CS) {
    return one_minus_cs(s, C2);
  } else {
    return one_minus_ssim(s, C1, C2);
  }
}

template <bool CS, typename T>
VAEISO_HD Grad<T> value_grad(const Stats<T>& s, T C1, T C2, T scale) {
  if constexpr (CS) {
    return cs_grad(s, C2, scale);
  } else {
    return ssim_grad(s, C1, C2, scale);
  }
}

// The |d| term of the fused L1 loss: d|d|/dd is sign(d), 0 at d = 0.
template <typename T>
VAEISO_HD T sign0(T d) {
  return T(d > T(0)) - T(d < T(0));  // branch-free, so the CPU loop vectorises
}

// MS-SSIM's pyramid step: 2x2 average pooling as avg_pool2d(kernel_size=2, padding=(H % 2, W % 2))
// computes it, zero padding counted (every window divides by 4). Output row i averages input rows
// 2i - H % 2 and 2i + 1 - H % 2 (row -1 is padding), likewise for columns, so an odd side gains
// one padded row or column at the start and none at the end; (H + 1) / 2 rows come out. Every
// input pixel lies in exactly one window: the adjoint gives each pixel a quarter of its window's
// gradient.
VAEISO_HD int64_t pooled_size(int64_t n) { return (n + 1) / 2; }

// The output index whose window holds input index r of a side of n.
VAEISO_HD int64_t pool_window_of(int64_t r, int64_t n) { return (r + n % 2) / 2; }

// Output (i, j) of one H x W plane; at(r, c) reads input (r, c) in A. Rows r + 1 and columns
// c + 1 are always inside the plane; r and c are -1 at an odd side's padded start.
template <typename A, typename At>
VAEISO_HD A pool_at(const At& at, int64_t H, int64_t W, int64_t i, int64_t j) {
  const int64_t r = 2 * i - H % 2, c = 2 * j - W % 2;
  const A bottom = (c >= 0 ? at(r + 1, c) : A(0)) + at(r + 1, c + 1);
  const A top = r >= 0 ? (c >= 0 ? at(r, c) : A(0)) + at(r, c + 1) : A(0);
  return A(0.25) * (top + bottom);
}

// The adjoint at one input pixel, from its window's gradient g.
template <typename A>
VAEISO_HD A pool_share(A g) {
  return A(0.25) * g;
}

// The Gaussian window is computed in double on the host (gaussian_window in ssim.cpp) and
// handed to the kernels; nothing device-specific here.

VAEISO_ISA_END
}  // namespace vaeiso::ssim
