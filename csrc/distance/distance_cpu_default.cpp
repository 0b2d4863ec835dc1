// Pair-distance CPU kernels for the baseline instruction set (any x86-64 or other CPU).
#define VAEISO_CPU_ISA isa_default
#include "distance/distance_cpu_impl.h"
