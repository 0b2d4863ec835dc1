// The SSIM family's entry points, one implementation per device (ssim_cpu.cpp on ssim_cpu_impl.h,
// ssim_cuda.cu on ssim_cuda_tile.cuh), both built on ssim_math.h. ssim.cpp checks arguments and
// allocates; these only compute.
//
// Conventions: images are read through their strides (any layout, expanded dims included);
// `maps` is dense (N, C, 4, Ho, Wo) in the accumulation dtype (float for half types) and holds
// d(one_minus[n, c])/d(moment) per output position, already divided by Ho*Wo (ssim_math.h,
// Grad); gradients and filter outputs are dense. `window` holds the Gaussian taps, normalised
// in double on the host.
#pragma once
#include "common.h"

#include <vector>

namespace vaeiso::ssim {

struct Geometry {
  int64_t N, C, H, W;  // image
  int64_t ws, pad;     // window taps, zero padding on each side (0 for "valid", ws/2 for "same")
  int64_t Ho, Wo;      // output positions: H + 2 pad - ws + 1
  int64_t positions() const { return Ho * Wo; }
};

inline Geometry make_geometry(int64_t N, int64_t C, int64_t H, int64_t W, int64_t ws, bool same) {
  const int64_t pad = same ? ws / 2 : 0;
  return Geometry{N, C, H, W, ws, pad, H + 2 * pad - ws + 1, W + 2 * pad - ws + 1};
}

struct Constants {
  double C1, C2;
};

// Which terms the per-(image, channel) pass computes besides the mean of 1 - v.
struct Terms {
  bool cs_only;  // v = cs (the contrast-structure term, MS-SSIM's upper levels) instead of SSIM
  bool with_l1;  // also the mean |y - x| per channel (the fused SSIM + L1 loss)
};

// The entry points of one device, `dev` = cpu (ssim_cpu.cpp) or cuda (ssim_cuda.cu):
//  forward_<dev>: one_minus (N, C) dense, accumulation dtype: the mean over positions of 1 - v,
//    v = SSIM or cs; l1 (N, C) (when terms.with_l1): the mean |y - x| over the channel's pixels;
//    maps (when not empty): the per-position derivatives of one_minus for the backward.
//  backward_<dev>: grad_x, grad_y (dense (N, C, H, W), compute dtype) = sum over (n, c) of
//    grad[n, c] d(one_minus[n, c]) + grad_l1[n, c] d(l1[n, c]), from `maps`; grad and grad_l1
//    in the accumulation dtype, grad_l1 empty when there is no L1 term.
//  pairs_<dev>: out (N, K) = 1 - SSIM(base[n], others[n, k]), statistics of base computed once
//    per tile.
//  filter_<dev>: separable window filter of dense planes src (M, Hi, Wi) into dense dst: forward
//    maps an image to its Ho x Wo positions, transpose maps positions back onto the image (the
//    adjoint).
//  pool_<dev>: MS-SSIM's 2x2 average pooling (ssim_math.h, pool_at) of dense planes src (M, H, W)
//    into dense dst (M, (H + 1) / 2, (W + 1) / 2), or its adjoint from dense src (M, Ho, Wo) into
//    dst (M, H, W) when transpose.
#define VAEISO_SSIM_DECLARE_ENTRIES(dev)                                                                               \
  void forward_##dev(const Tensor& x, const Tensor& y, const std::vector<double>& window, const Geometry& g,           \
                     Constants k, Terms terms, Tensor& one_minus, Tensor& l1, Tensor& maps);                           \
  void backward_##dev(const Tensor& grad, const Tensor& grad_l1, const Tensor& x, const Tensor& y, const Tensor& maps, \
                      const std::vector<double>& window, const Geometry& g, Tensor& grad_x, Tensor& grad_y);           \
  void pairs_##dev(const Tensor& base, const Tensor& others, const std::vector<double>& window, const Geometry& g,     \
                   Constants k, Tensor& out);                                                                          \
  void filter_##dev(const Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad, bool transpose,     \
                    Tensor& dst);                                                                                      \
  void pool_##dev(const Tensor& src, bool transpose, Tensor& dst);

VAEISO_SSIM_DECLARE_ENTRIES(cpu)
#ifdef VAEISO_WITH_CUDA
VAEISO_SSIM_DECLARE_ENTRIES(cuda)
#endif
#undef VAEISO_SSIM_DECLARE_ENTRIES

// The CUDA kernels take the window by value: at most this many taps there.
constexpr int64_t kMaxCudaWindow = 255;

}  // namespace vaeiso::ssim
