// SSIM CPU entry points: tensors to raw buffers, dtype dispatch, then the AVX-512 or AVX2 build of
// the passes where the CPU has it, else the baseline (ssim_cpu_passes.h).
#include <ATen/ATen.h>

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
void strides_of(const at::Tensor& t, int64_t (&s)[D]) {
  for (size_t i = 0; i < D; ++i) s[i] = t.stride(i);
}

}  // namespace

void forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                 const Geometry& g, Constants k, Mode mode, at::Tensor& one_minus, at::Tensor& l1,
                 at::Tensor& maps) {
  // Means per (image, channel) in double from the kernel, rounded once to the output dtype.
  auto om = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  auto lm = at::empty({mode.with_l1 ? g.N : 0, g.C}, x.options().dtype(at::kDouble));
  int64_t sx[4], sy[4];
  strides_of(x, sx);
  strides_of(y, sy);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_forward_cpu", [&] {
    VAEISO_PICK_AVX512(forward<S>, cptr<S>(x), sx, cptr<S>(y), sy, window.data(), g, k, mode,
                maps.numel() > 0 ? mptr<acc_t<S>>(maps) : nullptr, mptr<double>(om),
                mode.with_l1 ? mptr<double>(lm) : nullptr);
  });
  one_minus.copy_(om);
  if (mode.with_l1) l1.copy_(lm);
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                  const at::Tensor& y, const at::Tensor& maps, const std::vector<double>& window,
                  const Geometry& g, at::Tensor& grad_x, at::Tensor& grad_y) {
  int64_t sx[4], sy[4];
  strides_of(x, sx);
  strides_of(y, sy);
  VAEISO_CPU_DISPATCH(x.scalar_type(), "ssim_backward_cpu", [&] {
    VAEISO_PICK_AVX512(backward<S>, cptr<acc_t<S>>(grad), grad_l1.numel() > 0 ? cptr<acc_t<S>>(grad_l1) : nullptr,
                cptr<S>(x), sx, cptr<S>(y), sy, cptr<acc_t<S>>(maps), window.data(), g, mptr<S>(grad_x),
                mptr<S>(grad_y));
  });
}

void pairs_cpu(const at::Tensor& base, const at::Tensor& others, const std::vector<double>& window,
               const Geometry& g, Constants k, at::Tensor& out) {
  const int64_t K = others.size(1);
  auto mean = at::empty({g.N, K}, base.options().dtype(at::kDouble));
  int64_t sb[4], so[5];
  strides_of(base, sb);
  strides_of(others, so);
  VAEISO_CPU_DISPATCH(base.scalar_type(), "ssim_pairs_cpu", [&] {
    VAEISO_PICK_AVX512(pairs<S>, cptr<S>(base), sb, cptr<S>(others), so, K, window.data(), g, k,
                mptr<double>(mean));
  });
  out.copy_(mean);
}

void filter_cpu(const at::Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,
                bool transpose, at::Tensor& dst) {
  // The filter is a building block of composites that already compute in float32 for the half
  // types (ssim_metric_gram); a half input is filtered in float32 and rounded once.
  if (is_half(src.scalar_type())) {
    auto df = at::empty(dst.sizes(), dst.options().dtype(at::kFloat));
    filter_cpu(src.to(at::kFloat), window, ws, pad, transpose, df);
    dst.copy_(df);
    return;
  }
  const at::Tensor& img = transpose ? dst : src;
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "ssim_filter_cpu", [&] {
    VAEISO_PICK_AVX512(filter<scalar_t>, src.const_data_ptr<scalar_t>(), dst.mutable_data_ptr<scalar_t>(),
                src.size(0), img.size(1), img.size(2), window.data(), ws, pad, transpose);
  });
}

}  // namespace vaeiso::ssim
