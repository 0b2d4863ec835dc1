// CPU pair distances: at::parallel_for over (sample, segment) tasks. Compiled once per
// instruction set (distance_cpu_default.cpp, distance_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA; distance_cpu.cpp picks one at run time.
// A task keeps one segment
// of base in cache and streams the K matching segments of others past it, so base is read from
// memory once for all K. Terms are computed in the input dtype, summed in short runs per SIMD
// lane in that dtype and then in double.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including distance_cpu_impl.h"
#endif
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "distance/distance_kernels.h"

namespace vaeiso::distance::VAEISO_CPU_ISA {
namespace {

constexpr int64_t kSegment = kCpuSegment;
constexpr int64_t kGrainElems = 1 << 15;  // work per parallel task below which threads cost more
constexpr int kLanes = 8;                 // independent accumulators (fixed order: deterministic)
constexpr int kFlush = 32;                // terms per lane summed in the input dtype

// term(b[i], o[i]) for kLanes consecutive elements, written so the compiler vectorises it.
// BCE: the series form of both halves for all lanes at once (branch-free), and the exact
// scalar bce_term for the whole group only where some lane needs another branch (binary
// targets, perturbations beyond kSmallT, NaN): the formulas of bce_term, ~4x faster.
template <Metric M, typename scalar_t>
inline void group_terms(const scalar_t* b, const scalar_t* o, scalar_t* t) {
  if constexpr (M == Metric::kSSE) {
    for (int l = 0; l < kLanes; ++l) t[l] = sse_term(b[l], o[l]);
  } else {
    int ok = 1;
    for (int l = 0; l < kLanes; ++l) {
      const scalar_t p = b[l], q = o[l], d = q - p, pc = scalar_t(1) - p, qc = scalar_t(1) - q;
      ok &= static_cast<int>(kl_half_is_small(p, d)) & static_cast<int>(kl_half_is_small(pc, -d));
      t[l] = kl_half_series(p, q, d) + kl_half_series(pc, qc, -d);
    }
    if (!ok)
      for (int l = 0; l < kLanes; ++l) t[l] = bce_term(b[l], o[l]);
  }
}

// Sum of term(b[i], o[i]) over one segment, kLanes at a time. Each lane sums up to kFlush
// terms in the input dtype (float SIMD: 4 or 8 wide with AVX2), then the lanes are added in double, so the rounding
// stays ~kFlush ulp per lane for any segment length. Fixed order: deterministic.
template <Metric M, typename scalar_t>
double segment_sum(const scalar_t* b, const scalar_t* o, int64_t len) {
  double total = 0;
  scalar_t acc[kLanes] = {};
  int groups = 0;
  auto flush = [&] {
    double s = 0;
    for (int l = 0; l < kLanes; ++l) {
      s += static_cast<double>(acc[l]);
      acc[l] = scalar_t(0);
    }
    total += s;
    groups = 0;
  };
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    scalar_t t[kLanes];
    group_terms<M>(b + i, o + i, t);
    for (int l = 0; l < kLanes; ++l) acc[l] += t[l];
    if (++groups == kFlush) flush();
  }
  flush();
  for (; i < len; ++i) total += static_cast<double>(term<M>(b[i], o[i]));
  return total;
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

void partials(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                  at::Tensor& partial) {
  AT_DISPATCH_FLOATING_TYPES(base.scalar_type(), "pair_distances_cpu", [&] {
    if (m == Metric::kSSE) {
      partials_impl<Metric::kSSE, scalar_t>(base, others, s, partial);
    } else {
      partials_impl<Metric::kBCE, scalar_t>(base, others, s, partial);
    }
  });
}

void finalize(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
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

}  // namespace vaeiso::distance::VAEISO_CPU_ISA
