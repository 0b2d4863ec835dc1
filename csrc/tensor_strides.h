// A tensor's strides as a value: the SSIM entry points read images through their strides (any
// layout, expanded dims included), the CPU passes as an int64_t array (`.s`), the CUDA kernels as
// a by-value kernel argument. Host code for units compiled once (ssim_cpu.cpp, the host side of
// ssim_cuda.cu), not for the per-ISA builds of *_cpu_impl.h (host_device.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "common.h"

namespace vaeiso {

template <size_t D>
struct Strides {
  int64_t s[D];
};

// The strides of t's first D dims (t.dim() == D).
template <size_t D>
inline Strides<D> strides_of(const Tensor& t) {
  Strides<D> r{};
  for (size_t i = 0; i < D; ++i) r.s[i] = t.stride(static_cast<int64_t>(i));
  return r;
}

}  // namespace vaeiso
