// The pair_distances passes, one implementation per device (distance_cpu.cpp,
// distance_cuda.cu), both built on distance_math.h.
//
// Inputs are viewed as base (N, L) and others (N, K, L) with a unit stride along L and
// arbitrary strides along N and K, all in one dtype (the compute dtype of distance.cpp). L is
// split into segments of a fixed, device-chosen length (never dependent on the thread count, so
// results are bitwise reproducible); each segment's sum is taken in a fixed order and the
// segments are added in order, then the per-sample weight applied. Each segment of base is
// read from memory once for all K.
//
// The backward writes d/d base (N, L) and d/d others (N, K, L) (contiguous) and d/d weight
// (N,), each only where the tensor passed is defined.
//
// The convex metrics (Scale, distance_math.h, with no weight) run on the same passes: the factor
// a (N,) computed from base is their weight, and the backward adds the factor's share to d/d
// base, grad_base[n] += (sum over k of grad[n, k] D[n, k]) slope(a[n]) base[n]. The CPU passes
// compute a inside their tasks (no extra pass over base); CUDA writes it first.
#pragma once
#include <optional>

#include "common.h"

#include "distance/distance_math.h"

namespace vaeiso::distance {

struct Strided {
  int64_t N, K, L;
  int64_t base_sn;               // base stride along N (unit along L)
  int64_t others_sn, others_sk;  // others strides along N and K (unit along L)
};

// Elements of L per segment on the CPU: 64-128 KB of base per task stays in L2 while the K
// others stream past it in long runs.
constexpr int64_t kCpuSegment = 16384;

void forward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc,
                 const std::optional<Tensor>& weight, Tensor& out);
void backward_cpu(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc, const Tensor& grad,
                  const std::optional<Tensor>& weight, Tensor& grad_base, Tensor& grad_others, Tensor& grad_weight);

#ifdef VAEISO_WITH_CUDA
void forward_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc,
                  const std::optional<Tensor>& weight, Tensor& out);
void backward_cuda(const Tensor& base, const Tensor& others, const Strided& s, Metric m, Scale sc, const Tensor& grad,
                   const std::optional<Tensor>& weight, Tensor& grad_base, Tensor& grad_others, Tensor& grad_weight);
#endif

}  // namespace vaeiso::distance
