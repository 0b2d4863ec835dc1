// Run-time choice of the CPU instruction set for kernels compiled more than once
// (`*_avx2.cpp` files are built with -mavx2 -mfma on x86-64; see CMakeLists.txt).
// VAEISO_CPU_BASELINE=1 in the environment forces the baseline build (tests use it so both
// builds of every kernel are checked on an AVX2 machine).
#pragma once
#include <cstdlib>
#include <cstring>

namespace vaeiso {

inline bool cpu_has_avx2() {
#if defined(VAEISO_CPU_AVX2) && (defined(__x86_64__) || defined(_M_X64))
  static const bool ok = [] {
    const char* force = std::getenv("VAEISO_CPU_BASELINE");
    if (force != nullptr && std::strcmp(force, "") != 0 && std::strcmp(force, "0") != 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace vaeiso

// VAEISO_PICK(fn, args...): call isa_avx2::fn where the CPU has AVX2+FMA, else isa_default::fn
// (each *_cpu.cpp declares both namespaces for its family's kernels).
#if defined(VAEISO_CPU_AVX2)
#define VAEISO_PICK(fn, ...) \
  (::vaeiso::cpu_has_avx2() ? isa_avx2::fn(__VA_ARGS__) : isa_default::fn(__VA_ARGS__))
#else
#define VAEISO_PICK(fn, ...) isa_default::fn(__VA_ARGS__)
#endif
