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

void forward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc,
                 const std::optional<Tensor>& weight, Tensor& out) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_cpu", [&] {
    const S* w = weight.has_value() ? cdata<S>(*weight) : nullptr;
    const int64_t w_sn = weight.has_value() ? weight->stride(0) : 0;
    VAEISO_PICK(forward<S>, cdata<S>(base), cdata<S>(others), s, m, sc, w, w_sn, mdata<S>(out));
  });
}

void backward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc, const Tensor& grad,
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
    VAEISO_PICK(backward<S>, cdata<S>(base), cdata<S>(others), s, m, sc, g);
  });
}

}  // namespace vaeiso::distance
