// Operator schemas for the whole `vaeiso` namespace, and the tiny Python module `_C` whose import
// loads this library (and so runs the registrations). Kernels register with
// STABLE_TORCH_LIBRARY_IMPL beside their code; tensors never cross into Python here (see
// docs/design.md): everything goes through torch.ops.vaeiso.*. The module uses only the Python
// limited API of 3.10 (abi3).
#include <Python.h>

#include <stdexcept>

#include "common.h"
#include "cpu_isa.h"

STABLE_TORCH_LIBRARY(vaeiso, m) {
  // GDN / IGDN (docs/ops.md, gdn). `norm` is the pre-activation beta + gamma @ f(x), returned so the
  // backward needs no second GEMM (empty when not `need_norm`: inference); `vaeiso::gdn` is the
  // public single-output form.
  m.def(
      "gdn_forward(Tensor x, Tensor beta, Tensor gamma, bool inverse=False, bool simplified=False,"
      " bool need_norm=True) -> (Tensor out, Tensor norm)");
  m.def(
      "gdn_backward(Tensor grad, Tensor x, Tensor norm, Tensor gamma, bool inverse, bool simplified,"
      " bool[3] output_mask) -> (Tensor grad_x, Tensor grad_beta, Tensor grad_gamma)");
  m.def("gdn(Tensor x, Tensor beta, Tensor gamma, bool inverse=False, bool simplified=False) -> Tensor");

  // ---- SSIM family (docs/ops.md, ssim to ssim_metric_gram): kernels in csrc/ssim/ ----

  // `ssim_forward` is the one SSIM pass under ssim, one_minus_ssim, ms_ssim and ssim_l1_loss:
  // it filters x and d = y - x (cancellation-free, ssim_math.h) and returns per (image, channel)
  // the mean of 1 - v (v = SSIM, or the contrast-structure term cs when `cs_only`), the mean
  // |y - x| when `with_l1` (else empty), and `maps` (N, C, 4, Ho, Wo), the per-position
  // derivatives the backward filters back onto the pixels (empty unless `need_maps`); all in the
  // accumulation dtype. `ssim_backward` takes the gradients of both (N, C) outputs (`grad_l1`
  // empty without the L1 term). `ssim` and `ssim_metric_gram` are composites (implemented in
  // Python, vaeiso_ext/ops/_composites.py: they need ATen ops with Scalar arguments, which the
  // stable ABI cannot call before torch 2.14); `ssim_filter` is the separable window filter (and
  // its adjoint); `ssim_pool` is MS-SSIM's 2x2 average pooling (and its adjoint), given the fine
  // image's height and width.
  m.def(
      "ssim_forward(Tensor x, Tensor y, int window_size, float sigma, float k1, float k2,"
      " float data_range, bool same_padding, bool cs_only, bool with_l1, bool need_maps)"
      " -> (Tensor one_minus, Tensor l1, Tensor maps)");
  m.def(
      "ssim_backward(Tensor grad, Tensor grad_l1, Tensor x, Tensor y, Tensor maps, int window_size,"
      " float sigma, bool same_padding) -> (Tensor grad_x, Tensor grad_y)");
  m.def(
      "ssim(Tensor x, Tensor y, *, int window_size=11, float sigma=1.5, float k1=0.01,"
      " float k2=0.03, float data_range=1.0, str padding=\"valid\") -> Tensor");
  m.def(
      "ssim_pairs(Tensor base, Tensor others, *, int window_size=11, float sigma=1.5,"
      " float k1=0.01, float k2=0.03, float data_range=1.0, str padding=\"valid\") -> Tensor");
  m.def("ssim_filter(Tensor t, int window_size, float sigma, bool same_padding, bool transpose) -> Tensor");
  m.def("ssim_pool(Tensor t, int height, int width, bool transpose) -> Tensor");
  m.def(
      "ssim_metric_gram(Tensor x, Tensor v, *, bool diagonal=False, int window_size=11,"
      " float sigma=1.5, float k1=0.01, float k2=0.03, float data_range=1.0,"
      " str padding=\"valid\") -> Tensor");
  // Private: the CUDA launch planner as integers, so that CPU-only builds test it
  // (csrc/ssim/ssim_cuda_plan.h, tests/test_cuda_kernels.py).
  m.def("_ssim_cuda_plan(int window_size, int acc_bytes, int smem_limit, str kind) -> int[]");

  // ---- Pair distances (docs/ops.md, pair_distances): kernels in csrc/distance/ ----

  // D(base[n], others[n, k]) summed over all non-batch dims: "sse" or "bce" (Bernoulli KL);
  // weight (N,) multiplies per sample. weight is positional here (so autograd reaches it);
  // the Python wrapper makes it keyword-only.
  m.def("pair_distances(Tensor base, Tensor others, str metric, Tensor? weight=None) -> Tensor");
  // Its fused backward (not differentiable: the wrapper differentiates torch ops for double
  // backward): the gradients output_mask asks for, empty tensors elsewhere.
  m.def(
      "pair_distances_backward(Tensor grad, Tensor base, Tensor others, str metric, Tensor? weight,"
      " bool[3] output_mask) -> (Tensor grad_base, Tensor grad_others, Tensor grad_weight)");
}

static PyModuleDef vaeiso_module = {PyModuleDef_HEAD_INIT, "_C",
                                    "vaeiso_ext compiled kernels (ops live in torch.ops.vaeiso)", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* mod = PyModule_Create(&vaeiso_module);
  if (mod == nullptr) return nullptr;
  PyModule_AddStringConstant(mod, "TORCH_VERSION", VAEISO_TORCH_VERSION);
  // The CPU kernels run their tasks on torch's intra-op thread pool (cpu_parallel.h), which
  // is OpenMP wherever torch's is: the kernels are parallel exactly when torch is.
  PyModule_AddIntConstant(mod, "OPENMP", 1);
  // The CPU kernel build in use (cpu_isa.h); a bad VAEISO_CPU_ISA fails the import, clearly.
  try {
    PyModule_AddStringConstant(mod, "CPU_ISA", vaeiso::cpu_isa_name());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    Py_DECREF(mod);
    return nullptr;
  }
#ifdef VAEISO_WITH_CUDA
  PyModule_AddIntConstant(mod, "CUDA_COMPILED", 1);
#else
  PyModule_AddIntConstant(mod, "CUDA_COMPILED", 0);
#endif
  return mod;
}
