// parallel_for and the thread count for the CPU kernels, through the stable C shim
// (torch_parallel_for / torch_get_num_threads: torch's own intra-op thread pool, whatever its
// backend, so no OpenMP of ours). Called directly rather than through the stable headers'
// wrappers so that a per-ISA unit compiles none of torch's inline C++ (host_device.h): only
// these two C calls. parallel_for(begin, end, grain, f) has at::parallel_for's meaning; an
// exception thrown by f comes back as a std::runtime_error with a generic message.
#pragma once
#include <torch/csrc/stable/c/shim.h>

#include <cstdint>
#include <stdexcept>

#include "host_device.h"

namespace vaeiso {
VAEISO_ISA_BEGIN

template <class F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  auto call = [](int64_t b, int64_t e, void* ctx) { (*static_cast<const F*>(ctx))(b, e); };
  if (torch_parallel_for(begin, end, grain, call, const_cast<void*>(static_cast<const void*>(&f))) != 0)
    throw std::runtime_error("vaeiso: a CPU kernel task failed");
}

inline int num_threads() {
  uint32_t n = 1;
  if (torch_get_num_threads(&n) != 0) return 1;
  return static_cast<int>(n);
}

VAEISO_ISA_END
}  // namespace vaeiso
