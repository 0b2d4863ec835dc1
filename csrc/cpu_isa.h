// Run-time choice of the CPU instruction set for kernels compiled more than once
// (`*_avx2.cpp` files are built with -mavx2 -mfma on x86-64; see CMakeLists.txt).
#pragma once

namespace vaeiso {

inline bool cpu_has_avx2() {
#if defined(VAEISO_CPU_AVX2) && (defined(__x86_64__) || defined(_M_X64))
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

}  // namespace vaeiso
