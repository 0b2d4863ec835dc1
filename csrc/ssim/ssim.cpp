// The SSIM family on any device (docs/ops.md, ssim to ssim_l1_loss): argument checks, the
// Gaussian window, output allocation and the device kernels of ssim_kernels.h. `ssim_forward` /
// `ssim_backward` are the one per-(image, channel) SSIM pass under ssim, one_minus_ssim,
// ms_ssim and ssim_l1_loss (their reductions and autograd live in vaeiso_ext/ops/_ssim.py);
// plus the composite public ops `ssim` (1 - the channel mean of ssim_forward) and
// `ssim_metric_gram` (window filters and two GEMMs, see docs/design.md, performance rules).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "common.h"
#include "cpu_workspace.h"
#include "gemm_policy.h"
#include "ssim/ssim_kernels.h"

namespace vaeiso::ssim {
namespace {
// Argument checks (for direct callers of torch.ops.vaeiso: the Python wrappers check first,
// with the public function's name) and the window.

// Normalised in double on the host, as docs/ops.md says.
std::vector<double> gaussian_window(int64_t ws, double sigma) {
  std::vector<double> w(ws);
  const double r = static_cast<double>(ws / 2);
  double sum = 0;
  for (int64_t i = 0; i < ws; ++i) {
    const double t = static_cast<double>(i) - r;
    w[i] = std::exp(-(t * t) / (2.0 * sigma * sigma));
    sum += w[i];
  }
  for (auto& v : w) v /= sum;
  return w;
}

bool parse_padding(const char* op, c10::string_view padding) {
  TORCH_CHECK(padding == "valid" || padding == "same", op,
              ": padding: expected \"valid\" or \"same\", got \"", std::string(padding), "\"");
  return padding == "same";
}

void check_window(const char* op, int64_t ws, double sigma) {
  TORCH_CHECK(ws >= 1 && ws % 2 == 1, op, ": window_size: expected an odd positive integer, got ",
              ws);
  TORCH_CHECK(std::isfinite(sigma) && sigma > 0, op, ": sigma: expected a positive number, got ",
              sigma);
}

Constants check_constants(const char* op, double k1, double k2, double data_range) {
  TORCH_CHECK(std::isfinite(data_range) && data_range > 0, op,
              ": data_range: expected a positive number, got ", data_range);
  TORCH_CHECK(std::isfinite(k1) && k1 > 0, op, ": k1: expected a positive number, got ", k1);
  TORCH_CHECK(std::isfinite(k2) && k2 > 0, op, ": k2: expected a positive number, got ", k2);
  return Constants{(k1 * data_range) * (k1 * data_range), (k2 * data_range) * (k2 * data_range)};
}

void check_device(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() || t.device().is_cuda(), op, ": ", name,
              ": expected a CPU or CUDA tensor, got one on ", t.device());
#ifndef VAEISO_WITH_CUDA
  TORCH_CHECK(!t.is_cuda(), op, ": ", name,
              ": vaeiso_ext was built without CUDA kernels; rebuild with a CUDA toolkit");
#endif
}

// x: (N, C, H, W) image batch; checks dtype, device and that the window fits.
void check_image(const char* op, const at::Tensor& x, const char* name, int64_t ws) {
  TORCH_CHECK(x.dim() == 4, op, ": ", name, ": expected a 4-D tensor (N, C, H, W), got shape ",
              x.sizes());
  const std::string label = std::string(op) + ": " + name;
  check_float_dtype(x, label.c_str());
  check_device(op, x, name);
  TORCH_CHECK(x.size(1) >= 1, op, ": ", name, ": expected at least one channel, got shape ",
              x.sizes());
  TORCH_CHECK(ws <= x.size(2) && ws <= x.size(3), op, ": window_size: the window (", ws,
              ") is larger than the image (H=", x.size(2), ", W=", x.size(3),
              "); use a smaller window_size or larger images");
#ifdef VAEISO_WITH_CUDA
  TORCH_CHECK(!x.is_cuda() || ws <= kMaxCudaWindow, op, ": window_size: at most ",
              kMaxCudaWindow, " taps on CUDA, got ", ws);
#endif
}

// y against x: same shape and device; same dtype, or (the losses, `mixed`) autocast's half /
// float32 mix. Returns the dtype to compute in and of the output.
at::ScalarType check_pair(const char* op, const at::Tensor& y, const char* yname,
                          const at::Tensor& x, const char* xname, bool mixed = false) {
  TORCH_CHECK(y.sizes() == x.sizes(), op, ": ", yname, ": expected shape ", x.sizes(),
              " (the shape of ", xname, "), got ", y.sizes());
  const std::string label = std::string(op) + ": " + yname;
  check_same_device(y, x, label.c_str(), xname);
  if (mixed) {
    check_float_dtype(y, label.c_str());
    return loss_pair_dtype(y, x, label.c_str(), xname);
  }
  check_same_dtype(y, x, label.c_str(), xname);
  return x.scalar_type();
}

at::ScalarType acc_type(const at::Tensor& x) { return vaeiso::acc_type(x.scalar_type()); }

}  // namespace

// The one SSIM pass: per (image, channel) the mean of 1 - v (v = SSIM, or cs when `cs_only`),
// the mean |y - x| when `with_l1`, and the derivative maps when `need_maps`. Outputs in the
// accumulation dtype (float32 for the half types and autocast's half / float32 mix).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_forward(
    const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma, double k1,
    double k2, double data_range, bool same_padding, bool cs_only, bool with_l1, bool need_maps) {
  const char* op = "ssim_forward";
  check_window(op, window_size, sigma);
  const Constants k = check_constants(op, k1, k2, data_range);
  check_image(op, x, "x", window_size);
  // A half prediction against a float32 target (or the reverse) computes in float32; the half
  // input is converted once (the kernels take one dtype).
  const auto dt = check_pair(op, y, "y", x, "x", /*mixed=*/true);
  c10::DeviceGuard guard(x.device());
  const Geometry g =
      make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), window_size, same_padding);
  const auto acc_opts = x.options().dtype(vaeiso::acc_type(dt));
  auto one_minus = at::empty({g.N, g.C}, acc_opts);
  auto l1 = with_l1 ? at::empty({g.N, g.C}, acc_opts) : at::empty({0}, acc_opts);
  // The maps live from the forward to the backward: on the CPU from the kept cache.
  auto maps = !need_maps ? at::empty({0}, acc_opts)
              : x.is_cuda() ? at::empty({g.N, g.C, 4, g.Ho, g.Wo}, acc_opts)
                            : kept_empty({g.N, g.C, 4, g.Ho, g.Wo}, acc_opts);
  if (g.N == 0) return {one_minus, l1, maps};
  const auto window = gaussian_window(window_size, sigma);
  const auto xc = x.to(dt), yc = y.to(dt);
  VAEISO_ON_DEVICE(forward, x, xc, yc, window, g, k, Mode{cs_only, with_l1}, one_minus, l1, maps);
  return {one_minus, l1, maps};
}

std::tuple<at::Tensor, at::Tensor> ssim_backward(const at::Tensor& grad, const at::Tensor& grad_l1,
                                                 const at::Tensor& x, const at::Tensor& y,
                                                 const at::Tensor& maps, int64_t window_size,
                                                 double sigma, bool same_padding) {
  const char* op = "ssim_backward";
  check_window(op, window_size, sigma);
  check_image(op, x, "x", window_size);
  const auto dt = check_pair(op, y, "y", x, "x", /*mixed=*/true);
  const auto acc = vaeiso::acc_type(dt);
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == C, op,
              ": grad: expected shape (", N, ", ", C, "), got ", grad.sizes());
  check_float_dtype(grad, "ssim_backward: grad");
  check_same_device(grad, x, "ssim_backward: grad", "x");
  const bool l1 = grad_l1.numel() > 0;
  TORCH_CHECK(!l1 || (grad_l1.dim() == 2 && grad_l1.size(0) == N && grad_l1.size(1) == C), op,
              ": grad_l1: expected shape (", N, ", ", C, ") or an empty tensor, got ", grad_l1.sizes());
  if (l1) {
    check_float_dtype(grad_l1, "ssim_backward: grad_l1");
    check_same_device(grad_l1, x, "ssim_backward: grad_l1", "x");
  }
  const Geometry g = make_geometry(N, C, x.size(2), x.size(3), window_size, same_padding);
  TORCH_CHECK(maps.dim() == 5 && maps.size(0) == g.N && maps.size(1) == g.C && maps.size(2) == 4 &&
                  maps.size(3) == g.Ho && maps.size(4) == g.Wo,
              op, ": maps: expected shape (", g.N, ", ", g.C, ", 4, ", g.Ho, ", ", g.Wo,
              ") from ssim_forward(need_maps=True), got ", maps.sizes());
  TORCH_CHECK(maps.scalar_type() == acc, op, ": maps: expected dtype ", acc, ", got ",
              maps.scalar_type());
  check_same_device(maps, x, "ssim_backward: maps", "x");
  c10::DeviceGuard guard(x.device());
  // Each gradient has its input's dtype; a mixed pair computes in float32 and rounds once.
  // On the CPU from the kept cache (cpu_workspace.h): no fresh heap block per call.
  const auto gopts = x.options().dtype(dt);
  auto gx = x.is_cuda() ? at::empty(x.sizes(), gopts) : kept_empty(x.sizes(), gopts);
  auto gy = x.is_cuda() ? at::empty(x.sizes(), gopts) : kept_empty(x.sizes(), gopts);
  if (g.N > 0) {
    const auto window = gaussian_window(window_size, sigma);
    const auto gc = grad.to(acc).contiguous();
    const auto glc = l1 ? grad_l1.to(acc).contiguous() : grad_l1;
    const auto mc = maps.contiguous();
    const auto xc = x.to(dt), yc = y.to(dt);
    VAEISO_ON_DEVICE(backward, x, gc, glc, xc, yc, mc, window, g, gx, gy);
  }
  return {gx.to(x.scalar_type()), gy.to(y.scalar_type())};
}

at::Tensor ssim_pairs(const at::Tensor& base, const at::Tensor& others, int64_t window_size,
                      double sigma, double k1, double k2, double data_range,
                      c10::string_view padding) {
  const char* op = "ssim_pairs";
  const bool same = parse_padding(op, padding);
  check_window(op, window_size, sigma);
  const Constants k = check_constants(op, k1, k2, data_range);
  check_image(op, base, "base", window_size);
  TORCH_CHECK(others.dim() == 5 && others.size(0) == base.size(0) &&
                  others.sizes().slice(2) == base.sizes().slice(1),
              op, ": others: expected shape (", base.size(0), ", K, ", base.size(1), ", ",
              base.size(2), ", ", base.size(3), ") for base of shape ", base.sizes(), ", got ",
              others.sizes());
  check_same_dtype(others, base, "ssim_pairs: others", "base");
  check_same_device(others, base, "ssim_pairs: others", "base");
  c10::DeviceGuard guard(base.device());
  const Geometry g =
      make_geometry(base.size(0), base.size(1), base.size(2), base.size(3), window_size, same);
  auto out = at::empty({g.N, others.size(1)}, base.options());
  if (out.numel() == 0) return out;
  const auto window = gaussian_window(window_size, sigma);
  VAEISO_ON_DEVICE(pairs, base, base, others, window, g, k, out);
  return out;
}

// Separable window filter over the last two dims of t (any leading dims). Forward: an image
// (.., H, W) to its positions (.., Ho, Wo). Transpose (the adjoint): positions (.., Ho, Wo) back
// to the image (.., H, W), H = Ho + ws - 1 ("valid") or Ho ("same").
at::Tensor ssim_filter(const at::Tensor& t, int64_t window_size, double sigma, bool same_padding,
                       bool transpose) {
  const char* op = "ssim_filter";
  check_window(op, window_size, sigma);
  TORCH_CHECK(t.dim() >= 2, op, ": t: expected at least 2 dims (.., H, W), got ", t.dim());
  check_float_dtype(t, "ssim_filter: t");
  check_device(op, t, "t");
  const int64_t ws = window_size, pad = same_padding ? ws / 2 : 0;
  const int64_t h = t.size(-2), w = t.size(-1);
  int64_t oh, ow;
  if (transpose) {
    oh = h + ws - 1 - 2 * pad;
    ow = w + ws - 1 - 2 * pad;
  } else {
    TORCH_CHECK(ws <= h && ws <= w, op, ": window_size: the window (", ws,
                ") is larger than the image (H=", h, ", W=", w, ")");
    oh = h + 2 * pad - ws + 1;
    ow = w + 2 * pad - ws + 1;
  }
#ifdef VAEISO_WITH_CUDA
  TORCH_CHECK(!t.is_cuda() || ws <= kMaxCudaWindow, op, ": window_size: at most ",
              kMaxCudaWindow, " taps on CUDA, got ", ws);
#endif
  c10::DeviceGuard guard(t.device());
  auto out_sizes = t.sizes().vec();
  out_sizes[out_sizes.size() - 2] = oh;
  out_sizes[out_sizes.size() - 1] = ow;
  auto out = at::empty(out_sizes, t.options());
  if (out.numel() == 0) return out;
  const auto src = t.contiguous().view({-1, h, w});
  auto dst = out.view({-1, oh, ow});
  const auto window = gaussian_window(ws, sigma);
  VAEISO_ON_DEVICE(filter, t, src, window, ws, pad, transpose, dst);
  return out;
}

namespace {

using ForwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 int64_t, double, double, double,
                                                                 double, bool, bool, bool, bool);
using FilterFn = at::Tensor(const at::Tensor&, int64_t, double, bool, bool);

at::Tensor call_filter(const at::Tensor& t, int64_t ws, double sigma, bool same, bool transpose) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("vaeiso::ssim_filter", "")
                             .typed<FilterFn>();
  return op.call(t, ws, sigma, same, transpose);
}

}  // namespace

// The public op: 1 - the channel mean of ssim_forward's 1 - SSIM (whose autograd is registered
// in Python), with the derivative maps only when a gradient will be asked for.
at::Tensor ssim(const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma,
                double k1, double k2, double data_range, c10::string_view padding) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("vaeiso::ssim_forward", "")
                             .typed<ForwardFn>();
  const bool same = parse_padding("ssim", padding);
  const bool need_maps = at::GradMode::is_enabled() && (x.requires_grad() || y.requires_grad());
  const auto one_minus =
      std::get<0>(op.call(x, y, window_size, sigma, k1, k2, data_range, same, false, false, need_maps));
  const auto dt = x.scalar_type() == y.scalar_type() ? x.scalar_type() : one_minus.scalar_type();
  return at::rsub(one_minus.mean(1), 1).to(dt);
}

// u^T G_x v for all pairs of directions (docs/ops.md, ssim_metric_gram), as two weighted Gram products:
//   u^T G v = (1/(C P)) [ sum_p (a_p - b_p) mu_u(p) mu_v(p) + sum_q c_q u_q v_q ],
//   a = 1/(2 mu_x^2 + C1), b = 1/(2 s_xx + C2), c = w^T * b.
// Differentiable in x and v through ssim_filter's autograd and ATen's.
at::Tensor ssim_metric_gram(const at::Tensor& x, const at::Tensor& v, bool diagonal,
                            int64_t window_size, double sigma, double k1, double k2,
                            double data_range, c10::string_view padding) {
  const char* op = "ssim_metric_gram";
  const bool same = parse_padding(op, padding);
  check_window(op, window_size, sigma);
  const Constants k = check_constants(op, k1, k2, data_range);
  check_image(op, x, "x", window_size);
  TORCH_CHECK(v.dim() == 5 && v.size(0) == x.size(0) && v.sizes().slice(2) == x.sizes().slice(1),
              op, ": v: expected shape (", x.size(0), ", K, ", x.size(1), ", ", x.size(2), ", ",
              x.size(3), ") for x of shape ", x.sizes(), ", got ", v.sizes());
  check_same_dtype(v, x, "ssim_metric_gram: v", "x");
  check_same_device(v, x, "ssim_metric_gram: v", "x");
  const int64_t N = x.size(0), K = v.size(1), C = x.size(1);
  const auto acc = acc_type(x);
  const auto xf = x.to(acc), vf = v.to(acc);
  const auto mu_x = call_filter(xf, window_size, sigma, same, false);
  const auto s_xx = at::clamp_min(call_filter(xf * xf, window_size, sigma, same, false) - mu_x * mu_x, 0);
  const auto a = at::reciprocal(2 * mu_x * mu_x + k.C1);
  const auto b = at::reciprocal(2 * s_xx + k.C2);
  const auto ab = (a - b).unsqueeze(1);                                  // (N, 1, C, Ho, Wo)
  const auto c = call_filter(b, window_size, sigma, same, true).unsqueeze(1);  // (N, 1, C, H, W)
  const auto mu_v = call_filter(vf, window_size, sigma, same, false);  // (N, K, C, Ho, Wo)
  const double scale = 1.0 / static_cast<double>(C * mu_x.size(2) * mu_x.size(3));
  const int64_t P = C * mu_x.size(2) * mu_x.size(3), Q = C * x.size(2) * x.size(3);
  at::Tensor out;
  policy_gemm("ssim_metric_gram", xf, [&] {
    if (diagonal) {
      // sum_p ab mu_v^2 + sum_q c v^2 as matrix-vector products
      out = at::bmm(mu_v.square().reshape({N, K, P}), ab.reshape({N, P, 1})) +
            at::bmm(vf.square().reshape({N, K, Q}), c.reshape({N, Q, 1}));
      out = out.squeeze(-1) * scale;
    } else {
      const auto m = mu_v.reshape({N, K, P});
      const auto vv = vf.reshape({N, K, Q});
      auto gram = at::bmm((mu_v * ab).reshape({N, K, P}), m.transpose(1, 2));
      gram = at::baddbmm(gram, (vf * c).reshape({N, K, Q}), vv.transpose(1, 2));
      out = (gram + gram.transpose(1, 2)) * (0.5 * scale);
    }
  });
  return out.to(x.scalar_type());
}

TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("ssim_forward", &ssim_forward);
  m.impl("ssim_backward", &ssim_backward);
  m.impl("ssim_pairs", &ssim_pairs);
  m.impl("ssim_filter", &ssim_filter);
}

#ifdef VAEISO_WITH_CUDA
TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("ssim_forward", &ssim_forward);
  m.impl("ssim_backward", &ssim_backward);
  m.impl("ssim_pairs", &ssim_pairs);
  m.impl("ssim_filter", &ssim_filter);
}
#endif

TORCH_LIBRARY_IMPL(vaeiso, CompositeImplicitAutograd, m) {
  m.impl("ssim", &ssim);
  m.impl("ssim_metric_gram", &ssim_metric_gram);
}

}  // namespace vaeiso::ssim
