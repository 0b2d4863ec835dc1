// pair_distances on any device (docs/ops.md, pair_distances): argument checks, the (N, L) / (N, K, L) views with a
// unit stride along L (copying only when the input has none), then the partial and finalize
// passes of distance_kernels.h.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <string>

#include "common.h"
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
  const int64_t seg = VAEISO_ON_DEVICE(segment_length, base);
  const int64_t S = (L + seg - 1) / seg;
  const auto pdt = VAEISO_ON_DEVICE(partial_dtype, base, dt);
  auto partial = at::empty({N, S, K}, base.options().dtype(pdt));
  VAEISO_ON_DEVICE(partials, base, b, o, s, m, partial);
  std::optional<at::Tensor> w;
  if (weight.has_value()) w = weight->to(dt);
  VAEISO_ON_DEVICE(finalize, base, partial, w, out);
  return out;
}

TORCH_LIBRARY_IMPL(vaeiso, CPU, m) { m.impl("pair_distances", &pair_distances); }

#ifdef VAEISO_WITH_CUDA
TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) { m.impl("pair_distances", &pair_distances); }
#endif

}  // namespace vaeiso::distance
