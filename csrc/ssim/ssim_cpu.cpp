// SSIM CPU entry points: the AVX2 build of the passes where the CPU has it, else the baseline.
#include "cpu_isa.h"
#include "ssim/ssim_kernels.h"

namespace vaeiso::ssim {

#define VAEISO_DECLARE_ISA(ns)                                                                     \
  namespace ns {                                                                                   \
  void forward(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,        \
               const Geometry& g, Constants k, bool loss, at::Tensor& out, at::Tensor& maps);      \
  void backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,                  \
                const at::Tensor& maps, const std::vector<double>& window, const Geometry& g,      \
                at::Tensor& grad_x, at::Tensor& grad_y);                                           \
  void pairs(const at::Tensor& base, const at::Tensor& others, const std::vector<double>& window,  \
             const Geometry& g, Constants k, at::Tensor& out);                                     \
  void filter(const at::Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,   \
              bool transpose, at::Tensor& dst);                                                    \
  }
VAEISO_DECLARE_ISA(isa_default)
#ifdef VAEISO_CPU_AVX2
VAEISO_DECLARE_ISA(isa_avx2)
#endif

void forward_cpu(const at::Tensor& x, const at::Tensor& y, const std::vector<double>& window,
                 const Geometry& g, Constants k, bool loss, at::Tensor& out, at::Tensor& maps) {
  VAEISO_PICK(forward, x, y, window, g, k, loss, out, maps);
}

void backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                  const at::Tensor& maps, const std::vector<double>& window, const Geometry& g,
                  at::Tensor& grad_x, at::Tensor& grad_y) {
  VAEISO_PICK(backward, grad, x, y, maps, window, g, grad_x, grad_y);
}

void pairs_cpu(const at::Tensor& base, const at::Tensor& others, const std::vector<double>& window,
               const Geometry& g, Constants k, at::Tensor& out) {
  VAEISO_PICK(pairs, base, others, window, g, k, out);
}

void filter_cpu(const at::Tensor& src, const std::vector<double>& window, int64_t ws, int64_t pad,
                bool transpose, at::Tensor& dst) {
  VAEISO_PICK(filter, src, window, ws, pad, transpose, dst);
}

}  // namespace vaeiso::ssim
