// 128-bit vector access for the CUDA element-wise kernels: kVec<T> elements of T are 16 bytes
// (8 halves, 4 floats, 2 doubles), loaded and stored as one aligned struct so that the compiler
// emits 128-bit memory instructions instead of kVec scalar ones. The accumulation-dtype buffers
// of half inputs hold kVec<half> = 8 floats: two 128-bit accesses. CUDA-only.
#pragma once
#include <cstdint>

namespace vaeiso {

template <typename T>
constexpr int kVec = 16 / sizeof(T) > 0 ? int(16 / sizeof(T)) : 1;

template <typename T, int N>
struct alignas(sizeof(T) * N) VecN {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ VecN<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const VecN<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void store_vec(T* p, const VecN<T, N>& v) {
  *reinterpret_cast<VecN<T, N>*>(p) = v;
}

// Whether a pointer may be accessed as VecN<T, N> (host side).
template <int N, typename T>
inline bool vec_aligned(const T* p) {
  return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * N) == 0;
}

}  // namespace vaeiso
