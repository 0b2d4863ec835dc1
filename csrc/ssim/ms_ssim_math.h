// Per-window math of the per-channel SSIM statistics behind MS-SSIM and the fused SSIM + L1
// loss (docs/ops.md, ms_ssim and ssim_l1_loss), beside ssim_math.h: the contrast-structure term
//   cs = A2 / B2 = (2 s_xy + C2) / (s_xx + s_yy + C2),
// and its complement without cancellation, 1 - cs = (s_xx + s_yy - 2 s_xy) / B2 = s_dd / B2
// (s_dd the windowed variance of d = y - x, as in ssim_math.h).
#pragma once
#include "ssim/ssim_math.h"

namespace vaeiso::ssim {
VAEISO_ISA_BEGIN

template <typename T>
VAEISO_HD T one_minus_cs(const Stats<T>& s, T C2) {
  const T s_yy = clamp0(s.s_xx + T(2) * s.s_xd + s.s_dd);
  return s.s_dd / (s.s_xx + s_yy + C2);
}

// d(cs)/d(raw moments) times `scale`, in the layout of ssim_grad (ssim_math.h, Grad).
template <typename T>
VAEISO_HD Grad<T> cs_grad(const Stats<T>& st, T C2, T scale) {
  const T mu_x = st.mu_x, mu_y = st.mu_x + st.mu_d;
  const T s_xy = st.s_xx + st.s_xd;
  const T s_yy = clamp0(st.s_xx + T(2) * st.s_xd + st.s_dd);
  const T inv = T(1) / (st.s_xx + s_yy + C2);
  const T cs = (T(2) * s_xy + C2) * inv;
  const T ds = -cs * inv;      // dcs/ds_xx = dcs/ds_yy
  const T dxy = T(2) * inv;    // dcs/ds_xy
  Grad<T> g;
  g.mx = scale * (-T(2) * mu_x * ds - mu_y * dxy);
  g.my = scale * (-T(2) * mu_y * ds - mu_x * dxy);
  g.s = scale * ds;
  g.xy = scale * dxy;
  return g;
}

// The |d| term of the fused L1 loss: d|d|/dd is sign(d), 0 at d = 0.
template <typename T>
VAEISO_HD T sign0(T d) {
  return T(d > T(0)) - T(d < T(0));  // branch-free, so the CPU loop vectorises
}

VAEISO_ISA_END
}  // namespace vaeiso::ssim
