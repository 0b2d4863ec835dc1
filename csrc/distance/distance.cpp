// pair_distances and its fused backward on any device (docs/ops.md, pair_distances): argument
// checks, the (N, L) / (N, K, L) views with a unit stride along L (copying only when the input
// has none), then the device's pass of distance_entry.h, which writes the results directly.
#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "cpu_workspace.h"
#include "distance/distance_entry.h"

namespace vaeiso::distance {
namespace {

// A metric name: the passes' per-element metric, and the factor computed from base ("downward"
// and "upward" are the paper's convex metrics: sse with a_x or 1 / a_x, distance_math.h).
struct Parsed {
  Metric m;
  Scale scale;
};

Parsed parse_metric(const std::string& metric, const std::optional<Tensor>& weight) {
  Parsed p{Metric::kSSE, Scale::kNone};
  if (metric == "bce") {
    p.m = Metric::kBCE;
  } else if (metric == "downward") {
    p.scale = Scale::kDownward;
  } else if (metric == "upward") {
    p.scale = Scale::kUpward;
  } else if (metric != "sse") {
    throw std::runtime_error(
        str("pair_distances: metric: expected \"sse\", \"bce\", \"downward\" or \"upward\", got \"", metric, "\""));
  }
  VAEISO_CHECK(p.scale == Scale::kNone || !weight.has_value(), "pair_distances: weight: expected None with metric \"",
               metric, "\" (its factor a_x is computed from base)");
  return p;
}

std::vector<int64_t> tail(const Tensor& t, int64_t from) {
  const auto s = sizes_of(t);
  return {s.begin() + from, s.end()};
}

// Returns the dtype to compute in and of the output: base's, or float32 for autocast's mix of a
// half and a float32 input (a half prediction against a float32 target, or the reverse).
ScalarType check_args(const Tensor& base, const Tensor& others, const std::optional<Tensor>& weight) {
  VAEISO_CHECK(base.dim() >= 1, "pair_distances: base: expected a tensor of shape (N, *), got a ", "0-dim tensor");
  VAEISO_CHECK(others.dim() == base.dim() + 1, "pair_distances: others: expected shape (N, K",
               base.dim() > 1 ? ", *base.shape[1:]" : "", ") with ", base.dim() + 1, " dims for base of shape ",
               Shape(base.sizes()), ", got shape ", Shape(others.sizes()));
  VAEISO_CHECK(others.size(0) == base.size(0), "pair_distances: others: expected ", base.size(0),
               " samples in dim 0 (the N of base), got shape ", Shape(others.sizes()));
  VAEISO_CHECK(tail(others, 2) == tail(base, 1), "pair_distances: others: expected ", "per-sample shape ",
               Shape(tail(base, 1)), " (that of base) in dims 2.., got shape ", Shape(others.sizes()));
  check_float_dtype(base, "pair_distances: base");
  check_float_dtype(others, "pair_distances: others");
  const auto dt = loss_pair_dtype(others, base, "pair_distances: others", "base");
  check_same_device(others, base, "pair_distances: others", "base");
  if (weight.has_value()) {
    const auto& w = *weight;
    VAEISO_CHECK(w.dim() == 1 && w.size(0) == base.size(0), "pair_distances: weight: expected shape (", base.size(0),
                 ",) (one weight per sample of base), got ", Shape(w.sizes()));
    VAEISO_CHECK(w.scalar_type() == base.scalar_type() || w.scalar_type() == others.scalar_type(),
                 "pair_distances: weight: expected dtype ", base.scalar_type(), " (the dtype of base)",
                 others.scalar_type() != base.scalar_type() ? " or that of others" : "", ", got ", w.scalar_type());
    check_same_device(w, base, "pair_distances: weight", "base");
  }
  return dt;
}

// t as an array of `shape` ((N, L) or (N, K, L)) with a unit stride in the last dim: the tensor
// whose data the kernel reads and that array's strides. A contiguous t is read as it is (the
// view would share its data; reshape is a dispatcher call, as costly as a small kernel);
// otherwise the reshaped view, copied only when it has no unit stride in the last dim.
struct Rows {
  Tensor t;
  std::vector<int64_t> strides;
};
Rows unit_inner(const Tensor& t, const std::vector<int64_t>& shape) {
  if (t.is_contiguous()) return {t, contiguous_strides(shape)};
  auto v = reshaped(t, shape);
  if (v.size(-1) > 1 && v.stride(-1) != 1) v = torch::stable::contiguous(v);
  const auto st = v.strides();
  return {v, {st.begin(), st.end()}};
}

int64_t prod(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (auto x : v) p *= x;
  return p;
}

}  // namespace

Tensor pair_distances(const Tensor& base, const Tensor& others, std::string metric, std::optional<Tensor> weight) {
  const Parsed p = parse_metric(metric, weight);
  const auto dt = check_args(base, others, weight);
  // A half type computes in float32 and rounds once: the convex metrics' factor too, so they
  // run in float32 (a copy of the inputs) and round the result.
  if (p.scale != Scale::kNone && is_half(dt))
    return to_dtype(pair_distances(to_dtype(base, dt::kFloat), to_dtype(others, dt::kFloat), metric, weight), dt);
  DeviceScope guard(base);
  const int64_t N = base.size(0), K = others.size(1);
  const int64_t L = N > 0 ? base.numel() / N : prod(tail(base, 1));
  auto out = alloc({N, K}, dt, base);
  if (N == 0 || K == 0) return out;

  // The kernels take one dtype: a mixed pair converts its half input to float32 once.
  const auto b = unit_inner(to_dtype(base, dt), {N, L});
  const auto o = unit_inner(to_dtype(others, dt), {N, K, L});
  const Strided s{N, K, L, b.strides[0], o.strides[0], o.strides[1]};
  std::optional<Tensor> w;
  if (weight.has_value()) w = to_dtype(*weight, dt);
  VAEISO_ON_DEVICE(forward, base, b.t, o.t, s, p.m, p.scale, w, out);
  return out;
}

// d/d base, d/d others, d/d weight of sum(grad * pair_distances(base, others, metric, weight))
// where output_mask asks (an empty tensor elsewhere). One dtype for base, others and weight
// (the Python wrapper takes the eager formulas for autocast's mix); not differentiable itself.
std::tuple<Tensor, Tensor, Tensor> pair_distances_backward(Tensor grad, Tensor base, Tensor others, std::string metric,
                                                           std::optional<Tensor> weight,
                                                           std::vector<bool> output_mask) {
  const Parsed p = parse_metric(metric, weight);
  const auto dt = check_args(base, others, weight);
  VAEISO_CHECK(others.scalar_type() == base.scalar_type(), "pair_distances_backward: others: expected dtype ",
               base.scalar_type(), " (the dtype of base), got ", others.scalar_type());
  if (p.scale != Scale::kNone && is_half(dt)) {  // in float32, as the forward
    auto r = pair_distances_backward(to_dtype(grad, dt::kFloat), to_dtype(base, dt::kFloat),
                                     to_dtype(others, dt::kFloat), metric, weight, output_mask);
    return std::make_tuple(to_dtype(std::get<0>(r), dt), to_dtype(std::get<1>(r), dt), to_dtype(std::get<2>(r), dt));
  }
  const int64_t N = base.size(0), K = others.size(1);
  VAEISO_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == K,
               "pair_distances_backward: grad: expected shape (", N, ", ", K, "), got ", Shape(grad.sizes()));
  check_same_device(grad, base, "pair_distances_backward: grad", "base");
  DeviceScope guard(base);
  const int64_t L = N > 0 ? base.numel() / N : prod(tail(base, 1));
  const bool need_w = output_mask[2] && weight.has_value();
  // The input-sized gradients on the CPU from the kept cache (cpu_workspace.h): no fresh
  // multi-MB heap block per call.
  auto input_sized = [&](const Tensor& like) {
    return base.is_cuda() ? alloc(sizes_of(like), dt, base) : kept_empty(sizes_of(like), dt, base);
  };
  Tensor gb = output_mask[0] ? input_sized(base) : Tensor();
  Tensor go = output_mask[1] ? input_sized(others) : Tensor();
  Tensor gw = need_w ? alloc({N}, dt, base) : Tensor();
  auto result = [&] {
    // one empty tensor for the gradients not asked for, made only when one is missing
    Tensor none = gb.defined() && go.defined() && gw.defined() ? Tensor() : alloc({0}, dt, base);
    return std::make_tuple(gb.defined() ? gb : none, go.defined() ? go : none, gw.defined() ? gw : none);
  };
  if (N * K * L == 0) {  // empty sums: zero gradients (others' is empty itself)
    if (gb.defined()) zero(gb);
    if (gw.defined()) zero(gw);
    return result();
  }
  if (!gb.defined() && !go.defined() && !gw.defined()) return result();
  const auto b = unit_inner(base, {N, L});
  const auto o = unit_inner(others, {N, K, L});
  const Strided s{N, K, L, b.strides[0], o.strides[0], o.strides[1]};
  const auto g = to_dtype(grad, dt);
  std::optional<Tensor> w;
  if (weight.has_value()) w = to_dtype(*weight, dt);
  VAEISO_ON_DEVICE(backward, base, b.t, o.t, s, p.m, p.scale, g, w, gb, go, gw);
  return result();
}

STABLE_TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("pair_distances", TORCH_BOX(&pair_distances));
  m.impl("pair_distances_backward", TORCH_BOX(&pair_distances_backward));
}

#ifdef VAEISO_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("pair_distances", TORCH_BOX(&pair_distances));
  m.impl("pair_distances_backward", TORCH_BOX(&pair_distances_backward));
}
#endif

}  // namespace vaeiso::distance
