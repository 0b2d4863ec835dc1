// SSIM CPU entry points: tensors to raw buffers, dtype dispatch, then the AVX-512 or AVX2 build of
// the passes where the CPU has it, else the baseline (ssim_cpu_passes.h).
#include "common.h"
#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "ssim/ssim_cpu_passes.h"
#include "ssim/ssim_kernels.h"

namespace vaeiso::ssim {

VAEISO_SSIM_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_SSIM_DECLARE_PASSES(isa_avx2)
VAEISO_SSIM_DECLARE_PASSES(isa_avx512)
#endif

namespace {

template <size_t D>
void strides_of(const Tensor& t, int64_t (&s)[D]) {
  for (size_t i = 0; i < D; ++i) s[i] = t.stride(i);
}

}  // namespace

void forward_cpu(const Tensor& x, const Tensor& y, const std::vector<double>& window,
                 const Geometry& g, Constants k, Mode mode, Tensor& one_minus, Tensor& l1,
                 Tensor& maps) {
  // Means per (image, channel) in double from the kernel, rounded once to the output dtype.
  auto om = alloc({g.N, g.C}, dt::kDouble, x);
  auto lm = alloc({mode.with_l1 ? g.N : 0, g.C}, dt::kDouble, x);
  int64_t sx[4], sy[4];
  strides_of(x, sx);
  strides_of(y, sy);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_forward_cpu", [&] {
    VAEISO_PICK_AVX512(forward<S>, cdata<S>(x), sx, cdata<S>(y), sy, window.data(), g, k, mode,
                maps.numel() > 0 ? mdata<acc_t<S>>(maps) : nullptr, mdata<double>(om),
                mode.with_l1 ? mdata<double>(lm) : nullptr);
  });
  copy_into(one_minus, om);
  if (mode.with_l1) copy_into(l1, lm);
}

void backward_cpu(const Tensor& grad, const Tensor& grad_l1, const Tensor& x,
                  const Tensor& y, const Tensor& maps, const std::vector<double>& window,
                  const Geometry& g, Tensor& grad_x, Tensor& grad_y) {
  int64_t sx[4], sy[4];
  strides_of(x, sx);
  strides_of(y, sy);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_backward_cpu", [&] {
    VAEISO_PICK_AVX512(backward<S>, cdata<acc_t<S>>(grad), grad_l1.numel() > 0 ? cdata<acc_t<S>>(grad_l1) : nullptr,
                cdata<S>(x), sx, cdata<S>(y), sy, cdata<acc_t<S>>(maps), window.data(), g, mdata<S>(grad_x),
                mdata<S>(grad_y));
  });
}

void pairs_cpu(const Tensor& base, const Tensor& others, const std::vector<double>& window,
               const Geometry& g, Constants k, Tensor& out) {
  const int64_t K = others.size(1);
  auto mean = alloc({g.N, K}, dt::kDouble, base);
  int64_t sb[4], so[5];
  strides_of(base, sb);
  strides_of(others, so);
  VAEISO_CPU_DISPATCH(base.scalar_type(), "ssim_pairs_cpu", [&] {
    VAEISO_PICK_AVX512(pairs<S>, cdata<S>(base), sb, cdata<S>(others), so, K, window.data(), g, k,
                mdata<double>(mean));
  });
  copy_into(out, mean);
}

void filter_cpu(const Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,
                bool transpose, Tensor& dst) {
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
    VAEISO_PICK_AVX512(filter<T>, cdata<T>(src), mdata<T>(dst), src.size(0), img.size(1), img.size(2), window.data(),
                       ws, pad, transpose);
  };
  if (src.scalar_type() == dt::kDouble) run(double{});
  else run(float{});
}

}  // namespace vaeiso::ssim
