// pair_distances and its fused backward on any device (docs/ops.md, pair_distances): argument
// checks, the (N, L) / (N, K, L) views with a unit stride along L (copying only when the input
// has none), then the device's pass of distance_kernels.h, which writes the results directly.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <tuple>

#include "common.h"
#include "cpu_workspace.h"
#include "distance/distance_kernels.h"

namespace vaeiso::distance {
namespace {

Metric parse_metric(c10::string_view metric) {
  if (metric == "sse") return Metric::kSSE;
  if (metric == "bce") return Metric::kBCE;
  TORCH_CHECK_VALUE(false, "pair_distances: metric: expected \"sse\" or \"bce\", got \"",
                    std::string(metric), "\"");
}

// Returns the dtype to compute in and of the output: base's, or float32 for autocast's mix of a
// half and a float32 input (a half prediction against a float32 target, or the reverse).
at::ScalarType check_args(const at::Tensor& base, const at::Tensor& others,
                          const std::optional<at::Tensor>& weight) {
  TORCH_CHECK(base.dim() >= 1, "pair_distances: base: expected a tensor of shape (N, *), got a ",
              "0-dim tensor");
  TORCH_CHECK(others.dim() == base.dim() + 1, "pair_distances: others: expected shape (N, K",
              base.dim() > 1 ? ", *base.shape[1:]" : "", ") with ", base.dim() + 1,
              " dims for base of shape ", base.sizes(), ", got shape ", others.sizes());
  TORCH_CHECK(others.size(0) == base.size(0), "pair_distances: others: expected ", base.size(0),
              " samples in dim 0 (the N of base), got shape ", others.sizes());
  TORCH_CHECK(others.sizes().slice(2) == base.sizes().slice(1), "pair_distances: others: expected ",
              "per-sample shape ", base.sizes().slice(1), " (that of base) in dims 2.., got shape ",
              others.sizes());
  check_float_dtype(base, "pair_distances: base");
  check_float_dtype(others, "pair_distances: others");
  const auto dt = loss_pair_dtype(others, base, "pair_distances: others", "base");
  check_same_device(others, base, "pair_distances: others", "base");
  if (weight.has_value()) {
    const auto& w = *weight;
    TORCH_CHECK(w.dim() == 1 && w.size(0) == base.size(0), "pair_distances: weight: expected shape (",
                base.size(0), ",) (one weight per sample of base), got ", w.sizes());
    TORCH_CHECK(w.scalar_type() == base.scalar_type() || w.scalar_type() == others.scalar_type(),
                "pair_distances: weight: expected dtype ", base.scalar_type(),
                " (the dtype of base)",
                others.scalar_type() != base.scalar_type() ? " or that of others" : "", ", got ",
                w.scalar_type());
    check_same_device(w, base, "pair_distances: weight", "base");
  }
  return dt;
}

// t viewed as `shape` with a unit stride in the last dim (a copy only when there is none).
at::Tensor unit_inner(const at::Tensor& t, at::IntArrayRef shape) {
  auto v = t.reshape(shape);
  if (v.size(-1) > 1 && v.stride(-1) != 1) v = v.contiguous();
  return v;
}

}  // namespace

at::Tensor pair_distances(const at::Tensor& base, const at::Tensor& others, c10::string_view metric,
                          const std::optional<at::Tensor>& weight) {
  const Metric m = parse_metric(metric);
  const auto dt = check_args(base, others, weight);
  c10::DeviceGuard guard(base.device());
  const int64_t N = base.size(0), K = others.size(1);
  const int64_t L = N > 0 ? base.numel() / N : c10::multiply_integers(base.sizes().slice(1));
  auto out = at::empty({N, K}, base.options().dtype(dt));
  if (N == 0 || K == 0) return out;

  // The kernels take one dtype: a mixed pair converts its half input to float32 once.
  const auto b = unit_inner(base.to(dt), {N, L});
  const auto o = unit_inner(others.to(dt), {N, K, L});
  const Strided s{N, K, L, b.stride(0), o.stride(0), o.stride(1)};
  std::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->to(dt);
  VAEISO_ON_DEVICE(forward, base, b, o, s, m, w, out);
  return out;
}

// d/d base, d/d others, d/d weight of sum(grad * pair_distances(base, others, metric, weight))
// where output_mask asks (an empty tensor elsewhere). One dtype for base, others and weight
// (the Python wrapper takes the eager formulas for autocast's mix); not differentiable itself.
std::tuple<at::Tensor, at::Tensor, at::Tensor> pair_distances_backward(
    const at::Tensor& grad, const at::Tensor& base, const at::Tensor& others, c10::string_view metric,
    const std::optional<at::Tensor>& weight, std::array<bool, 3> output_mask) {
  const Metric m = parse_metric(metric);
  const auto dt = check_args(base, others, weight);
  TORCH_CHECK(others.scalar_type() == base.scalar_type(), "pair_distances_backward: others: expected dtype ",
              base.scalar_type(), " (the dtype of base), got ", others.scalar_type());
  const int64_t N = base.size(0), K = others.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == K,
              "pair_distances_backward: grad: expected shape (", N, ", ", K, "), got ", grad.sizes());
  check_same_device(grad, base, "pair_distances_backward: grad", "base");
  c10::DeviceGuard guard(base.device());
  const int64_t L = N > 0 ? base.numel() / N : c10::multiply_integers(base.sizes().slice(1));
  const auto opts = base.options().dtype(dt);
  const bool need_w = output_mask[2] && weight.has_value();
  // The input-sized gradients on the CPU from the kept cache (cpu_workspace.h): no fresh
  // multi-MB heap block per call.
  auto input_sized = [&](at::IntArrayRef sizes) {
    return base.is_cuda() ? at::empty(sizes, opts) : kept_empty(sizes, opts);
  };
  at::Tensor gb = output_mask[0] ? input_sized(base.sizes()) : at::Tensor();
  at::Tensor go = output_mask[1] ? input_sized(others.sizes()) : at::Tensor();
  at::Tensor gw = need_w ? at::empty({N}, opts) : at::Tensor();
  auto result = [&] {
    auto none = at::empty({0}, opts);
    return std::make_tuple(gb.defined() ? gb : none, go.defined() ? go : none,
                           gw.defined() ? gw : none);
  };
  if (N * K * L == 0) {  // empty sums: zero gradients (others' is empty itself)
    if (gb.defined()) gb.zero_();
    if (gw.defined()) gw.zero_();
    return result();
  }
  if (!gb.defined() && !go.defined() && !gw.defined()) return result();
  const auto b = unit_inner(base, {N, L});
  const auto o = unit_inner(others, {N, K, L});
  const Strided s{N, K, L, b.stride(0), o.stride(0), o.stride(1)};
  const auto g = grad.to(dt);
  std::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->to(dt);
  VAEISO_ON_DEVICE(backward, base, b, o, s, m, g, w, gb, go, gw);
  return result();
}

TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("pair_distances", &pair_distances);
  m.impl("pair_distances_backward", &pair_distances_backward);
}

#ifdef VAEISO_WITH_CUDA
TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("pair_distances", &pair_distances);
  m.impl("pair_distances_backward", &pair_distances_backward);
}
#endif

}  // namespace vaeiso::distance
