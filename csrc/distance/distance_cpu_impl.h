// CPU pair distances, forward and backward, each one pass over the inputs that writes its
// results directly. Compiled once per instruction set (distance_cpu_default.cpp,
// distance_cpu_avx2.cpp) into the namespace VAEISO_CPU_ISA (see host_device.h);
// distance_cpu.cpp dispatches on dtype and picks one at run time.
//
// Forward: at::parallel_for over (sample, segment, block of others) tasks. A task keeps one
// segment of base in cache and streams its others past it, so base is read from memory once
// for all K. Terms are computed in the accumulation dtype (float for the half types), summed
// kLanes wide in short runs in that dtype and then in double; a sample longer than one segment
// sums its per-segment results in order afterwards. Segments have a fixed length and the
// blocks of others only choose who computes which sum, so results never depend on the thread
// count.
//
// Backward: tasks of (sample, chunk of kChunk elements). A task walks its chunk in blocks of
// kBlock elements; for each block it visits the K others in order, writing d/d others and
// adding into d/d base (kept in L1 for the block), so every input is read once and every
// output written once.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including distance_cpu_impl.h"
#endif
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu_half.h"
#include "distance/distance_math.h"
#include "distance/distance_cpu_passes.h"

namespace vaeiso::distance {
VAEISO_DISTANCE_DECLARE_PASSES(VAEISO_CPU_ISA)
}

namespace vaeiso::distance::VAEISO_CPU_ISA {
namespace {

constexpr int64_t kSegment = kCpuSegment;
constexpr int64_t kGrainElems = 1 << 15;  // work per parallel task below which threads cost more
constexpr int kLanes = 16;                // independent accumulators (fixed order: deterministic)
constexpr int kFlush = 32;                // terms per lane summed in the input dtype
constexpr int64_t kChunk = 4096;          // backward: elements per task (fixed: deterministic)
constexpr int64_t kBlock = kLanes * kFlush;  // backward: elements of base per sweep over K

template <typename S>
inline void load_group(const S* p, acc_t<S>* v) {
  for (int l = 0; l < kLanes; ++l) v[l] = load(p[l]);
}

// The kLanes partial sums in double, added as a fixed tree (vectorises; deterministic).
template <typename T>
inline double lanes_sum(const T* acc) {
  double d[kLanes];
  for (int l = 0; l < kLanes; ++l) d[l] = static_cast<double>(acc[l]);
  for (int l = 0; l < kLanes / 2; ++l) d[l] += d[l + kLanes / 2];
  for (int l = 0; l < kLanes / 4; ++l) d[l] += d[l + kLanes / 4];
  for (int l = 0; l < kLanes / 8; ++l) d[l] += d[l + kLanes / 8];
  return d[0] + d[1];
}

// term(b[l], o[l]) for kLanes elements, written so the compiler vectorises it. BCE: the series
// form of both halves for all lanes at once (branch-free), and the exact scalar bce_term for
// the whole group only where some lane needs another branch (binary targets, perturbations
// beyond kSmallT, NaN): the formulas of bce_term, ~4x faster.
template <Metric M, typename T>
inline void group_terms(const T* b, const T* o, T* t) {
  if constexpr (M == Metric::kSSE) {
    for (int l = 0; l < kLanes; ++l) t[l] = sse_term(b[l], o[l]);
  } else {
    int ok = 1;
    for (int l = 0; l < kLanes; ++l) {
      const T p = b[l], q = o[l], d = q - p, pc = T(1) - p, qc = T(1) - q;
      ok &= static_cast<int>(kl_half_is_small(p, d)) & static_cast<int>(kl_half_is_small(pc, -d));
      t[l] = kl_half_series(p, q, d) + kl_half_series(pc, qc, -d);
    }
    if (!ok)
      for (int l = 0; l < kLanes; ++l) t[l] = bce_term(b[l], o[l]);
  }
}

// dD/do and dD/db for kLanes elements, the same way: the series forms branch-free, the exact
// scalar functions for a group where some lane needs them.
template <Metric M, typename T>
inline void group_grads(const T* b, const T* o, T* po, T* pb) {
  if constexpr (M == Metric::kSSE) {
    for (int l = 0; l < kLanes; ++l) {
      po[l] = T(2) * (o[l] - b[l]);
      pb[l] = -po[l];
    }
  } else {
    int ok = 1;
    for (int l = 0; l < kLanes; ++l) {
      ok &= static_cast<int>(bce_grad_is_small(b[l], o[l]));
      po[l] = bce_grad_other_series(b[l], o[l]);
      pb[l] = bce_grad_base_series(b[l], o[l]);
    }
    if (!ok)
      for (int l = 0; l < kLanes; ++l) {
        po[l] = bce_grad_other(b[l], o[l]);
        pb[l] = bce_grad_base(b[l], o[l]);
      }
  }
}

// Sum of term(b[i], o[i]) over one segment, kLanes at a time. Each lane sums up to kFlush
// terms in the accumulation dtype (float SIMD with AVX2), then the lanes are added in double,
// so the rounding stays ~kFlush ulp per lane for any segment length. Fixed order: deterministic.
template <Metric M, typename S>
double segment_sum(const S* b, const S* o, int64_t len) {
  using T = acc_t<S>;
  double total = 0;
  int64_t i = 0;
  while (i + kLanes <= len) {
    T acc[kLanes] = {};
    for (int g = 0; g < kFlush && i + kLanes <= len; ++g, i += kLanes) {
      T bv[kLanes], ov[kLanes], t[kLanes];
      load_group(b + i, bv);
      load_group(o + i, ov);
      group_terms<M>(bv, ov, t);
      for (int l = 0; l < kLanes; ++l) acc[l] += t[l];
    }
    total += lanes_sum(acc);
  }
  for (; i < len; ++i) total += static_cast<double>(term<M>(load(b[i]), load(o[i])));
  return total;
}

template <typename S>
inline S weighted(double v, const S* w, int64_t n, int64_t w_sn) {
  if (w != nullptr) v *= static_cast<double>(load(w[n * w_sn]));
  return store<S>(static_cast<acc_t<S>>(v));
}

template <Metric M, typename S>
void forward_impl(const S* bp, const S* op, const Strided& s, const S* w, int64_t w_sn, S* out) {
  const int64_t N = s.N, K = s.K, L = s.L;
  const int64_t segs = L > kSegment ? (L + kSegment - 1) / kSegment : 1;
  const int64_t seg_len = std::min(L, kSegment);
  // Blocks of others only when (sample, segment) units are too few to occupy the threads
  // (few big samples); which thread sums what never changes a result.
  const int64_t units = N * segs, want = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t kb = units >= want ? K : std::max<int64_t>(1, K * units / want);
  const int64_t kblocks = (K + kb - 1) / kb;
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, seg_len * kb));
  // per-segment sums of samples longer than one segment, added in order below
  std::vector<double> part(segs > 1 ? N * segs * K : 0);
  at::parallel_for(0, units * kblocks, grain, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t unit = task / kblocks, k0 = (task % kblocks) * kb, k1 = std::min(K, k0 + kb);
      const int64_t n = unit / segs, seg = unit % segs;
      const int64_t i0 = seg * kSegment, len = std::min(kSegment, L - i0);
      const S* b = bp + n * s.base_sn + i0;
      const S* o = op + n * s.others_sn + i0;
      for (int64_t k = k0; k < k1; ++k) {
        const double v = segment_sum<M>(b, o + k * s.others_sk, len);
        if (segs == 1) {
          out[n * K + k] = weighted(v, w, n, w_sn);
        } else {
          part[unit * K + k] = v;
        }
      }
    }
  });
  if (segs == 1) return;
  at::parallel_for(0, N, std::max<int64_t>(1, 4096 / (segs * K)), [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t seg = 0; seg < segs; ++seg) acc += part[(n * segs + seg) * K + k];
        out[n * K + k] = weighted(acc, w, n, w_sn);
      }
  });
}

template <Metric M, typename S>
void backward_impl(const S* bp, const S* op, const Strided& s, const Grads<S>& g) {
  using T = acc_t<S>;
  const int64_t N = s.N, K = s.K, L = s.L;
  const int64_t chunks = std::max<int64_t>(1, (L + kChunk - 1) / kChunk);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, K * std::min(L, kChunk)));
  const bool need_d = g.grad_weight != nullptr;
  // D[n, k] per chunk (for the weight's gradient), added in order below
  std::vector<double> part(need_d ? N * chunks * K : 0);
  at::parallel_for(0, N * chunks, grain, [&](int64_t tb, int64_t te) {
    alignas(64) T db[kBlock];
    for (int64_t task = tb; task < te; ++task) {
      const int64_t n = task / chunks, c = task % chunks;
      const int64_t c0 = c * kChunk, c1 = std::min(L, c0 + kChunk);
      const T wn = g.weight != nullptr ? load(g.weight[n * g.weight_sn]) : T(1);
      double* dsum = need_d ? part.data() + task * K : nullptr;
      if (need_d) std::fill(dsum, dsum + K, 0.0);
      for (int64_t i0 = c0; i0 < c1; i0 += kBlock) {
        const int64_t len = std::min(kBlock, c1 - i0), full = len - len % kLanes;
        const S* b = bp + n * s.base_sn + i0;
        if (g.grad_base != nullptr) std::fill(db, db + len, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const S* o = op + n * s.others_sn + k * s.others_sk + i0;
          S* dop = g.grad_others != nullptr ? g.grad_others + (n * K + k) * L + i0 : nullptr;
          // the eager formula's grad * weight, rounded once in the accumulation dtype
          const T gw = load(g.grad[n * g.grad_sn + k * g.grad_sk]) * wn;
          T tacc[kLanes] = {};
          for (int64_t i = 0; i < full; i += kLanes) {
            T bv[kLanes], ov[kLanes], po[kLanes], pb[kLanes];
            load_group(b + i, bv);
            load_group(o + i, ov);
            group_grads<M>(bv, ov, po, pb);
            if (dop != nullptr)
              for (int l = 0; l < kLanes; ++l) dop[i + l] = store<S>(gw * po[l]);
            if (g.grad_base != nullptr)
              for (int l = 0; l < kLanes; ++l) db[i + l] += gw * pb[l];
            if (need_d) {
              T t[kLanes];
              group_terms<M>(bv, ov, t);
              for (int l = 0; l < kLanes; ++l) tacc[l] += t[l];
            }
          }
          double tail = 0;
          for (int64_t i = full; i < len; ++i) {
            const T bi = load(b[i]), oi = load(o[i]);
            T po, pb;
            if constexpr (M == Metric::kSSE) {
              po = T(2) * (oi - bi);
              pb = -po;
            } else {
              po = bce_grad_other(bi, oi);
              pb = bce_grad_base(bi, oi);
            }
            if (dop != nullptr) dop[i] = store<S>(gw * po);
            if (g.grad_base != nullptr) db[i] += gw * pb;
            if (need_d) tail += static_cast<double>(term<M>(bi, oi));
          }
          if (need_d) dsum[k] += lanes_sum(tacc) + tail;
        }
        if (g.grad_base != nullptr) {
          S* dbp = g.grad_base + n * L + i0;
          for (int64_t i = 0; i < len; ++i) dbp[i] = store<S>(db[i]);
        }
      }
    }
  });
  if (!need_d) return;
  // d/d weight[n] = sum over k of grad[n, k] D[n, k], D summed over chunks in order, in double
  at::parallel_for(0, N, std::max<int64_t>(1, 4096 / (chunks * K)), [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        double d = 0;
        for (int64_t c = 0; c < chunks; ++c) d += part[(n * chunks + c) * K + k];
        acc += static_cast<double>(load(g.grad[n * g.grad_sn + k * g.grad_sk])) * d;
      }
      g.grad_weight[n] = store<S>(static_cast<T>(acc));
    }
  });
}

}  // namespace

template <typename S>
void forward(const S* base, const S* others, const Strided& s, Metric m, const S* weight,
             int64_t weight_sn, S* out) {
  if (m == Metric::kSSE) {
    forward_impl<Metric::kSSE>(base, others, s, weight, weight_sn, out);
  } else {
    forward_impl<Metric::kBCE>(base, others, s, weight, weight_sn, out);
  }
}

template <typename S>
void backward(const S* base, const S* others, const Strided& s, Metric m, const Grads<S>& g) {
  if (m == Metric::kSSE) {
    backward_impl<Metric::kSSE>(base, others, s, g);
  } else {
    backward_impl<Metric::kBCE>(base, others, s, g);
  }
}

#define VAEISO_DISTANCE_INSTANTIATE(S)                                                         \
  template void forward<S>(const S*, const S*, const Strided&, Metric, const S*, int64_t, S*); \
  template void backward<S>(const S*, const S*, const Strided&, Metric, const Grads<S>&);
VAEISO_DISTANCE_INSTANTIATE(float)
VAEISO_DISTANCE_INSTANTIATE(double)
VAEISO_DISTANCE_INSTANTIATE(f16)
VAEISO_DISTANCE_INSTANTIATE(bf16)
#undef VAEISO_DISTANCE_INSTANTIATE

}  // namespace vaeiso::distance::VAEISO_CPU_ISA
