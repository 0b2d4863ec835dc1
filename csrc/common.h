// Shared helpers for every op family: the host/device qualifier for shared math, and
// argument checks whose messages name the argument (SPEC §2).
#pragma once

#ifdef __CUDACC__
#define VAEISO_HD __host__ __device__ __forceinline__
#else
#define VAEISO_HD inline
#endif

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

inline void check_float_dtype(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  const bool half = dt == at::kHalf || dt == at::kBFloat16;
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || (half && t.is_cuda()),
              name, ": expected float32 or float64 (float16/bfloat16 on CUDA only), got ", dt,
              " on ", t.device());
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
