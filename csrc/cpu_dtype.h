// Dtype dispatch for the per-ISA CPU kernels, done in the dispatcher units (never in an ISA unit,
// see host_device.h): VAEISO_CPU_DISPATCH(dt, name, ...) runs the lambda body with `S`, the
// storage type the kernels take (float, double, vaeiso::f16, vaeiso::bf16); `cptr<S>(t)` and
// `mptr<S>(t)` give a tensor's data as such (const and mutable).
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

#include <type_traits>

#include "cpu_half.h"

namespace vaeiso {

template <typename T>
struct StorageOf {
  using type = T;
};
template <>
struct StorageOf<c10::Half> {
  using type = f16;
};
template <>
struct StorageOf<c10::BFloat16> {
  using type = bf16;
};

static_assert(sizeof(f16) == sizeof(c10::Half) && sizeof(bf16) == sizeof(c10::BFloat16));

// Tensor data as the kernels' storage type S (or its accumulation type).
template <typename S>
const S* cptr(const at::Tensor& t) {
  return reinterpret_cast<const S*>(t.const_data_ptr());
}
template <typename S>
S* mptr(at::Tensor& t) {
  return reinterpret_cast<S*>(t.mutable_data_ptr());
}

}  // namespace vaeiso

#define VAEISO_CPU_DISPATCH(TYPE, NAME, ...)                                                     \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, [&] {                    \
    using S = typename ::vaeiso::StorageOf<scalar_t>::type;                                      \
    __VA_ARGS__();                                                                               \
  })
