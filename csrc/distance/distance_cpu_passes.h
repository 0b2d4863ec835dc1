// The pair-distance CPU passes as each instruction-set build exports them (distance_cpu_impl.h
// defines them, distance_cpu.cpp dispatches on dtype and ISA): base and others as raw storage S
// (float, double, f16, bf16) with the strides of `Strided`, results written in S. No tensors
// and no checks here: those stay out of the ISA units.
#pragma once
#include <cstdint>

#include "cpu_half.h"
#include "distance/distance_entry.h"

namespace vaeiso::distance {

// The backward's operands besides base and others: the incoming gradient (N, K) with its
// strides, the optional per-sample weight, and the outputs (null where not wanted):
// grad_base (N, L) and grad_others (N, K, L) contiguous, grad_weight (N,). With a convex
// metric (Scale other than kNone) the passes compute the factor from base themselves: weight is
// null then, and grad_base includes the factor's share.
template <typename S>
struct Grads {
  const S* grad;
  int64_t grad_sn, grad_sk;
  const S* weight;  // null: no weight
  int64_t weight_sn;
  S* grad_base;
  S* grad_others;
  S* grad_weight;
};

}  // namespace vaeiso::distance

#define VAEISO_DISTANCE_DECLARE_PASSES(ns)                                                                \
  namespace ns {                                                                                          \
  template <typename S>                                                                                   \
  void forward(const S* base, const S* others, const Strided& s, Metric m, Scale sc, const S* weight,     \
               int64_t weight_sn, S* out);                                                                \
  template <typename S>                                                                                   \
  void backward(const S* base, const S* others, const Strided& s, Metric m, Scale sc, const Grads<S>& g); \
  }
