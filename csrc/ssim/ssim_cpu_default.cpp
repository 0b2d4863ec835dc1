// SSIM CPU passes for the baseline instruction set (any x86-64 or other CPU).
#define VAEISO_CPU_ISA isa_default
#include "ssim/ssim_cpu_impl.h"
