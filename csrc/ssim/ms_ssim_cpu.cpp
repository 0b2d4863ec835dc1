// Per-channel SSIM CPU entry points: the AVX2 build where the CPU has it, else the baseline
// (both compiled from ms_ssim_cpu_impl.h inside the ssim_cpu_*.cpp units).
#include "cpu_isa.h"
#include "ssim/ms_ssim_kernels.h"

namespace vaeiso::ssim {

#define VAEISO_DECLARE_CHANNELS_ISA(ns)                                                            \
  namespace ns {                                                                                   \
  void channels_forward(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window, \
                        const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,   \
                        at::Tensor& l1, at::Tensor& maps);                                         \
  void channels_backward(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,   \
                         const at::Tensor& y, const at::Tensor& maps,                              \
                         const std::vector<double>& window, const Geometry& g,                     \
                         at::Tensor& grad_x, at::Tensor& grad_y);                                  \
  }
VAEISO_DECLARE_CHANNELS_ISA(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DECLARE_CHANNELS_ISA(isa_avx2)
#endif

void channels_forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                          const Geometry& g, Constants k, ChannelMode mode, at::Tensor& one_minus,
                          at::Tensor& l1, at::Tensor& maps) {
  VAEISO_PICK(channels_forward, x, y, window, g, k, mode, one_minus, l1, maps);
}

void channels_backward_cpu(const at::Tensor& grad, const at::Tensor& grad_l1, const at::Tensor& x,
                           const at::Tensor& y, const at::Tensor& maps,
                           const std::vector<double>& window, const Geometry& g,
                           at::Tensor& grad_x, at::Tensor& grad_y) {
  VAEISO_PICK(channels_backward, grad, grad_l1, x, y, maps, window, g, grad_x, grad_y);
}

}  // namespace vaeiso::ssim
