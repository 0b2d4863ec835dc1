// vaeiso::_ssim_cuda_plan: the SSIM CUDA launch planner (ssim_cuda_plan.h) as plain integers,
// so that CPU-only builds test the planning the GPU kernels use. Private (leading underscore);
// schema in csrc/registration.cpp. No tensor argument: the CompositeImplicitAutograd kernel is
// the one the dispatcher picks.
#include <algorithm>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "common.h"

#include "ssim/ssim_cuda_plan.h"

namespace vaeiso::ssim {
namespace {

// -> [chunk, chunks, dynamic_bytes, static_bytes, opt_in]
std::vector<int64_t> ssim_cuda_plan(int64_t window_size, int64_t acc_bytes, int64_t smem_limit, std::string kind) {
  using cuda_plan::Pass;
  static const std::pair<const char*, Pass> kinds[] = {{"forward", Pass::kForward},
                                                       {"pairs", Pass::kPairs},
                                                       {"backward", Pass::kBackward},
                                                       {"filter", Pass::kFilter},
                                                       {"filter_transpose", Pass::kFilterTranspose}};
  const auto* it = std::find_if(std::begin(kinds), std::end(kinds), [&](const auto& e) { return kind == e.first; });
  VAEISO_CHECK(it != std::end(kinds),
               "_ssim_cuda_plan: kind: expected 'forward', 'pairs', 'backward', 'filter' or "
               "'filter_transpose', got '",
               kind, "'");
  VAEISO_CHECK(acc_bytes == 4 || acc_bytes == 8, "_ssim_cuda_plan: acc_bytes: expected 4 (float) or 8 (double), got ",
               acc_bytes);
  const Pass p = it->second;
  const auto r = cuda_plan::plan(p, window_size, acc_bytes, smem_limit);
  return {r.chunk, r.chunks, r.dynamic_bytes, r.static_bytes, r.opt_in ? 1 : 0};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(vaeiso, CompositeImplicitAutograd, m) {
  m.impl("_ssim_cuda_plan", TORCH_BOX(&ssim_cuda_plan));
}

}  // namespace vaeiso::ssim
