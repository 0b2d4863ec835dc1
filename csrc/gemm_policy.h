// How the op families run their GEMMs (the channel mixing of GDN, the weighted Gram products
// of ssim_metric_gram), which go to cuBLAS through ATen on CUDA:
//
// - Full float32. TF32 (torch.backends.cuda.matmul.allow_tf32 = True,
//   torch.backends.cuda.matmul.fp32_precision = "tf32", or
//   torch.set_float32_matmul_precision("high"/"medium")) keeps 10 mantissa bits, a relative
//   error of ~1e-3 per product: far outside what these ops promise for float32 (docs/ops.md:
//   float32 round-off). So a float32 GEMM on CUDA runs with TF32 switched off whatever the
//   global setting. Half inputs are computed in float32 here too (their GEMMs take float
//   operands), so they get the same treatment. The switch is at::NoTF32Guard: a thread-local
//   override that torch's cuBLAS paths consult before the global precision, so the user's
//   setting is never read, written or restored (reading it through the legacy
//   allowTF32CuBLAS() raises once the new fp32_precision API has set it: torch 2.14.1), no
//   mutex is needed, and other threads' matmuls keep their own precision.
// - Deterministic mode. The torch releases this package supports (>= 2.10) give each CUDA
//   stream its own cuBLAS workspace, so cuBLAS GEMMs repeat bit for bit on one device under
//   torch.use_deterministic_algorithms(True) without CUBLAS_WORKSPACE_CONFIG. Should a torch
//   still demand that variable, its error is re-raised naming the op and the fix.
#pragma once
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

namespace vaeiso {

// TF32 off on this thread while alive, when `active`.
class NoTF32Scope {
 public:
  explicit NoTF32Scope(bool active) {
    if (active) guard_.emplace();
  }

 private:
  std::optional<at::NoTF32Guard> guard_;
};

// Runs `gemms()` (any ATen matmuls on tensors like `operand`) under the policy above; `op` names
// the op in errors.
template <typename F>
decltype(auto) policy_gemm(const char* op, const at::Tensor& operand, F&& gemms) {
  NoTF32Scope scope(operand.is_cuda() && operand.scalar_type() == at::kFloat);
  try {
    return gemms();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (msg.find("CUBLAS_WORKSPACE_CONFIG") == std::string::npos) throw;
    TORCH_CHECK(false, op,
                ": torch.use_deterministic_algorithms(True) is on and this op's GEMMs run in "
                "cuBLAS, which this torch makes deterministic only with "
                "CUBLAS_WORKSPACE_CONFIG=:4096:8 (or :16:8) set in the environment before CUDA "
                "starts; set it, or leave deterministic mode. torch said: ", msg);
  }
}

}  // namespace vaeiso
