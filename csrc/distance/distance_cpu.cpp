// Pair-distance CPU entry points: dtype dispatch, then the AVX2 build of the partial pass where
// the CPU has it, else the baseline (both use the same fixed segments, so either gives the same
// result to rounding); the finalize pass is plain double arithmetic, done here.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "distance/distance_cpu_passes.h"
#include "distance/distance_kernels.h"

namespace vaeiso::distance {

VAEISO_DISTANCE_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DISTANCE_DECLARE_PASSES(isa_avx2)
#endif

int64_t segment_length_cpu() { return kCpuSegment; }

at::ScalarType partial_dtype_cpu(at::ScalarType) { return at::kDouble; }

void partials_cpu(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                  at::Tensor& partial) {
  VAEISO_CPU_DISPATCH(base.scalar_type(), "pair_distances_cpu", [&] {
    VAEISO_PICK(partials<S>, cptr<S>(base), cptr<S>(others), s, m, partial.size(1),
                mptr<double>(partial));
  });
}

// out[n, k] = weight[n] * sum over segments (in order) of partial[n, :, k], in double, then
// rounded once to the output dtype.
void finalize_cpu(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                  at::Tensor& out) {
  const int64_t N = partial.size(0), S = partial.size(1), K = partial.size(2);
  const double* pp = partial.const_data_ptr<double>();
  auto res = at::empty({N, K}, partial.options());
  double* rp = res.mutable_data_ptr<double>();
  at::parallel_for(0, N, std::max<int64_t>(1, 4096 / std::max<int64_t>(S * K, 1)),
                   [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t seg = 0; seg < S; ++seg) acc += pp[(n * S + seg) * K + k];
        rp[n * K + k] = acc;
      }
    }
  });
  if (weight.has_value()) res.mul_(weight->to(at::kDouble).unsqueeze(1));
  out.copy_(res);
}

}  // namespace vaeiso::distance
