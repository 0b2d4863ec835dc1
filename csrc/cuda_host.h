// The host side of the CUDA units on the stable ABI (docs/design.md, stable-ABI rules): torch's
// current stream and cuBLAS handle through the C shim (USE_CUDA builds only), launch and CUDA
// call checks that throw std::runtime_error (Python sees a RuntimeError), the kernels' math type
// (float for the half types, as ATen's opmath_type), and a dtype switch binding `scalar_t` to
// the header-only Half / BFloat16 (whose conversions are inline, device code included).
#pragma once
#include <cuda_runtime.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "common.h"

namespace vaeiso {

inline cudaStream_t current_stream(const Tensor& t) {
  void* s = nullptr;
  VAEISO_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &s) == 0,
               "vaeiso: cannot get the current CUDA stream");
  return static_cast<cudaStream_t>(s);
}

inline void check_cuda(cudaError_t e, const char* what) {
  VAEISO_CHECK(e == cudaSuccess, "CUDA error: ", cudaGetErrorString(e), " (", what, ")");
}

// After a kernel launch (what C10_CUDA_KERNEL_LAUNCH_CHECK did).
inline void check_launch() { check_cuda(cudaGetLastError(), "kernel launch"); }

template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<torch::headeronly::Half> {
  using type = float;
};
template <>
struct OpMath<torch::headeronly::BFloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

}  // namespace vaeiso

#define VAEISO_CUDA_CHECK(expr) ::vaeiso::check_cuda((expr), #expr)

// VAEISO_DISPATCH_CUDA(dtype, name, lambda): the lambda with `scalar_t` bound to float, double,
// Half or BFloat16.
#define VAEISO_DISPATCH_CUDA(TYPE, NAME, ...)                                   \
  [&] {                                                                         \
    switch (TYPE) {                                                             \
      case ::vaeiso::dt::kFloat: {                                              \
        using scalar_t = float;                                                 \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      case ::vaeiso::dt::kDouble: {                                             \
        using scalar_t = double;                                                \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      case ::vaeiso::dt::kHalf: {                                               \
        using scalar_t = torch::headeronly::Half;                               \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      case ::vaeiso::dt::kBFloat16: {                                           \
        using scalar_t = torch::headeronly::BFloat16;                           \
        return __VA_ARGS__();                                                   \
      }                                                                         \
      default:                                                                  \
        VAEISO_CHECK(false, "\"", NAME, "\" not implemented for '", TYPE, "'"); \
    }                                                                           \
  }()
