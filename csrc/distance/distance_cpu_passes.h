// The pair-distance CPU pass as each instruction-set build exports it (distance_cpu_impl.h
// defines it, distance_cpu.cpp dispatches on dtype and ISA): base and others as raw storage S
// (float, double, f16, bf16) with the strides of `Strided`, partial sums (N, segments, K) in
// double. No tensors and no checks here: those stay out of the ISA units.
#pragma once
#include <cstdint>

#include "cpu_half.h"
#include "distance/distance_kernels.h"

#define VAEISO_DISTANCE_DECLARE_PASSES(ns)                                                  \
  namespace ns {                                                                            \
  template <typename S>                                                                     \
  void partials(const S* base, const S* others, const Strided& s, Metric m, int64_t segments, \
                double* partial);                                                           \
  }
