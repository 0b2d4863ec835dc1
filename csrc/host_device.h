// What the per-element math headers (*_math.h) need and nothing more: the host/device qualifier,
// and the per-ISA namespace that keeps each CPU instruction-set build of them apart.
#pragma once

#ifdef __CUDACC__
#define VAEISO_HD __host__ __device__ __forceinline__
#else
#define VAEISO_HD inline
#endif

// A CPU kernel compiled once per instruction set (`*_cpu_avx512.cpp`, `*_cpu_avx2.cpp`,
// `*_cpu_default.cpp`) defines VAEISO_CPU_ISA (isa_avx512, isa_avx2, isa_default) before its
// first include. Everything such a unit compiles from our headers then lives in
// `inline namespace VAEISO_CPU_ISA`: each build's copy of an inline function has its own mangled
// name, so the linker can never hand the baseline path the AVX2 copy of a function that was not
// inlined (one definition per name otherwise).
// Elsewhere (the dispatcher units, the .cu files) these expand to nothing.
#ifdef VAEISO_CPU_ISA
#define VAEISO_ISA_BEGIN inline namespace VAEISO_CPU_ISA {
#define VAEISO_ISA_END }
#else
#define VAEISO_ISA_BEGIN
#define VAEISO_ISA_END
#endif
