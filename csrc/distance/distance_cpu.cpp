// Pair-distance CPU entry points: the AVX2 build of the kernels where the CPU has it, else the
// baseline. Both use the same fixed segments, so either gives the same result to rounding.
#include "cpu_isa.h"
#include "distance/distance_kernels.h"

namespace vaeiso::distance {

#define VAEISO_DECLARE_ISA(ns)                                                                   \
  namespace ns {                                                                                 \
  void partials(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,    \
                at::Tensor& partial);                                                            \
  void finalize(const at::Tensor& partial, const std::optional<at::Tensor>& weight,              \
                at::Tensor& out);                                                                \
  }
VAEISO_DECLARE_ISA(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DECLARE_ISA(isa_avx2)
#endif

int64_t segment_length_cpu() { return kCpuSegment; }

at::ScalarType partial_dtype_cpu(at::ScalarType) { return at::kDouble; }

void partials_cpu(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                  at::Tensor& partial) {
  VAEISO_PICK(partials, base, others, s, m, partial);
}

void finalize_cpu(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                  at::Tensor& out) {
  VAEISO_PICK(finalize, partial, weight, out);
}

}  // namespace vaeiso::distance
