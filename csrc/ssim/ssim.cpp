// The SSIM family on any device (docs/ops.md, ssim to ssim_l1_loss): argument checks, the
// Gaussian window, output allocation and the device kernels of ssim_entry.h. `ssim_forward` /
// `ssim_backward` are the one per-(image, channel) SSIM pass under ssim, one_minus_ssim,
// ms_ssim and ssim_l1_loss (their reductions and autograd live in vaeiso_ext/ops/_ssim.py). The
// composite public ops `ssim` and `ssim_metric_gram` are implemented in Python
// (vaeiso_ext/ops/_composites.py): they need ATen ops with Scalar arguments, which the stable ABI
// cannot call before torch 2.14.
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "cpu_workspace.h"
#include "ssim/ssim_entry.h"

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

void check_window(const char* op, int64_t ws, double sigma) {
  VAEISO_CHECK(ws >= 1 && ws % 2 == 1, op, ": window_size: expected an odd positive integer, got ", ws);
  VAEISO_CHECK(std::isfinite(sigma) && sigma > 0, op, ": sigma: expected a positive number, got ", sigma);
}

Constants check_constants(const char* op, double k1, double k2, double data_range) {
  VAEISO_CHECK(std::isfinite(data_range) && data_range > 0, op, ": data_range: expected a positive number, got ",
               data_range);
  VAEISO_CHECK(std::isfinite(k1) && k1 > 0, op, ": k1: expected a positive number, got ", k1);
  VAEISO_CHECK(std::isfinite(k2) && k2 > 0, op, ": k2: expected a positive number, got ", k2);
  return Constants{(k1 * data_range) * (k1 * data_range), (k2 * data_range) * (k2 * data_range)};
}

void check_device(const char* op, const Tensor& t, const char* name) {
  VAEISO_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", name, ": expected a CPU or CUDA tensor");
#ifndef VAEISO_WITH_CUDA
  VAEISO_CHECK(!t.is_cuda(), op, ": ", name,
               ": vaeiso_ext was built without CUDA kernels; rebuild with a CUDA toolkit");
#endif
}

// x: (N, C, H, W) image batch; checks dtype, device and that the window fits.
void check_image(const char* op, const Tensor& x, const char* name, int64_t ws) {
  VAEISO_CHECK(x.dim() == 4, op, ": ", name, ": expected a 4-D tensor (N, C, H, W), got shape ", Shape(x.sizes()));
  const std::string label = std::string(op) + ": " + name;
  check_float_dtype(x, label.c_str());
  check_device(op, x, name);
  VAEISO_CHECK(x.size(1) >= 1, op, ": ", name, ": expected at least one channel, got shape ", Shape(x.sizes()));
  VAEISO_CHECK(ws <= x.size(2) && ws <= x.size(3), op, ": window_size: the window (", ws,
               ") is larger than the image (H=", x.size(2), ", W=", x.size(3),
               "); use a smaller window_size or larger images");
#ifdef VAEISO_WITH_CUDA
  VAEISO_CHECK(!x.is_cuda() || ws <= kMaxCudaWindow, op, ": window_size: at most ", kMaxCudaWindow,
               " taps on CUDA, got ", ws);
#endif
}

// y against x: same shape and device; same dtype, or (the losses, `mixed`) autocast's half /
// float32 mix. Returns the dtype to compute in and of the output.
ScalarType check_pair(const char* op, const Tensor& y, const char* yname, const Tensor& x, const char* xname,
                      bool mixed = false) {
  VAEISO_CHECK(same_sizes(y, x), op, ": ", yname, ": expected shape ", Shape(x.sizes()), " (the shape of ", xname,
               "), got ", Shape(y.sizes()));
  const std::string label = std::string(op) + ": " + yname;
  check_same_device(y, x, label.c_str(), xname);
  if (mixed) {
    check_float_dtype(y, label.c_str());
    return loss_pair_dtype(y, x, label.c_str(), xname);
  }
  check_same_dtype(y, x, label.c_str(), xname);
  return x.scalar_type();
}

ScalarType acc_type(const Tensor& x) { return vaeiso::acc_type(x.scalar_type()); }

}  // namespace

// The one SSIM pass: per (image, channel) the mean of 1 - v (v = SSIM, or cs when `cs_only`),
// the mean |y - x| when `with_l1`, and the derivative maps when `need_maps`. Outputs in the
// accumulation dtype (float32 for the half types and autocast's half / float32 mix).
std::tuple<Tensor, Tensor, Tensor> ssim_forward(Tensor x, Tensor y, int64_t window_size, double sigma, double k1,
                                                double k2, double data_range, bool same_padding, bool cs_only,
                                                bool with_l1, bool need_maps) {
  const char* op = "ssim_forward";
  check_window(op, window_size, sigma);
  const Constants k = check_constants(op, k1, k2, data_range);
  check_image(op, x, "x", window_size);
  // A half prediction against a float32 target (or the reverse) computes in float32; the half
  // input is converted once (the kernels take one dtype).
  const auto dt = check_pair(op, y, "y", x, "x", /*mixed=*/true);
  DeviceScope guard(x);
  const Geometry g = make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), window_size, same_padding);
  const auto acc = vaeiso::acc_type(dt);
  auto one_minus = alloc({g.N, g.C}, acc, x);
  auto l1 = with_l1 ? alloc({g.N, g.C}, acc, x) : alloc({0}, acc, x);
  // The maps live from the forward to the backward: on the CPU from the kept cache.
  auto maps = !need_maps    ? alloc({0}, acc, x)
              : x.is_cuda() ? alloc({g.N, g.C, 4, g.Ho, g.Wo}, acc, x)
                            : kept_empty({g.N, g.C, 4, g.Ho, g.Wo}, acc, x);
  if (g.N == 0) return {one_minus, l1, maps};
  const auto window = gaussian_window(window_size, sigma);
  const auto xc = to_dtype(x, dt), yc = to_dtype(y, dt);
  VAEISO_ON_DEVICE(forward, x, xc, yc, window, g, k, Terms{cs_only, with_l1}, one_minus, l1, maps);
  return {one_minus, l1, maps};
}

std::tuple<Tensor, Tensor> ssim_backward(Tensor grad, Tensor grad_l1, Tensor x, Tensor y, Tensor maps,
                                         int64_t window_size, double sigma, bool same_padding) {
  const char* op = "ssim_backward";
  check_window(op, window_size, sigma);
  check_image(op, x, "x", window_size);
  const auto dt = check_pair(op, y, "y", x, "x", /*mixed=*/true);
  const auto acc = vaeiso::acc_type(dt);
  const int64_t N = x.size(0), C = x.size(1);
  VAEISO_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == C, op, ": grad: expected shape (", N, ", ", C,
               "), got ", Shape(grad.sizes()));
  check_float_dtype(grad, "ssim_backward: grad");
  check_same_device(grad, x, "ssim_backward: grad", "x");
  const bool l1 = grad_l1.numel() > 0;
  VAEISO_CHECK(!l1 || (grad_l1.dim() == 2 && grad_l1.size(0) == N && grad_l1.size(1) == C), op,
               ": grad_l1: expected shape (", N, ", ", C, ") or an empty tensor, got ", Shape(grad_l1.sizes()));
  if (l1) {
    check_float_dtype(grad_l1, "ssim_backward: grad_l1");
    check_same_device(grad_l1, x, "ssim_backward: grad_l1", "x");
  }
  const Geometry g = make_geometry(N, C, x.size(2), x.size(3), window_size, same_padding);
  VAEISO_CHECK(maps.dim() == 5 && maps.size(0) == g.N && maps.size(1) == g.C && maps.size(2) == 4 &&
                   maps.size(3) == g.Ho && maps.size(4) == g.Wo,
               op, ": maps: expected shape (", g.N, ", ", g.C, ", 4, ", g.Ho, ", ", g.Wo,
               ") from ssim_forward(need_maps=True), got ", Shape(maps.sizes()));
  VAEISO_CHECK(maps.scalar_type() == acc, op, ": maps: expected dtype ", acc, ", got ", maps.scalar_type());
  check_same_device(maps, x, "ssim_backward: maps", "x");
  DeviceScope guard(x);
  // Each gradient has its input's dtype; a mixed pair computes in float32 and rounds once.
  // On the CPU from the kept cache (cpu_workspace.h): no fresh heap block per call.
  auto gx = x.is_cuda() ? alloc(sizes_of(x), dt, x) : kept_empty(sizes_of(x), dt, x);
  auto gy = x.is_cuda() ? alloc(sizes_of(x), dt, x) : kept_empty(sizes_of(x), dt, x);
  if (g.N > 0) {
    const auto window = gaussian_window(window_size, sigma);
    const auto gc = contig(to_dtype(grad, acc));
    const auto glc = l1 ? contig(to_dtype(grad_l1, acc)) : grad_l1;
    const auto mc = contig(maps);
    const auto xc = to_dtype(x, dt), yc = to_dtype(y, dt);
    VAEISO_ON_DEVICE(backward, x, gc, glc, xc, yc, mc, window, g, gx, gy);
  }
  return {to_dtype(gx, x.scalar_type()), to_dtype(gy, y.scalar_type())};
}

bool parse_padding(const char* op, const std::string& padding) {
  VAEISO_CHECK(padding == "valid" || padding == "same", op, ": padding: expected \"valid\" or \"same\", got \"",
               padding, "\"");
  return padding == "same";
}

Tensor ssim_pairs(Tensor base, Tensor others, int64_t window_size, double sigma, double k1, double k2,
                  double data_range, std::string padding) {
  const char* op = "ssim_pairs";
  const bool same = parse_padding(op, padding);
  check_window(op, window_size, sigma);
  const Constants k = check_constants(op, k1, k2, data_range);
  check_image(op, base, "base", window_size);
  const auto bs = sizes_of(base), os = sizes_of(others);
  VAEISO_CHECK(others.dim() == 5 && others.size(0) == base.size(0) &&
                   std::vector<int64_t>(os.begin() + 2, os.end()) == std::vector<int64_t>(bs.begin() + 1, bs.end()),
               op, ": others: expected shape (", base.size(0), ", K, ", base.size(1), ", ", base.size(2), ", ",
               base.size(3), ") for base of shape ", Shape(bs), ", got ", Shape(os));
  check_same_dtype(others, base, "ssim_pairs: others", "base");
  check_same_device(others, base, "ssim_pairs: others", "base");
  DeviceScope guard(base);
  const Geometry g = make_geometry(base.size(0), base.size(1), base.size(2), base.size(3), window_size, same);
  auto out = alloc({g.N, others.size(1)}, base.scalar_type(), base);
  if (out.numel() == 0) return out;
  const auto window = gaussian_window(window_size, sigma);
  VAEISO_ON_DEVICE(pairs, base, base, others, window, g, k, out);
  return out;
}

// Separable window filter over the last two dims of t (any leading dims). Forward: an image
// (.., H, W) to its positions (.., Ho, Wo). Transpose (the adjoint): positions (.., Ho, Wo) back
// to the image (.., H, W), H = Ho + ws - 1 ("valid") or Ho ("same").
Tensor ssim_filter(Tensor t, int64_t window_size, double sigma, bool same_padding, bool transpose) {
  const char* op = "ssim_filter";
  check_window(op, window_size, sigma);
  VAEISO_CHECK(t.dim() >= 2, op, ": t: expected at least 2 dims (.., H, W), got ", t.dim());
  check_float_dtype(t, "ssim_filter: t");
  check_device(op, t, "t");
  const int64_t ws = window_size, pad = same_padding ? ws / 2 : 0;
  const int64_t h = t.size(-2), w = t.size(-1);
  int64_t oh, ow;
  if (transpose) {
    oh = h + ws - 1 - 2 * pad;
    ow = w + ws - 1 - 2 * pad;
  } else {
    VAEISO_CHECK(ws <= h && ws <= w, op, ": window_size: the window (", ws, ") is larger than the image (H=", h,
                 ", W=", w, ")");
    oh = h + 2 * pad - ws + 1;
    ow = w + 2 * pad - ws + 1;
  }
#ifdef VAEISO_WITH_CUDA
  VAEISO_CHECK(!t.is_cuda() || ws <= kMaxCudaWindow, op, ": window_size: at most ", kMaxCudaWindow,
               " taps on CUDA, got ", ws);
#endif
  DeviceScope guard(t);
  auto out_sizes = sizes_of(t);
  out_sizes[out_sizes.size() - 2] = oh;
  out_sizes[out_sizes.size() - 1] = ow;
  auto out = alloc(out_sizes, t.scalar_type(), t);
  if (out.numel() == 0) return out;
  const auto src = viewed(contig(t), {-1, h, w});
  auto dst = viewed(out, {-1, oh, ow});
  const auto window = gaussian_window(ws, sigma);
  VAEISO_ON_DEVICE(filter, t, src, window, ws, pad, transpose, dst);
  return out;
}

// MS-SSIM's pyramid step over the last two dims of t (any leading dims; ssim_math.h, pool_at):
// forward, an image (.., height, width) to its 2x2 average pooling (.., (height + 1) / 2,
// (width + 1) / 2); transpose (the adjoint), a gradient of the pooled image back onto the
// (.., height, width) image (the pooled size alone does not give it: 2k and 2k - 1 pool alike).
// On the CPU the output comes from the kept cache (cpu_workspace.h): a pyramid takes no fresh
// heap block per call.
Tensor ssim_pool(Tensor t, int64_t height, int64_t width, bool transpose) {
  const char* op = "ssim_pool";
  VAEISO_CHECK(t.dim() >= 2, op, ": t: expected at least 2 dims (.., H, W), got ", t.dim());
  check_float_dtype(t, "ssim_pool: t");
  check_device(op, t, "t");
  VAEISO_CHECK(height >= 1 && width >= 1, op, ": height, width: expected at least 1, got ", height, ", ", width);
  const int64_t ph = (height + 1) / 2, pw = (width + 1) / 2;
  const int64_t h = transpose ? ph : height, w = transpose ? pw : width;
  const int64_t oh = transpose ? height : ph, ow = transpose ? width : pw;
  VAEISO_CHECK(t.size(-2) == h && t.size(-1) == w, op, ": t: expected its last two dims to be (", h, ", ", w,
               ") for height=", height, ", width=", width, transpose ? " (transpose)" : "", ", got (", t.size(-2), ", ",
               t.size(-1), ")");
  DeviceScope guard(t);
  auto out_sizes = sizes_of(t);
  out_sizes[out_sizes.size() - 2] = oh;
  out_sizes[out_sizes.size() - 1] = ow;
  auto out = t.is_cuda() ? alloc(out_sizes, t.scalar_type(), t) : kept_empty(out_sizes, t.scalar_type(), t);
  if (out.numel() == 0) return out;
  const auto src = viewed(contig(t), {-1, h, w});
  auto dst = viewed(out, {-1, oh, ow});
  VAEISO_ON_DEVICE(pool, t, src, transpose, dst);
  return out;
}

STABLE_TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("ssim_forward", TORCH_BOX(&ssim_forward));
  m.impl("ssim_backward", TORCH_BOX(&ssim_backward));
  m.impl("ssim_pairs", TORCH_BOX(&ssim_pairs));
  m.impl("ssim_filter", TORCH_BOX(&ssim_filter));
  m.impl("ssim_pool", TORCH_BOX(&ssim_pool));
}

#ifdef VAEISO_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("ssim_forward", TORCH_BOX(&ssim_forward));
  m.impl("ssim_backward", TORCH_BOX(&ssim_backward));
  m.impl("ssim_pairs", TORCH_BOX(&ssim_pairs));
  m.impl("ssim_filter", TORCH_BOX(&ssim_filter));
  m.impl("ssim_pool", TORCH_BOX(&ssim_pool));
}
#endif

}  // namespace vaeiso::ssim
