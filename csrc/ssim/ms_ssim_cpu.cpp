// Per-channel SSIM CPU entry points: tensors to raw buffers, dtype dispatch, then the AVX2 build
// of the passes where the CPU has it, else the baseline (ms_ssim_cpu_passes.h; both compiled from
// ms_ssim_cpu_impl.h inside the ssim_cpu_*.cpp units).
#include <ATen/ATen.h>

#include "common.h"
#include "cpu_dtype.h"
#include "cpu_isa.h"
#include "ssim/ms_ssim_cpu_passes.h"
#include "ssim/ms_ssim_kernels.h"

namespace vaeiso::ssim {

VAEISO_MS_SSIM_DECLARE_PASSES(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_MS_SSIM_DECLARE_PASSES(isa_avx2)
#endif

namespace {

void strides4(const at::Tensor& t, int64_t (&s)[4]) {
  for (int i = 0; i < 4; ++i) s[i] = t.stride(i);
}

}  // namespace

void channels_forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                          const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,
                          at::Tensor& l1, at::Tensor& maps) {
  // Means per (image, channel) in double from the kernel, rounded once to the output dtype.
  auto om = at::empty({g.N, g.C}, x.options().dtype(at::kDouble));
  auto lm = at::empty({mode.with_l1 ? g.N * g.C : 0}, x.options().dtype(at::kDouble));
  int64_t sx[4], sy[4];
  strides4(x, sx);
  strides4(y, sy);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_channels_cpu", [&] {
    using S = scalar_t;
    VAEISO_PICK(channels_forward<S>, cptr<S>(x), sx, cptr<S>(y), sy, window.data(), g, k, mode,
                mptr<double>(om), mode.with_l1 ? mptr<double>(lm) : nullptr,
                maps.numel() > 0 ? mptr<S>(maps) : nullptr);
  });
  one_minus.copy_(om);
  if (mode.with_l1) l1.copy_(lm.view({g.N, g.C}));
}

void channels_backward_cpu(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                           const at::Tensor& y, const at::Tensor& maps,
                           const std::vector<double>& window, const Geometry& g,
                           at::Tensor& grad_x, at::Tensor& grad_y) {
  int64_t sx[4], sy[4];
  strides4(x, sx);
  strides4(y, sy);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_channels_backward_cpu", [&] {
    using S = scalar_t;
    VAEISO_PICK(channels_backward<S>, cptr<S>(grad), grad_l1.numel() > 0 ? cptr<S>(grad_l1) : nullptr,
                cptr<S>(x), sx, cptr<S>(y), sy, cptr<S>(maps), window.data(), g, mptr<S>(grad_x),
                mptr<S>(grad_y));
  });
}

}  // namespace vaeiso::ssim
