// Host side of the per-channel SSIM op behind MS-SSIM and the fused SSIM + L1 loss (docs/ops.md,
// ms_ssim and ssim_l1_loss): argument checks, allocation, and the device kernels of ms_ssim_kernels.h.
// The pyramid, the normalisation and the product over levels are composed in
// vaeiso_ext/ops/_ms_ssim.py, which also registers the autograd.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common.h"
#include "ssim/ms_ssim_kernels.h"

namespace vaeiso::ssim {
namespace {

constexpr const char* kOp = "ssim_channels";

// The per-channel kernels take float32 and float64: ops.ms_ssim and ops.ssim_l1_loss compute
// the half types in float32 (their pyramid and product over levels are torch ops).
void check_not_half(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x: expected float32 or float64 (vaeiso_ext.ops.ms_ssim and ssim_l1_loss compute "
              "half types in float32), got ", x.scalar_type());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_channels(
    const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma, double k1,
    double k2, double data_range, bool same_padding, bool cs_only, bool with_l1, bool need_maps) {
  check_window(kOp, window_size, sigma);
  const Constants k = check_constants(kOp, k1, k2, data_range);
  check_image(kOp, x, "x", window_size);
  check_pair(kOp, y, "y", x, "x", /*mixed=*/false);
  check_not_half(kOp, x);
  c10::DeviceGuard guard(x.device());
  const Geometry g =
      make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), window_size, same_padding);
  auto one_minus = at::empty({g.N, g.C}, x.options());
  auto l1 = at::empty(with_l1 ? std::vector<int64_t>{g.N, g.C} : std::vector<int64_t>{0}, x.options());
  auto maps = at::empty(need_maps ? std::vector<int64_t>{g.N, g.C, 4, g.Ho, g.Wo} : std::vector<int64_t>{0},
                        x.options());
  if (g.N == 0) return {one_minus, l1, maps};
  const auto window = gaussian_window(window_size, sigma);
  VAEISO_ON_DEVICE(channels_forward, x, x, y, window, g, k, ChannelMode{cs_only, with_l1}, one_minus,
                   l1, maps);
  return {one_minus, l1, maps};
}

std::tuple<at::Tensor, at::Tensor> ssim_channels_backward(
    const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x, const at::Tensor& y,
    const at::Tensor& maps, int64_t window_size, double sigma, bool same_padding) {
  const char* op = "ssim_channels_backward";
  check_window(op, window_size, sigma);
  check_image(op, x, "x", window_size);
  check_pair(op, y, "y", x, "x", /*mixed=*/false);
  check_not_half(op, x);
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == C, op,
              ": grad: expected shape (", N, ", ", C, "), got ", grad.sizes());
  TORCH_CHECK(grad_l1.numel() == 0 || (grad_l1.dim() == 2 && grad_l1.size(0) == N && grad_l1.size(1) == C),
              op, ": grad_l1: expected shape (", N, ", ", C, ") or an empty tensor, got ",
              grad_l1.sizes());
  check_same_dtype(grad, x, "ssim_channels_backward: grad", "x");
  check_same_device(grad, x, "ssim_channels_backward: grad", "x");
  if (grad_l1.numel() > 0) {
    check_same_dtype(grad_l1, x, "ssim_channels_backward: grad_l1", "x");
    check_same_device(grad_l1, x, "ssim_channels_backward: grad_l1", "x");
  }
  const Geometry g = make_geometry(N, C, x.size(2), x.size(3), window_size, same_padding);
  TORCH_CHECK(maps.dim() == 5 && maps.size(0) == g.N && maps.size(1) == g.C && maps.size(2) == 4 &&
                  maps.size(3) == g.Ho && maps.size(4) == g.Wo,
              op, ": maps: expected shape (", g.N, ", ", g.C, ", 4, ", g.Ho, ", ", g.Wo,
              ") from ssim_channels(need_maps=True), got ", maps.sizes());
  check_same_dtype(maps, x, "ssim_channels_backward: maps", "x");
  check_same_device(maps, x, "ssim_channels_backward: maps", "x");
  c10::DeviceGuard guard(x.device());
  auto gx = at::empty(x.sizes(), x.options());
  auto gy = at::empty(x.sizes(), x.options());
  if (g.N == 0) return {gx, gy};
  const auto window = gaussian_window(window_size, sigma);
  const auto gc = grad.contiguous();
  const auto glc = grad_l1.contiguous();
  const auto mc = maps.contiguous();
  VAEISO_ON_DEVICE(channels_backward, x, gc, glc, x, y, mc, window, g, gx, gy);
  return {gx, gy};
}

// Schemas: csrc/registration.cpp.
TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("ssim_channels", &ssim_channels);
  m.impl("ssim_channels_backward", &ssim_channels_backward);
}

#ifdef VAEISO_WITH_CUDA
TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("ssim_channels", &ssim_channels);
  m.impl("ssim_channels_backward", &ssim_channels_backward);
}
#endif

}  // namespace vaeiso::ssim
