// GDN's channel-mixing GEMMs on CUDA (gdn_entry.h): cuBLAS on torch's own handle for the
// current device and stream (the stable C shim's torch_get_current_cuda_blas_handle, which
// comes with torch's stream and workspace set), in full float32: the handle's math mode is set
// to CUBLAS_DEFAULT_MATH (no TF32) for our calls and restored after, so torch's TF32 setting is
// never read or changed (gemm policy, docs/design.md). Row-major buffers are handed to cuBLAS
// as their column-major transposes. Deterministic: fixed calls in a fixed order, one stream.
//
// cuBLAS itself is the copy torch loaded (its libraries ship it): its functions are looked up in
// that library at first use (dlopen with RTLD_NOLOAD), so the wheel neither links nor bundles a
// cuBLAS of its own, and the few declarations needed (cuBLAS v2's stable C API) are written here.
#ifdef VAEISO_WITH_CUDA
#include <dlfcn.h>

#include <cstdint>
#include <type_traits>

#include "cuda_host.h"
#include "gdn/gdn_entry.h"

namespace vaeiso::gdn {
namespace {

using cublasHandle_t = void*;
using cublasStatus_t = int;
using cublasOperation_t = int;
using cublasMath_t = int;
constexpr cublasOperation_t CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
constexpr cublasMath_t CUBLAS_DEFAULT_MATH = 0;
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;

template <typename T>
using GemmBatched = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const T*,
                                       const T*, int, long long, const T*, int, long long, const T*, T*, int, long long,
                                       int);

struct CublasApi {
  cublasStatus_t (*get_math)(cublasHandle_t, cublasMath_t*) = nullptr;
  cublasStatus_t (*set_math)(cublasHandle_t, cublasMath_t) = nullptr;
  GemmBatched<float> sgemm = nullptr;
  GemmBatched<double> dgemm = nullptr;
};

const CublasApi& cublas() {
  static const CublasApi api = [] {
    CublasApi a;
    void* lib = nullptr;
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
      lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
      if (lib != nullptr) break;
    }
    if (lib == nullptr) return a;
    a.get_math = reinterpret_cast<decltype(a.get_math)>(dlsym(lib, "cublasGetMathMode"));
    a.set_math = reinterpret_cast<decltype(a.set_math)>(dlsym(lib, "cublasSetMathMode"));
    a.sgemm = reinterpret_cast<GemmBatched<float>>(dlsym(lib, "cublasSgemmStridedBatched"));
    a.dgemm = reinterpret_cast<GemmBatched<double>>(dlsym(lib, "cublasDgemmStridedBatched"));
    return a;
  }();
  VAEISO_CHECK(api.get_math && api.set_math && api.sgemm && api.dgemm,
               "gdn: torch's cuBLAS library (libcublas.so.13 or .12) is not loaded");
  return api;
}

void check_blas(cublasStatus_t st, const char* what) {
  VAEISO_CHECK(st == CUBLAS_STATUS_SUCCESS, "gdn: cuBLAS error ", static_cast<int>(st), " in ", what);
}

// torch's handle in full-precision math for a scope.
class Blas {
 public:
  Blas() {
    void* h = nullptr;
    VAEISO_CHECK(torch_get_current_cuda_blas_handle(&h) == 0, "gdn: cannot get torch's cuBLAS handle");
    h_ = static_cast<cublasHandle_t>(h);
    check_blas(cublas().get_math(h_, &saved_), "cublasGetMathMode");
    check_blas(cublas().set_math(h_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  ~Blas() { cublas().set_math(h_, saved_); }
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
  cublasMath_t saved_ = CUBLAS_DEFAULT_MATH;
};

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Column-major c = op(a) op(b) + beta c, batched with the given strides (count 1: one GEMM).
template <typename T>
void gemm(const Blas& b, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, int64_t sa,
          const T* bm, int64_t ldb, int64_t sb, T beta, T* c, int64_t ldc, int64_t sc, int64_t count) {
  const T one = 1;
  for (int64_t v : {m, n, k, lda, ldb, ldc, count})
    VAEISO_CHECK(v <= INT32_MAX, "gdn: a GEMM dimension exceeds cuBLAS's int range (", v, ")");
  GemmBatched<T> f;
  if constexpr (std::is_same_v<T, float>)
    f = cublas().sgemm;
  else
    f = cublas().dgemm;
  check_blas(f(b.get(), op(ta), op(tb), int(m), int(n), int(k), &one, a, int(lda), sa, bm, int(ldb), sb, &beta, c,
               int(ldc), sc, int(count)),
             "cublas?gemmStridedBatched");
}

template <typename F>
void on_acc(const Tensor& t, F&& f) {
  if (t.scalar_type() == dt::kDouble)
    f(double{});
  else
    f(float{});
}

}  // namespace

void mix_channels_cuda(const Tensor& gamma, bool transposed, const Tensor& fx, Tensor& out, bool cl) {
  const int64_t C = gamma.size(0);
  if (fx.numel() == 0) return;
  Blas blas;
  on_acc(fx, [&](auto tag) {
    using T = decltype(tag);
    const T* g = cdata<T>(gamma);
    if (cl) {
      // rows (M, C): out^T = mix fx^T, i.e. column-major (C x M) = op(G^T) (C x M); the
      // buffer of gamma read column-major is gamma^T, so mix = gamma needs op 'T'.
      const int64_t M = fx.numel() / C;
      gemm<T>(blas, !transposed, false, C, M, C, g, C, 0, cdata<T>(fx), C, 0, T(0), mdata<T>(out), C, 0, 1);
    } else {
      // per sample (C, S): out_n^T (S x C) = fx_n^T mix^T, batched over N.
      const int64_t N = fx.size(0), S = fx.numel() / (N * C);
      gemm<T>(blas, false, transposed, S, C, C, cdata<T>(fx), S, C * S, g, C, 0, T(0), mdata<T>(out), S, C * S, N);
    }
  });
}

void gamma_grad_cuda(const Tensor& t, const Tensor& fx, Tensor& ggamma, bool cl) {
  const int64_t C = ggamma.size(0);
  Blas blas;
  on_acc(t, [&](auto tag) {
    using T = decltype(tag);
    T* gg = mdata<T>(ggamma);
    if (cl) {
      // ggamma^T (column-major C x C) = fx_cm (C x M) t_cm^T
      const int64_t M = t.numel() / C;
      gemm<T>(blas, false, true, C, C, M, cdata<T>(fx), C, 0, cdata<T>(t), C, 0, T(0), gg, C, 0, 1);
    } else {
      // sum over samples of fx_n t_n^T, in sample order (beta = 1 after the first)
      const int64_t N = t.size(0), S = t.numel() / (N * C);
      for (int64_t n = 0; n < N; ++n)
        gemm<T>(blas, true, false, C, C, S, cdata<T>(fx) + n * C * S, S, 0, cdata<T>(t) + n * C * S, S, 0,
                n == 0 ? T(0) : T(1), gg, C, 0, 1);
    }
  });
}

}  // namespace vaeiso::gdn
#endif
