// The SSIM family's passes, one implementation per device (ssim_cpu.cpp, ssim_cuda.cu), both
// built on ssim_math.h. ssim.cpp checks arguments and allocates; these only compute.
//
// Conventions: images are read through their strides (any layout, expanded dims included);
// `maps` is dense (N, C, 4, Ho, Wo) in the accumulation dtype (float for half types) and holds
// d(value)/d(moment) per output position, already divided by C*Ho*Wo (ssim_math.h, Grad);
// gradients and filter outputs are dense. `window` holds the Gaussian taps, normalised in
// double on the host.
#pragma once
#include <ATen/core/Tensor.h>

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

// out (N,): the mean over channels and positions of SSIM, or of 1 - SSIM when `loss`;
// maps (when not empty): the per-position derivatives of that value for ssim_backward.
void forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                 const Geometry& g, Constants k, bool loss, at::Tensor& out, at::Tensor& maps);
// grad_x, grad_y (dense (N, C, H, W), input dtype) = grad[n] * d(value)/d(x, y), from `maps`.
void backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                  const at::Tensor& maps, const std::vector<double>& window, const Geometry& g,
                  at::Tensor& grad_x, at::Tensor& grad_y);
// out (N, K) = 1 - SSIM(base[n], others[n, k]), statistics of base computed once per tile.
void pairs_cpu(const at::Tensor& base, const at::Tensor& others, const std::vector<double>& window,
               const Geometry& g, Constants k, at::Tensor& out);
// Separable window filter of dense planes src (M, Hi, Wi) into dense dst: forward maps an image
// to its Ho x Wo positions, transpose maps positions back onto the image (the adjoint).
void filter_cpu(const at::Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,
                bool transpose, at::Tensor& dst);

#ifdef VAEISO_WITH_CUDA
void forward_cuda(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                  const Geometry& g, Constants k, bool loss, at::Tensor& out, at::Tensor& maps);
void backward_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                   const at::Tensor& maps, const std::vector<double>& window, const Geometry& g,
                   at::Tensor& grad_x, at::Tensor& grad_y);
void pairs_cuda(const at::Tensor& base, const at::Tensor& others, const std::vector<double>& window,
                const Geometry& g, Constants k, at::Tensor& out);
void filter_cuda(const at::Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,
                 bool transpose, at::Tensor& dst);
#endif

// The CUDA kernels take the window by value: at most this many taps there.
constexpr int64_t kMaxCudaWindow = 255;

}  // namespace vaeiso::ssim
