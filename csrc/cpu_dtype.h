// Dtype dispatch for the per-ISA CPU kernels, done in the dispatcher units (never in an ISA unit,
// see host_device.h): VAEISO_CPU_DISPATCH(dt, name, ...) runs the lambda body with `S`, the
// storage type the kernels take (float, double, vaeiso::f16, vaeiso::bf16); `cdata<S>(t)` and
// `mdata<S>(t)` (stable_abi.h) give a tensor's data as such (const and mutable). A plain switch: the stable
// ABI's dispatch macros add nothing for four types.
#pragma once
#include "common.h"
#include "cpu_half.h"

namespace vaeiso {

// f(S{}) for the storage type of dtype d; an error naming `name` for any other dtype.
template <typename F>
void dispatch_float(ScalarType d, const char* name, F&& f) {
  switch (d) {
    case ScalarType::Float:
      return f(float{});
    case ScalarType::Double:
      return f(double{});
    case ScalarType::Half:
      return f(f16{});
    case ScalarType::BFloat16:
      return f(bf16{});
    default:
      VAEISO_CHECK(false, "\"", name, "\" not implemented for '", d, "'");
  }
}

}  // namespace vaeiso

#define VAEISO_CPU_DISPATCH(TYPE, NAME, ...)              \
  ::vaeiso::dispatch_float(TYPE, NAME, [&](auto s_tag_) { \
    using S = decltype(s_tag_);                           \
    __VA_ARGS__();                                        \
  })
