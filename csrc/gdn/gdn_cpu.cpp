// GDN CPU entry points: the AVX2 build of the passes where the CPU has it, else the baseline.
#include "cpu_isa.h"
#include "gdn/gdn_kernels.h"

namespace vaeiso::gdn {

#define VAEISO_DECLARE_ISA(ns)                                                                   \
  namespace ns {                                                                                 \
  void fx(const at::Tensor& x, at::Tensor& fx, Variant v);                                       \
  void forward_epilogue(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,           \
                        at::Tensor& out, int64_t C, int64_t inner, Variant v);                   \
  void backward_t(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,              \
                  at::Tensor& t, at::Tensor& fx, Variant v);                                     \
  void backward_x(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,              \
                  const at::Tensor& u, at::Tensor& gx, Variant v);                               \
  }
VAEISO_DECLARE_ISA(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DECLARE_ISA(isa_avx2)
#endif

void fx_cpu(const at::Tensor& x, at::Tensor& fx, Variant v) { VAEISO_PICK(fx, x, fx, v); }

void forward_epilogue_cpu(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                          at::Tensor& out, int64_t C, int64_t inner, Variant v) {
  VAEISO_PICK(forward_epilogue, x, norm, beta, out, C, inner, v);
}

void backward_t_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    at::Tensor& t, at::Tensor& fx, Variant v) {
  VAEISO_PICK(backward_t, g, x, norm, t, fx, v);
}

void backward_x_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    const at::Tensor& u, at::Tensor& gx, Variant v) {
  VAEISO_PICK(backward_x, g, x, norm, u, gx, v);
}

}  // namespace vaeiso::gdn
