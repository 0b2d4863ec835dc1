// CPU pair distances: at::parallel_for over (sample, segment) tasks. Compiled once per
// instruction set (distance_cpu_default.cpp, distance_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); distance_cpu.cpp dispatches on dtype and picks one at run
// time. A task keeps one segment of base in cache and streams the K matching segments of others
// past it, so base is read from memory once for all K. Terms are computed in the accumulation
// dtype (float for the half types, loaded per element), summed in short runs per SIMD lane in
// that dtype and then in double.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including distance_cpu_impl.h"
#endif
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu_half.h"
#include "distance/distance_math.h"
#include "distance/distance_cpu_passes.h"

namespace vaeiso::distance {
VAEISO_DISTANCE_DECLARE_PASSES(VAEISO_CPU_ISA)
}

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
template <Metric M, typename S, typename scalar_t = acc_t<S>>
inline void group_terms(const S* bs, const S* os, scalar_t* t) {
  scalar_t b[kLanes], o[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    b[l] = load(bs[l]);
    o[l] = load(os[l]);
  }
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
template <Metric M, typename S>
double segment_sum(const S* b, const S* o, int64_t len) {
  using scalar_t = acc_t<S>;
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
  for (; i < len; ++i) total += static_cast<double>(term<M>(load(b[i]), load(o[i])));
  return total;
}

template <Metric M, typename S>
void partials_impl(const S* bp, const S* op, const Strided& s, int64_t S_, double* pp) {
  const int64_t K = s.K, L = s.L;
  const int64_t work = std::max<int64_t>(1, std::min(L, kSegment) * K);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / work);
  at::parallel_for(0, s.N * S_, grain, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t n = task / S_, seg = task % S_;
      const int64_t i0 = seg * kSegment, len = std::min(kSegment, L - i0);
      const S* b = bp + n * s.base_sn + i0;
      double* out = pp + task * K;
      for (int64_t k = 0; k < K; ++k)
        out[k] = segment_sum<M>(b, op + n * s.others_sn + k * s.others_sk + i0, len);
    }
  });
}

}  // namespace

template <typename S>
void partials(const S* base, const S* others, const Strided& s, Metric m, int64_t segments,
              double* partial) {
  if (m == Metric::kSSE) {
    partials_impl<Metric::kSSE>(base, others, s, segments, partial);
  } else {
    partials_impl<Metric::kBCE>(base, others, s, segments, partial);
  }
}

template void partials<float>(const float*, const float*, const Strided&, Metric, int64_t, double*);
template void partials<double>(const double*, const double*, const Strided&, Metric, int64_t, double*);
template void partials<f16>(const f16*, const f16*, const Strided&, Metric, int64_t, double*);
template void partials<bf16>(const bf16*, const bf16*, const Strided&, Metric, int64_t, double*);

}  // namespace vaeiso::distance::VAEISO_CPU_ISA
