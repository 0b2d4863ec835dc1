// GDN CPU entry points: dtype dispatch, then the AVX2 build of the passes where the CPU has it,
// else the baseline (gdn_cpu_passes.h).
#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "gdn/gdn_cpu_passes.h"
#include "gdn/gdn_kernels.h"

namespace vaeiso::gdn {

VAEISO_GDN_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_GDN_DECLARE_PASSES(isa_avx2)
#endif

void fx_cpu(const at::Tensor& x, at::Tensor& fx, Variant v) {
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_fx_cpu", [&] {
    VAEISO_PICK(fx<S>, cptr<S>(x), mptr<acc_t<S>>(fx), x.numel(), v);
  });
}

void forward_epilogue_cpu(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                          at::Tensor& out, int64_t C, int64_t inner, Variant v) {
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_forward_epilogue_cpu", [&] {
    VAEISO_PICK(forward_epilogue<S>, cptr<S>(x), mptr<acc_t<S>>(norm), cptr<acc_t<S>>(beta),
                mptr<S>(out), x.numel(), C, inner, v);
  });
}

void backward_t_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    at::Tensor& t, at::Tensor& fx, Variant v) {
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_backward_t_cpu", [&] {
    VAEISO_PICK(backward_t<S>, cptr<S>(g), cptr<S>(x), cptr<acc_t<S>>(norm), mptr<acc_t<S>>(t),
                fx.defined() ? mptr<acc_t<S>>(fx) : nullptr, x.numel(), v);
  });
}

void backward_x_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    const at::Tensor& u, at::Tensor& gx, Variant v) {
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_backward_x_cpu", [&] {
    VAEISO_PICK(backward_x<S>, cptr<S>(g), cptr<S>(x), cptr<acc_t<S>>(norm), cptr<acc_t<S>>(u),
                mptr<S>(gx), x.numel(), v);
  });
}

}  // namespace vaeiso::gdn
