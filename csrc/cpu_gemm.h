// Column-major GEMM on raw CPU buffers, for kernels that tile their own work into cache-sized
// blocks (GDN): c = alpha op(a) op(b) + beta c, op 'n' (as stored) or 't' (transposed), with
// BLAS's meaning of m, n, k and the leading dimensions. It calls the BLAS that torch ships
// (sgemm_ / dgemm_) directly: a tensor op per block would cost more in dispatch than the small
// product itself. Called inside at::parallel_for, the BLAS runs single-threaded. Safe to call
// from the per-ISA units (declared here, defined in cpu_gemm.cpp).
#pragma once
#include <cstdint>

namespace vaeiso {

void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_cm(char ta, char tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
             const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

}  // namespace vaeiso
