// SSIM CPU entry points: tensors to raw buffers, dtype dispatch, then the AVX-512 or AVX2 build of
// the passes where the CPU has it, else the baseline (ssim_cpu_passes.h).
#include <algorithm>

#include "common.h"
#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "cpu_parallel.h"
#include "ssim/ssim_cpu_passes.h"
#include "ssim/ssim_entry.h"
#include "ssim/ssim_math.h"
#include "tensor_strides.h"

namespace vaeiso::ssim {

VAEISO_SSIM_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_SSIM_DECLARE_PASSES(isa_avx2)
VAEISO_SSIM_DECLARE_PASSES(isa_avx512)
#endif

void forward_cpu(const Tensor& x, const Tensor& y, const std::vector<double>& window, const Geometry& g, Constants k,
                 Terms terms, Tensor& one_minus, Tensor& l1, Tensor& maps) {
  // Means per (image, channel) in double from the kernel, rounded once to the output dtype.
  auto om = alloc({g.N, g.C}, dt::kDouble, x);
  auto lm = alloc({terms.with_l1 ? g.N : 0, g.C}, dt::kDouble, x);
  const auto sx = strides_of<4>(x), sy = strides_of<4>(y);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_forward_cpu", [&] {
    VAEISO_PICK_ISA3(forward<S>, cdata<S>(x), sx.s, cdata<S>(y), sy.s, window.data(), g, k, terms,
                     maps.numel() > 0 ? mdata<acc_t<S>>(maps) : nullptr, mdata<double>(om),
                     terms.with_l1 ? mdata<double>(lm) : nullptr);
  });
  copy_into(one_minus, om);
  if (terms.with_l1) copy_into(l1, lm);
}

void backward_cpu(const Tensor& grad, const Tensor& grad_l1, const Tensor& x, const Tensor& y, const Tensor& maps,
                  const std::vector<double>& window, const Geometry& g, Tensor& grad_x, Tensor& grad_y) {
  const auto sx = strides_of<4>(x), sy = strides_of<4>(y);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_backward_cpu", [&] {
    VAEISO_PICK_ISA3(backward<S>, cdata<acc_t<S>>(grad), grad_l1.numel() > 0 ? cdata<acc_t<S>>(grad_l1) : nullptr,
                     cdata<S>(x), sx.s, cdata<S>(y), sy.s, cdata<acc_t<S>>(maps), window.data(), g, mdata<S>(grad_x),
                     mdata<S>(grad_y));
  });
}

void pairs_cpu(const Tensor& base, const Tensor& others, const std::vector<double>& window, const Geometry& g,
               Constants k, Tensor& out) {
  const int64_t K = others.size(1);
  auto mean = alloc({g.N, K}, dt::kDouble, base);
  const auto sb = strides_of<4>(base);
  const auto so = strides_of<5>(others);
  VAEISO_CPU_DISPATCH(base.scalar_type(), "ssim_pairs_cpu", [&] {
    VAEISO_PICK_ISA3(pairs<S>, cdata<S>(base), sb.s, cdata<S>(others), so.s, K, window.data(), g, k,
                     mdata<double>(mean));
  });
  copy_into(out, mean);
}

void filter_cpu(const Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad, bool transpose,
                Tensor& dst) {
  // The filter is a building block of composites that already compute in float32 for the half
  // types (ssim_metric_gram); a half input is filtered in float32 and rounded once.
  if (is_half(src.scalar_type())) {
    auto df = alloc(sizes_of(dst), dt::kFloat, dst);
    filter_cpu(to_dtype(src, dt::kFloat), window, ws, pad, transpose, df);
    copy_into(dst, df);
    return;
  }
  const Tensor& img = transpose ? dst : src;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    VAEISO_PICK_ISA3(filter<T>, cdata<T>(src), mdata<T>(dst), src.size(0), img.size(1), img.size(2), window.data(), ws,
                     pad, transpose);
  };
  if (src.scalar_type() == dt::kDouble)
    run(double{});
  else
    run(float{});
}

// The pyramid step is memory-bound and simple: one baseline-ISA loop (the compiler vectorises the
// interior), rows shared among the threads.
template <typename S>
void pool_planes(const S* src, S* dst, int64_t M, int64_t H, int64_t W, bool transpose) {
  using A = acc_t<S>;
  const int64_t Ho = pooled_size(H), Wo = pooled_size(W);
  const int64_t rows = transpose ? M * H : M * Ho, cols = transpose ? W : Wo;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      S* o = dst + t * cols;
      if (transpose) {  // input row r of plane p from its window's row of gradients
        const int64_t p = t / H, r = t % H;
        const S* g = src + (p * Ho + pool_window_of(r, H)) * Wo;
        for (int64_t c = 0; c < W; ++c) o[c] = store<S>(pool_share<A>(load(g[pool_window_of(c, W)])));
      } else {
        const int64_t p = t / Ho, i = t % Ho;
        const S* plane = src + p * H * W;
        const auto at = [&](int64_t r, int64_t c) { return static_cast<A>(load(plane[r * W + c])); };
        for (int64_t j = 0; j < Wo; ++j) o[j] = store<S>(pool_at<A>(at, H, W, i, j));
      }
    }
  });
}

void pool_cpu(const Tensor& src, bool transpose, Tensor& dst) {
  const Tensor& img = transpose ? dst : src;
  VAEISO_CPU_DISPATCH(src.scalar_type(), "ssim_pool_cpu", [&] {
    pool_planes<S>(cdata<S>(src), mdata<S>(dst), src.size(0), img.size(1), img.size(2), transpose);
  });
}

}  // namespace vaeiso::ssim
