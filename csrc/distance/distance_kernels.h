// The two passes of pair_distances, one implementation per device (distance_cpu.cpp,
// distance_cuda.cu), both built on distance_math.h.
//
// Inputs are viewed as base (N, L) and others (N, K, L) with a unit stride along L and
// arbitrary strides along N and K. The partial pass splits L into segments of a fixed,
// device-chosen length (never dependent on the thread count, so results are bitwise
// reproducible) and writes partial[n, s, k] = sum over segment s of term(base, others[k]) in
// the accumulation dtype; each segment of base is read from memory once for all K. The
// finalize pass sums the segments in order and applies the per-sample weight.
#pragma once
#include <ATen/core/Tensor.h>
#include <optional>

#include "distance/distance_math.h"

namespace vaeiso::distance {

struct Strided {
  int64_t N, K, L;
  int64_t base_sn;                 // base stride along N (unit along L)
  int64_t others_sn, others_sk;    // others strides along N and K (unit along L)
};

// Elements of L per partial segment, per device. CPU: 64-128 KB of base per task stays in L2
// while the K others stream past it in long runs.
constexpr int64_t kCpuSegment = 16384;
int64_t segment_length_cpu();
at::ScalarType partial_dtype_cpu(at::ScalarType dt);
void partials_cpu(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                  at::Tensor& partial);
void finalize_cpu(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                  at::Tensor& out);

#ifdef VAEISO_WITH_CUDA
int64_t segment_length_cuda();
at::ScalarType partial_dtype_cuda(at::ScalarType dt);
void partials_cuda(const at::Tensor& base, const at::Tensor& others, const Strided& s, Metric m,
                   at::Tensor& partial);
void finalize_cuda(const at::Tensor& partial, const std::optional<at::Tensor>& weight,
                   at::Tensor& out);
#endif

}  // namespace vaeiso::distance
