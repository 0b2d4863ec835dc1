// SSIM CPU passes compiled with AVX2 + FMA (CMake adds -mavx2 -mfma to *_avx2.cpp on x86-64).
#define VAEISO_CPU_ISA isa_avx2
#include "ssim/ssim_cpu_impl.h"
