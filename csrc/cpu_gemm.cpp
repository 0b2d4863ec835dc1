// gemm_cm (cpu_gemm.h): the Fortran BLAS symbols of the torch library when it exports them,
// else the same product through aten::mm (the stable dispatcher) on views of the buffers (correct,
// slower per call). VAEISO_BLAS_FALLBACK=1 in the environment forces the aten::mm path (the tests
// check it). These C symbols are not part of any torch API: a torch that stops exporting them
// gets the fallback.
#include "cpu_gemm.h"

#include "common.h"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <type_traits>

extern "C" {
// Weak: resolved against libtorch_cpu at load time; null where this torch has no such symbol.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace vaeiso {
namespace {

bool force_fallback() {
  static const bool on = [] {
    const char* v = std::getenv("VAEISO_BLAS_FALLBACK");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return on;
}

bool fits_int(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  for (int64_t v : {m, n, k, lda, ldb, ldc})
    if (v > INT_MAX) return false;
  return true;
}

// A column-major (rows x cols) matrix with leading dimension ld, as a strided tensor view.
template <typename T>
Tensor view_cm(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  constexpr ScalarType d = std::is_same_v<T, float> ? dt::kFloat : dt::kDouble;
  return torch::stable::from_blob(const_cast<T*>(p), {rows, cols}, {1, ld}, Device(torch::headeronly::DeviceType::CPU),
                                  d);
}

// c = alpha op(a) op(b) + beta c: the product by aten::mm, then combined here (beta == 0 never
// reads c: it may hold garbage).
template <typename T>
void gemm_aten(char ta, char tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto A = ta == 'n' ? view_cm(a, m, k, lda) : torch::stable::transpose(view_cm(a, k, m, lda), 0, 1);
  const auto B = tb == 'n' ? view_cm(b, k, n, ldb) : torch::stable::transpose(view_cm(b, n, k, ldb), 0, 1);
  const auto P = contig(torch::stable::matmul(A, B));  // (m, n) row-major
  const T* p = cdata<T>(P);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      T& ci = c[i + j * ldc];
      ci = beta == T(0) ? alpha * p[i * n + j] : beta * ci + alpha * p[i * n + j];
    }
}

template <typename T, typename F>
void gemm_any(F* blas, char ta, char tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
              int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (blas == nullptr || force_fallback() || !fits_int(m, n, k, lda, ldb, ldc) || k == 0) {
    if (k == 0) {  // BLAS semantics: c = beta c
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < m; ++i) c[i + j * ldc] = beta == T(0) ? T(0) : beta * c[i + j * ldc];
      return;
    }
    gemm_aten(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int im = int(m), in = int(n), ik = int(k), ia = int(lda), ib = int(ldb), ic = int(ldc);
  blas(&ta, &tb, &im, &in, &ik, &alpha, a, &ia, b, &ib, &beta, c, &ic);
}

}  // namespace

void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_any(sgemm_, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
             const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_any(dgemm_, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace vaeiso
