// GDN on the CPU, fused around its GEMMs: the positions are cut into blocks small enough that a
// block's f(x), norm, t and u stay in the core's cache, and each block runs its element-wise
// math and its small GEMMs (cpu_gemm.h) back to back. Memory then sees x, g, norm, out and the
// gradient once each, and the three GEMMs run at the speed of one large GEMM.
// Compiled once per instruction set (gdn_cpu_default.cpp, gdn_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); gdn_cpu.cpp picks one at run time and dispatches on dtype.
// Half types are loaded into float, computed there and rounded once on store.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including gdn_cpu_impl.h"
#endif
#include "cpu_parallel.h"

#include <algorithm>
#include <type_traits>
#include "cpu_gemm.h"
#include "cpu_workspace.h"
#include "cpu_half.h"
#include "cpu_simd.h"
#include "gdn/gdn_cpu_passes.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn {
VAEISO_GDN_DECLARE_PASSES(VAEISO_CPU_ISA)
}

namespace vaeiso::gdn::VAEISO_CPU_ISA {
// (Not in an anonymous namespace: the kernels' lambdas capture these types. The ISA namespace
// already keeps each build's copy apart.)

template <bool I, bool S>
struct StaticVariant {
  static constexpr bool inverse = I, simplified = S;
};

// Calls fn(StaticVariant<...>{}) so the variant is a compile-time constant: the inner loops
// then carry no branches and vectorise.
template <typename Fn>
void with_variant(Variant v, Fn&& fn) {
  if (v.inverse) {
    if (v.simplified)
      fn(StaticVariant<true, true>{});
    else
      fn(StaticVariant<true, false>{});
  } else {
    if (v.simplified)
      fn(StaticVariant<false, true>{});
    else
      fn(StaticVariant<false, false>{});
  }
}

// The blocks. Channel-first (N, C, S): a block is a run of up to `len` positions of one image,
// channel c of position j at base + c*S + j; its buffers keep that shape with row length len.
// Channel-last (M, C): a block is `len` consecutive rows, position j's channels contiguous at
// base + j*C; its buffers are (len, C). Either way, as column-major BLAS matrices, channel-first
// blocks are (len x C) and channel-last blocks (C x len).
struct Blocks {
  int64_t N, C, S;  // S = positions per image (channel-first) or all positions (channel-last)
  bool cl;
  int64_t len, per_image, count;

  Blocks(int64_t N_, int64_t C_, int64_t S_, bool cl_) : N(N_), C(C_), S(S_), cl(cl_) {
    // Long blocks: up to 1024 positions and ~256K elements (1 MB) per buffer. A channel-first
    // block's x is C runs of `len` positions; a whole 32x32 image (one contiguous stretch of
    // memory) ran 5-13% faster than runs of 256 (AMD EPYC, 1 MB L2: the prefetchers follow long
    // runs, the GEMM does not mind the size). Shorter again (down to 256) where that leaves fewer
    // than 8 blocks, so a batch of one still spreads over the threads. The shape alone sets the
    // blocks (the backward's sums do not depend on the thread count).
    len = std::clamp<int64_t>(262144 / std::max<int64_t>(C, 1) / 16 * 16, 32, 1024);
    if (!cl) len = std::min(len, S);
    const int64_t images = cl ? 1 : N;
    auto blocks_of = [&](int64_t l) { return images * ((S + l - 1) / l); };
    while (len > 256 && blocks_of(len) < 8) len = std::max<int64_t>(256, (len / 2 + 15) / 16 * 16);
    per_image = cl ? 1 : (S + len - 1) / len;
    count = cl ? (S + len - 1) / len : N * per_image;
  }
  struct Block {
    int64_t base, n;  // offset of the block's first element, its number of positions
  };
  Block at(int64_t i) const {
    if (cl) return {i * len * C, std::min(len, S - i * len)};
    const int64_t img = i / per_image, j0 = (i % per_image) * len;
    return {img * C * S + j0, std::min(len, S - j0)};
  }
  // element (channel c, position j) of a block at `base` in the tensor, and in a buffer
  int64_t t_off(int64_t c, int64_t j) const { return cl ? j * C + c : c * S + j; }
  int64_t b_off(int64_t c, int64_t j, int64_t n) const { return cl ? j * C + c : c * n + j; }
  int64_t t_ld() const { return cl ? C : S; }
  int64_t b_ld(int64_t n) const { return cl ? C : n; }
};

// fn(tensor offset, buffer offset, channel, length) for each contiguous run of a block: one
// channel's positions (channel-first; channel c) or one position's channels (channel-last;
// channel -1: the run spans all channels).
template <typename Fn>
inline void each_run(const Blocks& B, int64_t n, Fn&& fn) {
  if (B.cl) {
    for (int64_t j = 0; j < n; ++j) fn(j * B.C, j * B.C, int64_t(-1), B.C);
  } else {
    for (int64_t c = 0; c < B.C; ++c) fn(c * B.S, c * n, c, n);
  }
}

// The element-wise passes over one contiguous run. Restrict-qualified parameters: with this
// many streams the compiler would otherwise give up its alias checks and not vectorise. float
// runs are written on vectors (cpu_simd.h) whose 1/sqrt is the estimate-and-Newton-step one:
// with an exact square root and division the epilogue cost a third of the GEMM it follows.
template <typename S, typename A>
constexpr bool kVectorRuns = std::is_same_v<S, float> && std::is_same_v<A, float>;
using FV = simd::Vec<float>::type;
constexpr int64_t kFL = simd::Vec<float>::L;

// gdn_math.h's scale and scales on a vector (same formulas; 1/sqrt from simd::rsqrt)
template <typename SV>
VAEISO_AI FV scale_vec(FV n) {
  if constexpr (SV::simplified) {
    if constexpr (SV::inverse) return n;
    return 1.0f / n;
  } else {
    if constexpr (SV::inverse) return simd::vsqrt(n);
    return simd::rsqrt(n);
  }
}
template <typename SV>
VAEISO_AI Scales<FV> scales_vec(FV n) {
  if constexpr (SV::simplified) {
    if constexpr (SV::inverse) return {n, FV{} + 1.0f};
    const FV s = 1.0f / n;
    return {s, -s * s};
  } else {
    const FV r = simd::rsqrt(n);
    if constexpr (SV::inverse) return {n * r, 0.5f * r};
    return {r, -0.5f * r * r * r};
  }
}
template <typename SV>
VAEISO_AI FV f_vec(FV x) {
  if constexpr (SV::simplified) return x < FV{} ? -x : x;
  return x * x;
}
template <typename SV>
VAEISO_AI FV df_vec(FV x) {
  if constexpr (!SV::simplified) return 2.0f * x;
  // sign(x), 0 at 0, NaN stays NaN (x * 0): gdn_math.h's df
  return x > FV{} ? FV{} + 1.0f : (x < FV{} ? FV{} - 1.0f : x * 0.0f);
}

template <typename SV, typename S, typename A>
void fx_run(const S* __restrict x, A* __restrict fx, int64_t len) {
  int64_t i = 0;
  if constexpr (kVectorRuns<S, A>)
    for (; i + kFL <= len; i += kFL) simd::storeu(fx + i, f_vec<SV>(simd::loadu<FV>(x + i)));
  for (; i < len; ++i) fx[i] = f(load(x[i]), SV::simplified);
}

// norm += beta (one value when kOneBeta: a channel-first run; norm stored back when kKeep),
// out = x scale(norm)
template <typename SV, bool kOneBeta, bool kKeep, typename S, typename A>
void epilogue_run(const S* __restrict x, A* __restrict nrm, const A* __restrict beta, S* __restrict out, int64_t len) {
  int64_t i = 0;
  if constexpr (kVectorRuns<S, A>) {
    const FV b1 = FV{} + beta[0];
    for (; i + kFL <= len; i += kFL) {
      const FV nv = simd::loadu<FV>(nrm + i) + (kOneBeta ? b1 : simd::loadu<FV>(beta + i));
      if constexpr (kKeep) simd::storeu(nrm + i, nv);
      simd::storeu(out + i, simd::loadu<FV>(x + i) * scale_vec<SV>(nv));
    }
  }
  for (; i < len; ++i) {
    const A nv = nrm[i] + beta[kOneBeta ? 0 : i];
    if constexpr (kKeep) nrm[i] = nv;
    out[i] = store<S>(load(x[i]) * scale(nv, SV::inverse, SV::simplified));
  }
}

// t = dL/dnorm; f(x) when kFx (for the gamma gradient). The beta gradient is summed from t as it
// is written (a second pass over t cost 3% of GDN's forward+backward at C = 64): kSum 1 adds
// the run's sum (one channel's positions; per vector lane, then the lanes in order: a fixed
// order for a given build) to *gb, kSum 2 adds t to gb elementwise (one position's channels);
// kSum 0 sums nothing.
template <typename SV, bool kFx, int kSum, typename S, typename A>
void first_run(const S* __restrict g, const S* __restrict x, const A* __restrict nrm, A* __restrict t, A* __restrict fx,
               A* __restrict gb, int64_t len) {
  int64_t i = 0;
  A tail = A(0);
  if constexpr (kVectorRuns<S, A>) {
    FV acc{};
    for (; i + kFL <= len; i += kFL) {
      const FV xv = simd::loadu<FV>(x + i);
      const FV tv = simd::loadu<FV>(g + i) * xv * scales_vec<SV>(simd::loadu<FV>(nrm + i)).ds;
      simd::storeu(t + i, tv);
      if constexpr (kFx) simd::storeu(fx + i, f_vec<SV>(xv));
      if constexpr (kSum == 1) acc += tv;
      if constexpr (kSum == 2) simd::storeu(gb + i, simd::loadu<FV>(gb + i) + tv);
    }
    if constexpr (kSum == 1)
      for (int l = 0; l < static_cast<int>(kFL); ++l) tail += acc[l];
  }
  const int64_t i0 = i;
  for (; i < len; ++i) {
    const A xv = load(x[i]);
    const A tv = load(g[i]) * xv * scales(nrm[i], SV::inverse, SV::simplified).ds;
    t[i] = tv;
    if constexpr (kFx) fx[i] = f(xv, SV::simplified);
    if constexpr (kSum == 2) gb[i] += tv;
  }
  if constexpr (kSum == 1) {
    if constexpr (kVectorRuns<S, A>) {
      for (int64_t j = i0; j < len; ++j) tail += t[j];
    } else {
      // a serial sum inside the loop above would stop it vectorising: eight interleaved
      // partial sums over t afterwards (a fixed order the compiler keeps in one vector)
      constexpr int L = 8;
      A part[L] = {};
      int64_t j = 0;
      for (; j + L <= len; j += L)
        for (int l = 0; l < L; ++l) part[l] += t[j + l];
      for (int l = 0; l < L; ++l) tail += part[l];
      for (; j < len; ++j) tail += t[j];
    }
    *gb += tail;
  }
}

// dL/dx = g s + f'(x) u, the scale s recomputed from norm (as the CUDA pass does): a buffer of
// it cost more memory traffic than its square root costs now
template <typename SV, typename S, typename A>
void gx_run(const S* __restrict g, const S* __restrict x, const A* __restrict nrm, const A* __restrict u,
            S* __restrict gx, int64_t len) {
  int64_t i = 0;
  if constexpr (kVectorRuns<S, A>)
    for (; i + kFL <= len; i += kFL)
      simd::storeu(gx + i, simd::loadu<FV>(g + i) * scales_vec<SV>(simd::loadu<FV>(nrm + i)).s +
                               df_vec<SV>(simd::loadu<FV>(x + i)) * simd::loadu<FV>(u + i));
  for (; i < len; ++i) gx[i] = store<S>(grad_x(load(g[i]), load(x[i]), nrm[i], u[i], SV::inverse, SV::simplified));
}

// norm block = gamma @ fx block (the block's channel mixing), written at `np` with leading
// dimension ld (the tensor's, or a buffer's).
template <typename A>
void mix_forward(const Blocks& B, int64_t n, const A* gamma, const A* fx, A* np, int64_t ld) {
  if (B.cl)
    gemm_cm('t', 'n', B.C, n, B.C, A(1), gamma, B.C, fx, B.C, A(0), np, ld);
  else
    gemm_cm('n', 'n', n, B.C, B.C, A(1), fx, n, gamma, B.C, A(0), np, ld);
}

// u block = gamma^T @ t block
template <typename A>
void mix_backward(const Blocks& B, int64_t n, const A* gamma, const A* t, A* u) {
  if (B.cl)
    gemm_cm('n', 'n', B.C, n, B.C, A(1), gamma, B.C, t, B.C, A(0), u, B.C);
  else
    gemm_cm('n', 't', n, B.C, B.C, A(1), t, n, gamma, B.C, A(0), u, n);
}

// gg[i, k] += sum over the block's positions of t_i f_k (gg row-major C x C)
template <typename A>
void gamma_grad_add(const Blocks& B, int64_t n, const A* t, const A* fx, A* gg) {
  if (B.cl)
    gemm_cm('n', 't', B.C, B.C, n, A(1), fx, B.C, t, B.C, A(1), gg, B.C);
  else
    gemm_cm('t', 'n', B.C, B.C, n, A(1), fx, n, t, n, A(1), gg, B.C);
}

// norm may be null (the caller needs only out): each block's norm then lives in a buffer.
template <typename S>
void forward(const S* xp, const acc_t<S>* beta, const acc_t<S>* gamma, S* op, acc_t<S>* np, int64_t N, int64_t C,
             int64_t Sp, bool cl, Variant v) {
  using A = acc_t<S>;
  const Blocks B(N, C, Sp, cl);
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    ::vaeiso::parallel_for(0, B.count, 1, [&](int64_t b0, int64_t b1) {
      // f(x), and the norm block when norm is not kept: written before read, never zeroed
      const int64_t bsz = B.len * C;
      Scratch<A> buf(np ? bsz : 2 * bsz, WorkspaceSlot::kTask, false);
      A* const fx = buf.data();
      A* const nbuf = fx + bsz;
      for (int64_t i = b0; i < b1; ++i) {
        const auto blk = B.at(i);
        const S* x = xp + blk.base;
        S* out = op + blk.base;
        each_run(B, blk.n, [&](int64_t o, int64_t q, int64_t, int64_t len) { fx_run<SV>(x + o, fx + q, len); });
        // the norm block in the tensor (index o) or in the buffer (index q)
        A* nrm = np ? np + blk.base : nbuf;
        mix_forward(B, blk.n, gamma, fx, nrm, np ? B.t_ld() : B.b_ld(blk.n));
        each_run(B, blk.n, [&](int64_t o, int64_t q, int64_t c, int64_t len) {
          if (np && c >= 0)
            epilogue_run<SV, true, true>(x + o, nrm + o, beta + c, out + o, len);
          else if (np)
            epilogue_run<SV, false, true>(x + o, nrm + o, beta, out + o, len);
          else if (c >= 0)
            epilogue_run<SV, true, false>(x + o, nrm + q, beta + c, out + o, len);
          else
            epilogue_run<SV, false, false>(x + o, nrm + q, beta, out + o, len);
        });
      }
    });
  });
}

template <typename S>
void backward(const S* gp, const S* xp, const acc_t<S>* np, const acc_t<S>* gamma, S* gxp, acc_t<S>* gbeta,
              acc_t<S>* ggamma, int64_t N, int64_t C, int64_t Sp, bool cl, Variant v) {
  using A = acc_t<S>;
  const Blocks B(N, C, Sp, cl);
  // The parameter gradients are sums over all blocks. Each of a fixed number of groups of
  // consecutive blocks sums its own partials in block order, and the groups are added in order:
  // the result does not depend on the number of threads.
  const bool need_params = gbeta != nullptr || ggamma != nullptr;
  const int64_t groups = need_params ? std::min<int64_t>(B.count, 32) : B.count;
  // The groups' partial sums, zeroed, on this thread's call slot (its tasks use the task slot).
  const int64_t nb = gbeta ? groups * C : 0, ng = ggamma ? groups * C * C : 0;
  Scratch<A> parts(nb + ng, WorkspaceSlot::kCall, true);
  A* const gb_part = parts.data();
  A* const gg_part = gb_part + nb;
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    ::vaeiso::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
      // t, f(x) (gamma gradient) and u (gx): written before read, never zeroed
      const int64_t bsz = B.len * C;
      Scratch<A> buf(bsz * (1 + (ggamma ? 1 : 0) + (gxp ? 1 : 0)), WorkspaceSlot::kTask, false);
      A* const t = buf.data();
      A* const fx = t + bsz;
      A* const u = fx + (ggamma ? bsz : 0);
      for (int64_t grp = g0; grp < g1; ++grp) {
        A* gb = gbeta ? gb_part + grp * C : nullptr;
        A* gg = ggamma ? gg_part + grp * C * C : nullptr;
        const int64_t i0 = grp * B.count / groups, i1 = (grp + 1) * B.count / groups;
        for (int64_t i = i0; i < i1; ++i) {
          const auto blk = B.at(i);
          const S *g = gp + blk.base, *x = xp + blk.base;
          const A* nrm = np + blk.base;
          // t, and f(x) for the gamma gradient
          auto first = [&](auto want_fx, auto want_sum) {
            constexpr bool kFx = decltype(want_fx)::value;
            constexpr bool kS = decltype(want_sum)::value;
            each_run(B, blk.n, [&](int64_t o, int64_t q, int64_t c, int64_t len) {
              if constexpr (kS) {
                if (c >= 0)
                  first_run<SV, kFx, 1>(g + o, x + o, nrm + o, t + q, fx + q, gb + c, len);
                else
                  first_run<SV, kFx, 2>(g + o, x + o, nrm + o, t + q, fx + q, gb, len);
              } else {
                first_run<SV, kFx, 0>(g + o, x + o, nrm + o, t + q, fx + q, static_cast<A*>(nullptr), len);
              }
            });
          };
          if (gg && gb)
            first(std::true_type{}, std::true_type{});
          else if (gg)
            first(std::true_type{}, std::false_type{});
          else if (gb)
            first(std::false_type{}, std::true_type{});
          else
            first(std::false_type{}, std::false_type{});
          if (gg) gamma_grad_add(B, blk.n, t, fx, gg);
          if (gxp) {
            mix_backward(B, blk.n, gamma, t, u);
            S* gx = gxp + blk.base;
            each_run(B, blk.n, [&](int64_t o, int64_t q, int64_t, int64_t len) {
              gx_run<SV>(g + o, x + o, nrm + o, u + q, gx + o, len);
            });
          }
        }
      }
    });
  });
  for (int64_t grp = 0; grp < (gbeta ? groups : 0); ++grp)
    for (int64_t c = 0; c < C; ++c) gbeta[c] = (grp ? gbeta[c] : A(0)) + gb_part[grp * C + c];
  for (int64_t grp = 0; grp < (ggamma ? groups : 0); ++grp)
    for (int64_t e = 0; e < C * C; ++e) ggamma[e] = (grp ? ggamma[e] : A(0)) + gg_part[grp * C * C + e];
}

#define VAEISO_GDN_INSTANTIATE(S)                                                                                      \
  template void forward<S>(const S*, const acc_t<S>*, const acc_t<S>*, S*, acc_t<S>*, int64_t, int64_t, int64_t, bool, \
                           Variant);                                                                                   \
  template void backward<S>(const S*, const S*, const acc_t<S>*, const acc_t<S>*, S*, acc_t<S>*, acc_t<S>*, int64_t,   \
                            int64_t, int64_t, bool, Variant);
VAEISO_GDN_INSTANTIATE(float)
VAEISO_GDN_INSTANTIATE(double)
VAEISO_GDN_INSTANTIATE(f16)
VAEISO_GDN_INSTANTIATE(bf16)
#undef VAEISO_GDN_INSTANTIATE

}  // namespace vaeiso::gdn::VAEISO_CPU_ISA
