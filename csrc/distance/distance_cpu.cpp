// CPU pair distances: at::parallel_for over (sample, segment) tasks. A task keeps one segment
// of base in L1 and streams the K matching segments of others past it, so base is read from
// memory once for all K. Terms are computed in the input dtype and summed in double.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "distance/distance_kernels.h"

namespace vaeiso::distance {
namespace {

constexpr int64_t kSegment = 4096;       // 16-32 KB of base per task: stays in L1/L2
constexpr int64_t kGrainElems = 1 << 15;  // work per parallel task below which threads cost more
constexpr int kLanes = 8;                 // independent accumulators (fixed order: deterministic)

template <Metric M, typename scalar_t>
double segment_sum(const scalar_t* b, const scalar_t* o, int64_t len) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(term<M>(b[i + l], o[i + l]));
  for (int l = 0; i < len; ++i, ++l) acc[l] += static_cast<double>(term<M>(b[i], o[i]));
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

template <Metric M, typename scalar_t>
void partials_impl(const at::Tensor& base, const at::Tensor& others, const Strided& s,
                   at::Tensor& partial) {
  const scalar_t* bp = base.const_data_ptr<scalar_t>();
  const scalar_t* op = others.const_data_ptr<scalar_t>();
  double* pp = partial.mutable_data_ptr<double>();
  const int64_t S = partial.size(1), K = s.K, L = s.L;
  const int64_t work = std::max<int64_t>(1, std::min(L, kSegment) * K);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / work);
  at::parallel_for(0, s.N * S, grain, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t n = task / S, seg = task % S;
      const int64_t i0 = seg * kSegment, len = std::min(kSegment, L - i0);
      const scalar_t* b = bp + n * s.base_sn + i0;
      double* out = pp + task * K;
      for (int64_t k = 0; k < K; ++k)
        out[k] = segment_sum<M>(b, op + n * s.others_sn + k * s.others_sk + i0, len);
    }
  });
}

}  // namespace

int64_t segment_length_cpu() { return kSegment; }

at::ScalarType partial_dtype_cpu(at::ScalarType) { return at::kDouble; }

void partials_cpu(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                  at::Tensor& partial) {
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "pair_distances_cpu", [&] {
    if (m == Metric::kSSE) {
      partials_impl<Metric::kSSE, scalar_t>(base, others, s, partial);
    } else {
      partials_impl<Metric::kBCE, scalar_t>(base, others, s, partial);
    }
  });
}

void finalize_cpu(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                  at::Tensor& out) {
  const int64_t N = partial.size(0), S = partial.size(1), K = partial.size(2);
  const double* pp = partial.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "pair_distances_finalize_cpu", [&] {
    const scalar_t* wp = weight.has_value() ? weight->const_data_ptr<scalar_t>() : nullptr;
    const int64_t wsn = weight.has_value() ? weight->stride(0) : 0;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, std::max<int64_t>(1, 4096 / std::max<int64_t>(S * K, 1)),
                     [&](int64_t nb, int64_t ne) {
      for (int64_t n = nb; n < ne; ++n) {
        for (int64_t k = 0; k < K; ++k) {
          double acc = 0;
          for (int64_t seg = 0; seg < S; ++seg) acc += pp[(n * S + seg) * K + k];
          if (wp) acc *= static_cast<double>(wp[n * wsn]);
          op[n * K + k] = static_cast<scalar_t>(acc);
        }
      }
    });
  });
}

}  // namespace vaeiso::distance
