// Run-time choice of the CPU instruction set for kernels compiled more than once
// (`*_avx2.cpp` built with -mavx2 -mfma, `*_avx512.cpp` with AVX-512 F/VL/BW/DQ on x86-64; see
// CMakeLists.txt). VAEISO_CPU_ISA=baseline|avx2|avx512 in the environment caps the choice (tests
// use it so that every build of every kernel is checked on one machine); unset, the best build
// the processor runs is taken.
#pragma once
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace vaeiso {

// 0: the portable build, 1: AVX2 + FMA, 2: AVX-512 (F, VL, BW, DQ) besides.
inline int cpu_isa_level() {
#if defined(VAEISO_CPU_AVX2) && (defined(__x86_64__) || defined(_M_X64))
  static const int level = [] {
    int cpu = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      cpu = 1;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        cpu = 2;
    }
    const char* cap = std::getenv("VAEISO_CPU_ISA");
    if (cap == nullptr || *cap == '\0') return cpu;
    const int want = std::strcmp(cap, "baseline") == 0 ? 0
                     : std::strcmp(cap, "avx2") == 0   ? 1
                     : std::strcmp(cap, "avx512") == 0 ? 2
                                                       : -1;
    if (want < 0)
      throw std::invalid_argument(std::string("VAEISO_CPU_ISA: expected baseline, avx2 or avx512, got '") + cap + "'");
    return want < cpu ? want : cpu;
  }();
  return level;
#else
  return 0;
#endif
}

inline const char* cpu_isa_name() {
  static const char* names[] = {"baseline", "avx2", "avx512"};
  return names[cpu_isa_level()];
}

}  // namespace vaeiso

// VAEISO_PICK(fn, args...) picks between two builds: isa_avx2::fn where the CPU has AVX2+FMA
// (and the cap allows it), else isa_default::fn. VAEISO_PICK_ISA3(fn, args...) picks among three,
// for the families that also have an `*_avx512.cpp` build: isa_avx512::fn where the CPU has
// AVX-512 (F, VL, BW, DQ), else as VAEISO_PICK. Each *_cpu.cpp declares the namespaces its family
// has.
#if defined(VAEISO_CPU_AVX2)
#define VAEISO_PICK(fn, ...) (::vaeiso::cpu_isa_level() >= 1 ? isa_avx2::fn(__VA_ARGS__) : isa_default::fn(__VA_ARGS__))
#define VAEISO_PICK_ISA3(fn, ...)                                 \
  (::vaeiso::cpu_isa_level() >= 2   ? isa_avx512::fn(__VA_ARGS__) \
   : ::vaeiso::cpu_isa_level() >= 1 ? isa_avx2::fn(__VA_ARGS__)   \
                                    : isa_default::fn(__VA_ARGS__))
#else
#define VAEISO_PICK(fn, ...) isa_default::fn(__VA_ARGS__)
#define VAEISO_PICK_ISA3(fn, ...) isa_default::fn(__VA_ARGS__)
#endif
