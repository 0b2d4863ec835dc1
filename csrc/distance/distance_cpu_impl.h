// CPU pair distances, forward and backward, each one pass over the inputs that writes its
// results directly. Compiled once per instruction set (distance_cpu_default.cpp,
// distance_cpu_avx2.cpp) into the namespace VAEISO_CPU_ISA (see host_device.h);
// distance_cpu.cpp dispatches on dtype and picks one at run time.
//
// Forward: parallel_for over (sample, segment, block of others) tasks. A task keeps one
// segment of base in cache and streams its others past it, so base is read from memory once
// for all K. Terms are computed in the accumulation dtype (float for the half types), summed
// kLanes wide in short runs in that dtype and then in double; a sample longer than one segment
// sums its per-segment results in order afterwards. Segments have a fixed length and the
// blocks of others only choose who computes which sum, so results never depend on the thread
// count.
//
// Backward: tasks of (sample, chunk of kChunk elements). A task visits the K others in order,
// streaming each one's chunk (one read and one write stream at a time, which the hardware
// prefetchers follow) while d/d base for the chunk accumulates in cache; every input is read
// once and every output written once.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including distance_cpu_impl.h"
#endif
#include "cpu_parallel.h"

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_half.h"
#include "cpu_simd.h"
#include "distance/distance_math.h"
#include "distance/distance_cpu_passes.h"

namespace vaeiso::distance {
VAEISO_DISTANCE_DECLARE_PASSES(VAEISO_CPU_ISA)
}

namespace vaeiso::distance::VAEISO_CPU_ISA {
namespace {

constexpr int64_t kSegment = kCpuSegment;
// Elements per parallel task: below ~2 tasks of this (tens of microseconds on one thread) a
// call runs on the calling thread, as waking the pool would cost as much as the work.
constexpr int64_t kGrainElems = 1 << 17;
constexpr int kLanes = 16;        // independent accumulators (fixed order: deterministic)
constexpr int kFlush = 32;        // terms per lane summed in the input dtype
constexpr int64_t kChunk = 4096;  // backward: elements per task (fixed: deterministic)

// A group of kLanes elements is kVecs SIMD vectors (cpu_simd.h: 8 floats or 4 doubles per 32
// bytes; the baseline build lowers each to two SSE registers). Loads and stores convert the half
// types lane by lane.
using simd::all_lanes;
using simd::reduce8;
template <typename T>
using vec_t = typename simd::VecOf<T, 32>::type;
template <typename T>
constexpr int kWidth = static_cast<int>(32 / sizeof(T));
template <typename T>
constexpr int kVecs = kLanes / kWidth<T>;

template <typename S>
inline vec_t<acc_t<S>> vload(const S* p) {
  using T = acc_t<S>;
  vec_t<T> v;
  if constexpr (std::is_same_v<S, T>) {
    v = simd::loadu<vec_t<T>>(p);
  } else {
    for (int l = 0; l < kWidth<T>; ++l) v[l] = load(p[l]);
  }
  return v;
}

template <typename S>
inline void vstore(S* p, vec_t<acc_t<S>> v) {
  using T = acc_t<S>;
  if constexpr (std::is_same_v<S, T>) {
    simd::storeu(p, v);
  } else {
    for (int l = 0; l < kWidth<T>; ++l) p[l] = store<S>(v[l]);
  }
}

// The kLanes partial sums added as a fixed tree (deterministic). float: the two vectors lane
// by lane, then the 8 lanes pairwise in float (3 more roundings, ~2e-7 relative), the order
// reduce8 (cpu_simd.h) reproduces for eight sums at once; double: the same in double.
template <typename T>
inline double lanes_sum(const vec_t<T>* acc) {
  if constexpr (std::is_same_v<T, float>) {
    const vec_t<float> s = acc[0] + acc[1];
    return static_cast<double>(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
  } else {
    const vec_t<double> s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    return (s[0] + s[1]) + (s[2] + s[3]);
  }
}

// term(b, o) for one vector. BCE: the series form of both halves for all lanes at once
// (branch-free), and the exact scalar bce_term lane by lane only where some lane needs another
// branch (binary targets, perturbations beyond kSmallT, NaN): the formulas of bce_term.
template <Metric M, typename T>
inline vec_t<T> vec_terms(vec_t<T> b, vec_t<T> o) {
  using V = vec_t<T>;
  if constexpr (M == Metric::kSSE) {
    const V d = o - b;
    return d * d;
  } else {
    const V d = o - b, bc = T(1) - b, oc = T(1) - o;
    const auto ok = kl_half_is_small<V, T>(b, d) & kl_half_is_small<V, T>(bc, -d);
    V t = kl_half_series<V, T>(b, o, d) + kl_half_series<V, T>(bc, oc, -d);
    if (!all_lanes(ok))
      for (int l = 0; l < kWidth<T>; ++l) t[l] = bce_term(b[l], o[l]);
    return t;
  }
}

// dD/do and dD/db for one vector, the same way.
template <Metric M, typename T>
inline void vec_grads(vec_t<T> b, vec_t<T> o, vec_t<T>& po, vec_t<T>& pb) {
  using V = vec_t<T>;
  if constexpr (M == Metric::kSSE) {
    po = T(2) * (o - b);
    pb = -po;
  } else {
    po = bce_grad_other_series<V, T>(b, o);
    pb = bce_grad_base_series<V, T>(b, o);
    if (!all_lanes(bce_grad_is_small<V, T>(b, o)))
      for (int l = 0; l < kWidth<T>; ++l) {
        po[l] = bce_grad_other(b[l], o[l]);
        pb[l] = bce_grad_base(b[l], o[l]);
      }
  }
}

// Sum of term(b[i], o[i]) over one segment, kLanes at a time. Each lane sums up to kFlush
// terms in the accumulation dtype, then the lanes are added in double, so the rounding stays
// ~kFlush ulp per lane for any segment length. Fixed order: deterministic.
template <Metric M, typename S>
double segment_sum(const S* b, const S* o, int64_t len) {
  using T = acc_t<S>;
  constexpr int W = kWidth<T>, NV = kVecs<T>;
  double total = 0;
  int64_t i = 0;
  while (i + kLanes <= len) {
    vec_t<T> acc[NV] = {};
    for (int g = 0; g < kFlush && i + kLanes <= len; ++g, i += kLanes)
      for (int a = 0; a < NV; ++a) acc[a] += vec_terms<M, T>(vload(b + i + a * W), vload(o + i + a * W));
    total += lanes_sum<T>(acc);
  }
  for (; i < len; ++i) total += static_cast<double>(term<M>(load(b[i]), load(o[i])));
  return total;
}

// The convex metrics' factor of one sample (scale_of, distance_math.h) from its base row: the
// squared norm in double, in order, four chains (a short row is latency-bound otherwise).
// Computed inside the passes, so the toy's short rows pay no extra pass over base and no extra
// wake-up of the threads (the factor's eager ops, or a separate pass, cost a fifth of the call).
template <typename S>
inline acc_t<S> row_factor(const S* row, int64_t L, Scale sc) {
  double q[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= L; i += 4)
    for (int j = 0; j < 4; ++j) {
      const double v = load(row[i + j]);
      q[j] += v * v;
    }
  for (; i < L; ++i) {
    const double v = load(row[i]);
    q[0] += v * v;
  }
  return static_cast<acc_t<S>>(scale_of((q[0] + q[1]) + (q[2] + q[3]), sc));
}

// Sample n's weight in the accumulation dtype: the convex metric's factor, the given weight, or 1.
template <typename S>
inline acc_t<S> sample_weight(const S* bp, const Strided& s, Scale sc, const S* w, int64_t w_sn, int64_t n) {
  if (sc != Scale::kNone) return row_factor(bp + n * s.base_sn, s.L, sc);
  return w != nullptr ? load(w[n * w_sn]) : acc_t<S>(1);
}

template <typename S>
inline S weighted(double v, acc_t<S> w) {
  return store<S>(static_cast<acc_t<S>>(v * static_cast<double>(w)));
}

template <Metric M, typename S>
void forward_impl(const S* bp, const S* op, const Strided& s, Scale sc, const S* w, int64_t w_sn, S* out) {
  const int64_t N = s.N, K = s.K, L = s.L;
  const int64_t segs = L > kSegment ? (L + kSegment - 1) / kSegment : 1;
  const int64_t seg_len = std::min(L, kSegment);
  // Blocks of others only when (sample, segment) units are too few to occupy the threads
  // (few big samples); which thread sums what never changes a result.
  const int64_t units = N * segs, want = 4 * static_cast<int64_t>(::vaeiso::num_threads());
  const int64_t kb = units >= want ? K : std::max<int64_t>(1, K * units / want);
  const int64_t kblocks = (K + kb - 1) / kb;
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, seg_len * kb));
  // per-segment sums of samples longer than one segment, added in order below
  std::vector<double> part(segs > 1 ? N * segs * K : 0);
  ::vaeiso::parallel_for(0, units * kblocks, grain, [&](int64_t tb, int64_t te) {
    for (int64_t task = tb; task < te; ++task) {
      const int64_t unit = task / kblocks, k0 = (task % kblocks) * kb, k1 = std::min(K, k0 + kb);
      const int64_t n = unit / segs, seg = unit % segs;
      const int64_t i0 = seg * kSegment, len = std::min(kSegment, L - i0);
      const S* b = bp + n * s.base_sn + i0;
      const S* o = op + n * s.others_sn + i0;
      const acc_t<S> wn = segs == 1 ? sample_weight(bp, s, sc, w, w_sn, n) : acc_t<S>(1);
      int64_t k = k0;
      if constexpr (std::is_same_v<acc_t<S>, float>) {
        // Short rows (one flush each): eight others at a time, their lane sums reduced together
        // (reduce8), the tail added as segment_sum does: the same bits as segment_sum.
        if (segs == 1 && len <= kLanes * kFlush) {
          const int64_t full = len - len % kLanes;
          for (; k + 8 <= k1; k += 8) {
            vec_t<float> sums[8];
            for (int p = 0; p < 8; ++p) {
              const S* op_k = o + (k + p) * s.others_sk;
              vec_t<float> acc[2] = {};
              for (int64_t i = 0; i < full; i += kLanes)
                for (int a = 0; a < 2; ++a)
                  acc[a] += vec_terms<M, float>(vload(b + i + a * 8), vload(op_k + i + a * 8));
              sums[p] = acc[0] + acc[1];
            }
            float r[8];
            reduce8(sums, r);
            for (int p = 0; p < 8; ++p) {
              const S* op_k = o + (k + p) * s.others_sk;
              double v = 0.0;
              if (full > 0) v += static_cast<double>(r[p]);
              for (int64_t i = full; i < len; ++i) v += static_cast<double>(term<M>(load(b[i]), load(op_k[i])));
              out[n * K + k + p] = weighted<S>(v, wn);
            }
          }
        }
      }
      for (; k < k1; ++k) {
        const double v = segment_sum<M>(b, o + k * s.others_sk, len);
        if (segs == 1) {
          out[n * K + k] = weighted<S>(v, wn);
        } else {
          part[unit * K + k] = v;
        }
      }
    }
  });
  if (segs == 1) return;
  ::vaeiso::parallel_for(0, N, std::max<int64_t>(1, 4096 / (segs * K)), [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n) {
      const acc_t<S> wn = sample_weight(bp, s, sc, w, w_sn, n);
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t seg = 0; seg < segs; ++seg) acc += part[(n * segs + seg) * K + k];
        out[n * K + k] = weighted<S>(acc, wn);
      }
    }
  });
}

template <Metric M, typename S>
void backward_impl(const S* bp, const S* op, const Strided& s, Scale sc, const Grads<S>& g) {
  using T = acc_t<S>;
  const int64_t N = s.N, K = s.K, L = s.L;
  const int64_t chunks = std::max<int64_t>(1, (L + kChunk - 1) / kChunk);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, K * std::min(L, kChunk)));
  // A convex metric's factor a(base) is the weight; its share of d/d base, grad_base[n] +=
  // (sum over k of grad D) slope(a) base[n], is added as the row is stored when a row is one
  // chunk (the toy), else in a second pass over grad_base below.
  const bool scaled = sc != Scale::kNone;
  const bool need_d = g.grad_weight != nullptr || (scaled && g.grad_base != nullptr);
  const bool fold = scaled && chunks == 1;
  // sum over k of grad[n, k] D[n, k] per (sample, chunk) for the weight's gradient, the chunks
  // added in order below. Summed over k inside the task, so a short row (the toy's L = 16)
  // costs one multiply-add per element, not a horizontal sum per pair.
  std::vector<double> part(need_d ? N * chunks : 0);
  S* const gbp = g.grad_base;
  S* const gop = g.grad_others;
  ::vaeiso::parallel_for(0, N * chunks, grain, [&](int64_t tb, int64_t te) {
    // locals, not captures: the stores below could otherwise alias them (reloads per vector)
    S* const gbp_l = gbp;
    S* const gop_l = gop;
    const Strided sl = s;
    const Grads<S> gl = g;
    const bool nd = need_d;
    const S* const bp_l = bp;
    const S* const op_l = op;
    const int64_t Ln = L, Kn = K, Cn = chunks;
    alignas(64) T db[kChunk];
    for (int64_t task = tb; task < te; ++task) {
      const int64_t n = task / Cn, c = task % Cn;
      const int64_t c0 = c * kChunk, c1 = std::min(Ln, c0 + kChunk);
      const T wn = sample_weight(bp_l, sl, sc, gl.weight, gl.weight_sn, n);
      {
        const int64_t i0 = c0, len = c1 - c0, full = len - len % kLanes;
        const S* b = bp_l + n * sl.base_sn + i0;
        if (gbp_l != nullptr) std::fill(db, db + len, T(0));
        constexpr int NV = kVecs<T>;
        vec_t<T> tacc[NV] = {};  // grad[n, k] x term, kFlush groups per lane, then in double
        double dk = 0;
        int groups = 0;
        for (int64_t k = 0; k < Kn; ++k) {
          const S* o = op_l + n * sl.others_sn + k * sl.others_sk + i0;
          S* dop = gop_l != nullptr ? gop_l + (n * Kn + k) * Ln + i0 : nullptr;
          // the eager formula's grad * weight, rounded once in the accumulation dtype
          const T gk = load(gl.grad[n * gl.grad_sn + k * gl.grad_sk]);
          const T gw = gk * wn;
          constexpr int W = kWidth<T>;
          for (int64_t i = 0; i < full; i += kLanes) {
            for (int a = 0; a < NV; ++a) {
              const int64_t j = i + a * W;
              const vec_t<T> bv = vload(b + j), ov = vload(o + j);
              vec_t<T> po, pb;
              vec_grads<M, T>(bv, ov, po, pb);
              if (dop != nullptr) vstore(dop + j, gw * po);
              if (gbp_l != nullptr) {
                vec_t<T> dv;
                std::memcpy(&dv, db + j, sizeof(dv));
                dv += gw * pb;
                std::memcpy(db + j, &dv, sizeof(dv));
              }
              if (nd) tacc[a] += gk * vec_terms<M, T>(bv, ov);
            }
            if (nd && ++groups == kFlush) {
              dk += lanes_sum<T>(tacc);
              for (auto& t : tacc) t = vec_t<T>{};
              groups = 0;
            }
          }
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
            if (gbp_l != nullptr) db[i] += gw * pb;
            if (nd) dk += static_cast<double>(gk) * static_cast<double>(term<M>(bi, oi));
          }
        }
        if (nd) part[task] = dk + lanes_sum<T>(tacc);
        if (gbp_l != nullptr) {
          S* dbp = gbp_l + n * Ln + i0;
          if (fold) {
            const T c = static_cast<T>(part[task]) * scale_slope(wn, sc);
            for (int64_t i = 0; i < len; ++i) dbp[i] = store<S>(db[i] + c * T(load(b[i])));
          } else {
            for (int64_t i = 0; i < len; ++i) dbp[i] = store<S>(db[i]);
          }
        }
      }
    }
  });
  if (!need_d) return;
  // d/d weight[n] = sum over k of grad[n, k] D[n, k]: the chunks' sums added in order, the
  // total (rounded to T) kept in the row's first slot for the pass below (no second array: a
  // std::vector<T> here would instantiate a shared, ISA-compiled constructor in this unit)
  for (int64_t n = 0; n < N; ++n) {
    double acc = 0;
    for (int64_t c = 0; c < chunks; ++c) acc += part[n * chunks + c];
    const T dw = static_cast<T>(acc);
    part[n * chunks] = static_cast<double>(dw);
    if (g.grad_weight != nullptr) g.grad_weight[n] = store<S>(dw);
  }
  if (!scaled || fold || gbp == nullptr) return;
  ::vaeiso::parallel_for(0, N, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, L)),
                         [&](int64_t n0, int64_t n1) {
                           for (int64_t n = n0; n < n1; ++n) {
                             const S* b = bp + n * s.base_sn;
                             S* db = gbp + n * L;
                             const T c = static_cast<T>(part[n * chunks]) * scale_slope(row_factor(b, L, sc), sc);
                             for (int64_t i = 0; i < L; ++i) db[i] = store<S>(T(load(db[i])) + c * T(load(b[i])));
                           }
                         });
}

}  // namespace

template <typename S>
void forward(const S* base, const S* others, const Strided& s, Metric m, Scale sc, const S* weight, int64_t weight_sn,
             S* out) {
  if (m == Metric::kSSE) {
    forward_impl<Metric::kSSE>(base, others, s, sc, weight, weight_sn, out);
  } else {
    forward_impl<Metric::kBCE>(base, others, s, sc, weight, weight_sn, out);
  }
}

template <typename S>
void backward(const S* base, const S* others, const Strided& s, Metric m, Scale sc, const Grads<S>& g) {
  if (m == Metric::kSSE) {
    backward_impl<Metric::kSSE>(base, others, s, sc, g);
  } else {
    backward_impl<Metric::kBCE>(base, others, s, sc, g);
  }
}

#define VAEISO_DISTANCE_INSTANTIATE(S)                                                                \
  template void forward<S>(const S*, const S*, const Strided&, Metric, Scale, const S*, int64_t, S*); \
  template void backward<S>(const S*, const S*, const Strided&, Metric, Scale, const Grads<S>&);
VAEISO_DISTANCE_INSTANTIATE(float)
VAEISO_DISTANCE_INSTANTIATE(double)
VAEISO_DISTANCE_INSTANTIATE(f16)
VAEISO_DISTANCE_INSTANTIATE(bf16)
#undef VAEISO_DISTANCE_INSTANTIATE

}  // namespace vaeiso::distance::VAEISO_CPU_ISA
