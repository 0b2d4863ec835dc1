// GDN CPU passes compiled with AVX-512 (F, VL, BW, DQ; CMake adds the flags to *_avx512.cpp on
// x86-64): 16 floats per register for the element-wise passes and their 1/sqrt.
#define VAEISO_CPU_ISA isa_avx512
#include "gdn/gdn_cpu_impl.h"
