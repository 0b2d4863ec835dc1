// GDN CPU entry points: dtype dispatch, then the AVX-512 or AVX2 build of the kernels where the
// CPU has it, else the baseline (gdn_cpu_passes.h).
#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "gdn/gdn_cpu_passes.h"
#include "gdn/gdn_entry.h"

namespace vaeiso::gdn {

VAEISO_GDN_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_GDN_DECLARE_PASSES(isa_avx2)
VAEISO_GDN_DECLARE_PASSES(isa_avx512)
#endif

namespace {
// (N, C, positions) of a dense tensor in the chosen layout
struct Shape {
  int64_t N, C, Sp;
};
Shape shape_of(const Tensor& x, bool cl) {
  const int64_t N = x.size(0), C = x.size(1), M = C == 0 ? 0 : x.numel() / C;
  return cl ? Shape{N, C, M} : Shape{N, C, N == 0 ? 0 : M / N};
}
template <typename T>
T* opt_ptr(const Tensor& t) {
  return t.defined() ? mdata<T>(t) : nullptr;
}
}  // namespace

void forward_cpu(const Tensor& x, const Tensor& beta, const Tensor& gamma, Tensor& out, Tensor& norm, bool cl,
                 Variant v) {
  const auto s = shape_of(x, cl);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_forward_cpu", [&] {
    using A = acc_t<S>;
    VAEISO_PICK_ISA3(forward<S>, cdata<S>(x), cdata<A>(beta), cdata<A>(gamma), mdata<S>(out), opt_ptr<A>(norm), s.N,
                     s.C, s.Sp, cl, v);
  });
}

void backward_cpu(const Tensor& g, const Tensor& x, const Tensor& norm, const Tensor& gamma, Tensor& gx, Tensor& gbeta,
                  Tensor& ggamma, bool cl, Variant v) {
  const auto s = shape_of(x, cl);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "gdn_backward_cpu", [&] {
    using A = acc_t<S>;
    VAEISO_PICK_ISA3(backward<S>, cdata<S>(g), cdata<S>(x), cdata<A>(norm), cdata<A>(gamma), opt_ptr<S>(gx),
                     opt_ptr<A>(gbeta), opt_ptr<A>(ggamma), s.N, s.C, s.Sp, cl, v);
  });
}

}  // namespace vaeiso::gdn
