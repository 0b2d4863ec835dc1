// Pair-distance CPU entry points: dtype dispatch, then the AVX2 build of the passes where the
// CPU has it, else the baseline (both use the same fixed segments, so either gives the same
// result to rounding).
#include <algorithm>

#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "cpu_parallel.h"
#include "distance/distance_cpu_passes.h"
#include "distance/distance_entry.h"

namespace vaeiso::distance {

VAEISO_DISTANCE_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DISTANCE_DECLARE_PASSES(isa_avx2)
#endif

void forward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m,
                 const std::optional<Tensor>& weight, Tensor& out) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_cpu", [&] {
    const S* w = weight.has_value() ? cdata<S>(*weight) : nullptr;
    const int64_t w_sn = weight.has_value() ? weight->stride(0) : 0;
    VAEISO_PICK(forward<S>, cdata<S>(base), cdata<S>(others), s, m, w, w_sn, mdata<S>(out));
  });
}

void backward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m, const Tensor& grad,
                  const std::optional<Tensor>& weight, Tensor& grad_base, Tensor& grad_others, Tensor& grad_weight) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_backward_cpu", [&] {
    const Grads<S> g{cdata<S>(grad),
                     grad.stride(0),
                     grad.stride(1),
                     weight.has_value() ? cdata<S>(*weight) : nullptr,
                     weight.has_value() ? weight->stride(0) : 0,
                     grad_base.defined() ? mdata<S>(grad_base) : nullptr,
                     grad_others.defined() ? mdata<S>(grad_others) : nullptr,
                     grad_weight.defined() ? mdata<S>(grad_weight) : nullptr};
    VAEISO_PICK(backward<S>, cdata<S>(base), cdata<S>(others), s, m, g);
  });
}

// The convex metrics' factor and its share of d/d base: one read of base each (N x L, against
// the passes' N x K x L), so plain baseline loops; the squared norm in double, in order. Tasks
// of ~8K elements: the toy's base (4096 x 16) is then split among the threads.
constexpr int64_t kScaleGrain = 8192;
void scales_cpu(const Tensor& base, const Strided& s, Scale sc, Tensor& a) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_cpu", [&] {
    const S* b = cdata<S>(base);
    S* out = mdata<S>(a);
    parallel_for(0, s.N, std::max<int64_t>(1, kScaleGrain / std::max<int64_t>(s.L, 1)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const S* row = b + n * s.base_sn;
        double q[4] = {0, 0, 0, 0};  // four chains: a short row is latency-bound otherwise
        int64_t i = 0;
        for (; i + 4 <= s.L; i += 4)
          for (int j = 0; j < 4; ++j) {
            const double v = load(row[i + j]);
            q[j] += v * v;
          }
        for (; i < s.L; ++i) {
          const double v = load(row[i]);
          q[0] += v * v;
        }
        out[n] = store<S>(static_cast<acc_t<S>>(scale_of((q[0] + q[1]) + (q[2] + q[3]), sc)));
      }
    });
  });
}

void scale_grad_cpu(const Tensor& base, const Strided& s, Scale sc, const Tensor& a, const Tensor& grad_weight,
                    Tensor& grad_base) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_backward_cpu", [&] {
    using T = acc_t<S>;
    const S *b = cdata<S>(base), *av = cdata<S>(a), *gw = cdata<S>(grad_weight);
    S* gb = mdata<S>(grad_base);
    parallel_for(0, s.N, std::max<int64_t>(1, kScaleGrain / std::max<int64_t>(s.L, 1)), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const T c = T(load(gw[n])) * scale_slope(T(load(av[n])), sc);
        for (int64_t i = 0; i < s.L; ++i)
          gb[n * s.L + i] = store<S>(T(load(gb[n * s.L + i])) + c * T(load(b[n * s.base_sn + i])));
      }
    });
  });
}

}  // namespace vaeiso::distance
