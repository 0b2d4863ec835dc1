// SSIM CPU passes compiled with AVX-512 (F, VL, BW, DQ; CMake adds the flags to *_avx512.cpp on
// x86-64): 16 floats per register for the window filters.
#define VAEISO_CPU_ISA isa_avx512
#include "ssim/ssim_cpu_impl.h"
