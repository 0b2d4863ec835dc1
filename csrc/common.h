// Shared helpers for every op family: the host/device qualifier for shared math, and
// argument checks whose messages name the argument (docs/ops.md, conventions).
#pragma once

#include "host_device.h"

#ifndef __CUDACC__
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <string>

// VAEISO_ON_DEVICE(fn, t, args...): fn_cuda(args...) for a CUDA tensor t, else fn_cpu(args...).
#ifdef VAEISO_WITH_CUDA
#define VAEISO_ON_DEVICE(fn, t, ...) ((t).is_cuda() ? fn##_cuda(__VA_ARGS__) : fn##_cpu(__VA_ARGS__))
#else
#define VAEISO_ON_DEVICE(fn, t, ...) fn##_cpu(__VA_ARGS__)
#endif

namespace vaeiso {

inline bool is_half(at::ScalarType dt) { return dt == at::kHalf || dt == at::kBFloat16; }

// The dtype the kernels compute in: float32 for the half types.
inline at::ScalarType acc_type(at::ScalarType dt) { return is_half(dt) ? at::kFloat : dt; }

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || is_half(dt), name,
              ": expected float32, float64, float16 or bfloat16, got ", dt);
}

// The two inputs of a loss (prediction and target, docs/ops.md, conventions): the same dtype, or the mix autocast
// produces, a half type against float32, which computes in float32. Returns the dtype to compute
// in (and of the output); anything else mixed is an error naming `name`.
inline at::ScalarType loss_pair_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name,
                                      const char* ref_name) {
  const auto a = t.scalar_type(), b = ref.scalar_type();
  if (a == b) return a;
  TORCH_CHECK((is_half(a) && b == at::kFloat) || (a == at::kFloat && is_half(b)), name,
              ": expected dtype ", b, " (the dtype of ", ref_name,
              "), or float32 against a float16/bfloat16 ", ref_name, " (autocast's mix), got ", a);
  return at::kFloat;
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ", ref.scalar_type(),
              " (the dtype of ", ref_name, "), got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name,
                              const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, ": expected a tensor on ", ref.device(),
              " (the device of ", ref_name, "), got ", t.device());
}

}  // namespace vaeiso
#endif
