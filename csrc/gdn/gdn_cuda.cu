// CUDA element-wise passes of GDN (float accumulation for half types), built on the same
// gdn_math.h as the CPU passes.
//
// Memory-bound, so: 128-bit accesses (cuda_vec.cuh: 8 halves, 4 floats, 2 doubles per access)
// whenever every buffer of the pass is aligned, else the same loops one element at a time;
// and no per-element index arithmetic beyond an add. The forward epilogue (norm += beta[c],
// out = x scale(norm)) takes the channel from the launch geometry: channel-first (N, C, S)
// buffers run a 2-D grid with one plane (n, c) per blockIdx.y, so beta[c] is read once per
// plane; channel-last (M, C) buffers run threadIdx.x over channel groups and threadIdx.y over
// rows. Element order within a pass never matters (no reductions here): results do not depend
// on the path taken.
#include "cuda_host.h"

#include "cuda_vec.cuh"
#include "gdn/gdn_entry.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535LL * 8;
constexpr int64_t kMaxGridY = 65535;

inline unsigned blocks_for(int64_t work, int64_t per_block) {
  const int64_t b = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(b, 1), kMaxBlocks));
}

// Flat passes over n elements: V-wide groups first (V = 1: the scalar path), the n % V tail
// element-wise. `body(i0, count)` handles elements i0 .. i0 + count - 1 with count == V, or 1.
#define VAEISO_FLAT_LOOP(n, V, BODY)                                       \
  {                                                                        \
    const int64_t stride = int64_t(blockDim.x) * gridDim.x;                \
    const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;    \
    const int64_t groups = (n) / (V);                                      \
    for (int64_t gi = tid; gi < groups; gi += stride) BODY(gi*(V), V);     \
    for (int64_t i = groups * (V) + tid; i < (n); i += stride) BODY(i, 1); \
  }

template <typename scalar_t, typename acc_t, int V>
__global__ void fx_kernel(const scalar_t* __restrict__ x, acc_t* __restrict__ fx, int64_t n, Variant v) {
#define VAEISO_FX_BODY(i0, cnt)                                                                           \
  if (cnt == V) {                                                                                         \
    const auto xv = load_vec<V>(x + i0);                                                                  \
    VecN<acc_t, V> fv;                                                                                    \
    _Pragma("unroll") for (int q = 0; q < V; ++q) fv.v[q] = f(static_cast<acc_t>(xv.v[q]), v.simplified); \
    store_vec<V>(fx + i0, fv);                                                                            \
  } else {                                                                                                \
    fx[i0] = f(static_cast<acc_t>(x[i0]), v.simplified);                                                  \
  }
  VAEISO_FLAT_LOOP(n, V, VAEISO_FX_BODY)
#undef VAEISO_FX_BODY
}

// One element (or V) of the forward epilogue.
template <typename scalar_t, typename acc_t, int V>
__device__ __forceinline__ void epilogue_vec(const scalar_t* x, acc_t* norm, const acc_t* b, scalar_t* out, Variant v) {
  const auto xv = load_vec<V>(x);
  auto nv = load_vec<V>(norm);
  VecN<scalar_t, V> ov;
#pragma unroll
  for (int q = 0; q < V; ++q) {
    nv.v[q] += b[q];
    ov.v[q] = static_cast<scalar_t>(static_cast<acc_t>(xv.v[q]) * scale(nv.v[q], v.inverse, v.simplified));
  }
  store_vec<V>(norm, nv);
  store_vec<V>(out, ov);
}

// Channel-first (planes = N * C planes of S elements): blockIdx.y walks planes, so the channel
// is plane % C once per plane. V > 1 needs S % V == 0 (every plane starts aligned).
template <typename scalar_t, typename acc_t, int V>
__global__ void epilogue_cf_kernel(const scalar_t* __restrict__ x, acc_t* __restrict__ norm,
                                   const acc_t* __restrict__ beta, scalar_t* __restrict__ out, int64_t planes,
                                   int64_t S, int64_t C, Variant v) {
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    acc_t b[V];
#pragma unroll
    for (int q = 0; q < V; ++q) b[q] = beta[plane % C];
    const int64_t off = plane * S;
    for (int64_t s = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V; s < S;
         s += int64_t(gridDim.x) * blockDim.x * V) {
      epilogue_vec<scalar_t, acc_t, V>(x + off + s, norm + off + s, b, out + off + s, v);
    }
  }
}

// Channel-last (M rows of C channels): threadIdx.x walks groups of V channels (V > 1 needs
// C % V == 0), threadIdx.y and blockIdx.x walk rows.
template <typename scalar_t, typename acc_t, int V>
__global__ void epilogue_cl_kernel(const scalar_t* __restrict__ x, acc_t* __restrict__ norm,
                                   const acc_t* __restrict__ beta, scalar_t* __restrict__ out, int64_t M, int64_t C,
                                   Variant v) {
  const int64_t groups = C / V;
  for (int64_t row = blockIdx.x * int64_t(blockDim.y) + threadIdx.y; row < M; row += int64_t(gridDim.x) * blockDim.y) {
    const int64_t off = row * C;
    for (int64_t gch = threadIdx.x; gch < groups; gch += blockDim.x) {
      const int64_t c = gch * V;
      const auto bv = load_vec<V>(beta + c);
      epilogue_vec<scalar_t, acc_t, V>(x + off + c, norm + off + c, bv.v, out + off + c, v);
    }
  }
}

template <typename scalar_t, typename acc_t, int V>
__global__ void backward_t_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                  const acc_t* __restrict__ norm, acc_t* __restrict__ t, acc_t* __restrict__ fx,
                                  int64_t n, Variant v) {
#define VAEISO_BT_BODY(i0, cnt)                                                               \
  if (cnt == V) {                                                                             \
    const auto gv = load_vec<V>(g + i0);                                                      \
    const auto xv = load_vec<V>(x + i0);                                                      \
    const auto nv = load_vec<V>(norm + i0);                                                   \
    VecN<acc_t, V> tv, fv;                                                                    \
    _Pragma("unroll") for (int q = 0; q < V; ++q) {                                           \
      const acc_t xq = static_cast<acc_t>(xv.v[q]);                                           \
      tv.v[q] = grad_norm(static_cast<acc_t>(gv.v[q]), xq, nv.v[q], v.inverse, v.simplified); \
      fv.v[q] = f(xq, v.simplified);                                                          \
    }                                                                                         \
    store_vec<V>(t + i0, tv);                                                                 \
    if (fx != nullptr) store_vec<V>(fx + i0, fv);                                             \
  } else {                                                                                    \
    const acc_t xq = static_cast<acc_t>(x[i0]);                                               \
    t[i0] = grad_norm(static_cast<acc_t>(g[i0]), xq, norm[i0], v.inverse, v.simplified);      \
    if (fx != nullptr) fx[i0] = f(xq, v.simplified);                                          \
  }
  VAEISO_FLAT_LOOP(n, V, VAEISO_BT_BODY)
#undef VAEISO_BT_BODY
}

template <typename scalar_t, typename acc_t, int V>
__global__ void backward_x_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                  const acc_t* __restrict__ norm, const acc_t* __restrict__ u,
                                  scalar_t* __restrict__ gx, int64_t n, Variant v) {
#define VAEISO_BX_BODY(i0, cnt)                                                                                       \
  if (cnt == V) {                                                                                                     \
    const auto gv = load_vec<V>(g + i0);                                                                              \
    const auto xv = load_vec<V>(x + i0);                                                                              \
    const auto nv = load_vec<V>(norm + i0);                                                                           \
    const auto uv = load_vec<V>(u + i0);                                                                              \
    VecN<scalar_t, V> ov;                                                                                             \
    _Pragma("unroll") for (int q = 0; q < V; ++q) ov.v[q] = static_cast<scalar_t>(                                    \
        grad_x(static_cast<acc_t>(gv.v[q]), static_cast<acc_t>(xv.v[q]), nv.v[q], uv.v[q], v.inverse, v.simplified)); \
    store_vec<V>(gx + i0, ov);                                                                                        \
  } else {                                                                                                            \
    gx[i0] = static_cast<scalar_t>(                                                                                   \
        grad_x(static_cast<acc_t>(g[i0]), static_cast<acc_t>(x[i0]), norm[i0], u[i0], v.inverse, v.simplified));      \
  }
  VAEISO_FLAT_LOOP(n, V, VAEISO_BX_BODY)
#undef VAEISO_BX_BODY
}

// Every pointer may be read or written kVec<scalar_t> elements at a time.
template <typename scalar_t, typename... Ptrs>
bool all_vec_aligned(Ptrs... ptrs) {
  constexpr int V = kVec<scalar_t>;
  return (vec_aligned<V>(ptrs) && ...);
}

}  // namespace

void fx_cuda(const Tensor& x, Tensor& fx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_fx_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    constexpr int V = kVec<scalar_t>;
    const auto* xp = cdata<scalar_t>(x);
    auto* fp = mdata<acc_t>(fx);
    const auto stream = current_stream(x);
    if (all_vec_aligned<scalar_t>(xp, fp)) {
      fx_kernel<scalar_t, acc_t, V><<<blocks_for(n, kThreads * V), kThreads, 0, stream>>>(xp, fp, n, v);
    } else {
      fx_kernel<scalar_t, acc_t, 1><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(xp, fp, n, v);
    }
    check_launch();
  });
}

void forward_epilogue_cuda(const Tensor& x, Tensor& norm, const Tensor& beta, Tensor& out, int64_t C, int64_t inner,
                           Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_forward_epilogue_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    constexpr int V = kVec<scalar_t>;
    const auto* xp = cdata<scalar_t>(x);
    auto* np = mdata<acc_t>(norm);
    const auto* bp = cdata<acc_t>(beta);
    auto* op = mdata<scalar_t>(out);
    const auto stream = current_stream(x);
    if (inner == 1) {  // channel-last (M, C)
      const int64_t M = n / C;
      const bool vec = C % V == 0 && all_vec_aligned<scalar_t>(xp, np, bp, op);
      const int64_t groups = vec ? C / V : C;
      int bx = 1;
      while (bx < 32 && bx < groups) bx *= 2;
      const dim3 block(bx, kThreads / bx);
      const unsigned grid = blocks_for(M, block.y);
      if (vec) {
        epilogue_cl_kernel<scalar_t, acc_t, V><<<grid, block, 0, stream>>>(xp, np, bp, op, M, C, v);
      } else {
        epilogue_cl_kernel<scalar_t, acc_t, 1><<<grid, block, 0, stream>>>(xp, np, bp, op, M, C, v);
      }
    } else {  // channel-first (N, C, S), S = inner
      const int64_t planes = n / inner;
      const bool vec = inner % V == 0 && all_vec_aligned<scalar_t>(xp, np, op);
      const int64_t per_block = int64_t(kThreads) * (vec ? V : 1);
      const int64_t gx = std::min<int64_t>((inner + per_block - 1) / per_block, kMaxBlocks);
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(std::min(planes, kMaxGridY)));
      if (vec) {
        epilogue_cf_kernel<scalar_t, acc_t, V><<<grid, kThreads, 0, stream>>>(xp, np, bp, op, planes, inner, C, v);
      } else {
        epilogue_cf_kernel<scalar_t, acc_t, 1><<<grid, kThreads, 0, stream>>>(xp, np, bp, op, planes, inner, C, v);
      }
    }
    check_launch();
  });
}

void backward_t_cuda(const Tensor& g, const Tensor& x, const Tensor& norm, Tensor& t, Tensor& fx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_backward_t_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    constexpr int V = kVec<scalar_t>;
    const auto* gp = cdata<scalar_t>(g);
    const auto* xp = cdata<scalar_t>(x);
    const auto* np = cdata<acc_t>(norm);
    auto* tp = mdata<acc_t>(t);
    acc_t* fp = fx.defined() ? mdata<acc_t>(fx) : nullptr;
    const auto stream = current_stream(x);
    if (all_vec_aligned<scalar_t>(gp, xp, np, tp, fp)) {
      backward_t_kernel<scalar_t, acc_t, V>
          <<<blocks_for(n, kThreads * V), kThreads, 0, stream>>>(gp, xp, np, tp, fp, n, v);
    } else {
      backward_t_kernel<scalar_t, acc_t, 1><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gp, xp, np, tp, fp, n, v);
    }
    check_launch();
  });
}

void backward_x_cuda(const Tensor& g, const Tensor& x, const Tensor& norm, const Tensor& u, Tensor& gx, Variant v) {
  const int64_t n = x.numel();
  if (n == 0) return;
  VAEISO_DISPATCH_CUDA(x.scalar_type(), "gdn_backward_x_cuda", [&] {
    using acc_t = opmath_t<scalar_t>;
    constexpr int V = kVec<scalar_t>;
    const auto* gp = cdata<scalar_t>(g);
    const auto* xp = cdata<scalar_t>(x);
    const auto* np = cdata<acc_t>(norm);
    const auto* up = cdata<acc_t>(u);
    auto* op = mdata<scalar_t>(gx);
    const auto stream = current_stream(x);
    if (all_vec_aligned<scalar_t>(gp, xp, np, up, op)) {
      backward_x_kernel<scalar_t, acc_t, V>
          <<<blocks_for(n, kThreads * V), kThreads, 0, stream>>>(gp, xp, np, up, op, n, v);
    } else {
      backward_x_kernel<scalar_t, acc_t, 1><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gp, xp, np, up, op, n, v);
    }
    check_launch();
  });
}

}  // namespace vaeiso::gdn
