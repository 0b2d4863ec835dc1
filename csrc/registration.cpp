// Operator schemas for the whole `vaeiso` namespace, and the tiny Python module `_C` whose import
// loads this library (and so runs the registrations). Kernels register with TORCH_LIBRARY_IMPL
// beside their code; tensors never cross pybind11 (see DESIGN.md): everything goes through
// torch.ops.vaeiso.*.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(vaeiso, m) {
  // GDN / IGDN (SPEC §3.1). `norm` is the pre-activation beta + gamma @ f(x), returned so the
  // backward needs no second GEMM; `vaeiso::gdn` is the public single-output form.
  m.def("gdn_forward(Tensor x, Tensor beta, Tensor gamma, bool inverse=False, bool simplified=False)"
        " -> (Tensor out, Tensor norm)");
  m.def("gdn_backward(Tensor grad, Tensor x, Tensor norm, Tensor gamma, bool inverse, bool simplified,"
        " bool[3] output_mask) -> (Tensor grad_x, Tensor grad_beta, Tensor grad_gamma)");
  m.def("gdn(Tensor x, Tensor beta, Tensor gamma, bool inverse=False, bool simplified=False) -> Tensor");

  // ---- SSIM family (SPEC §3.2-3.3): kernels in csrc/ssim/ ----

  // (ssim schemas go here)

  // ---- Pair distances (SPEC §3.4): kernels in csrc/distance/ ----

  // D(base[n], others[n, k]) summed over all non-batch dims: "sse" or "bce" (Bernoulli KL);
  // weight (N,) multiplies per sample. weight is positional here (so autograd reaches it);
  // the Python wrapper makes it keyword-only.
  m.def("pair_distances(Tensor base, Tensor others, str metric, Tensor? weight=None) -> Tensor");
}

static PyModuleDef vaeiso_module = {PyModuleDef_HEAD_INIT, "_C",
                                    "vaeiso_ext compiled kernels (ops live in torch.ops.vaeiso)",
                                    -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* mod = PyModule_Create(&vaeiso_module);
  if (mod == nullptr) return nullptr;
  PyModule_AddStringConstant(mod, "TORCH_VERSION", VAEISO_TORCH_VERSION);
#ifdef VAEISO_WITH_CUDA
  PyModule_AddIntConstant(mod, "CUDA_COMPILED", 1);
#else
  PyModule_AddIntConstant(mod, "CUDA_COMPILED", 0);
#endif
  return mod;
}
