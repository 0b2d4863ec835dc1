// The half types as the per-ISA CPU kernels see them: raw 16-bit storage (vaeiso::f16,
// vaeiso::bf16, layout-compatible with c10::Half and c10::BFloat16) and their conversions to and
// from float, written here so that an ISA unit compiles none of c10's inline functions (see
// host_device.h). Accumulation type: float for the half types, the type itself otherwise.
#pragma once
#include <cstdint>
#include <cstring>

#include "host_device.h"

namespace vaeiso {

struct f16 {
  uint16_t bits;
};
struct bf16 {
  uint16_t bits;
};

template <typename S>
struct AccOf {
  using type = S;
};
template <>
struct AccOf<f16> {
  using type = float;
};
template <>
struct AccOf<bf16> {
  using type = float;
};
template <typename S>
using acc_t = typename AccOf<S>::type;

VAEISO_ISA_BEGIN

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float load(float v) { return v; }
inline double load(double v) { return v; }
inline float load(bf16 v) { return bits_to_float(static_cast<uint32_t>(v.bits) << 16); }

// IEEE binary16 -> binary32, exact for every input (NaN stays NaN, quiet).
inline float load(f16 v) {
  const uint32_t h = v.bits, sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {  // zero and subnormals: m * 2^-24, exact in float
    const float mag = static_cast<float>(m) * 0x1p-24f;
    return bits_to_float(sign | float_to_bits(mag));
  }
  if (e == 0x1f) return bits_to_float(sign | 0x7f800000u | (m << 13));  // inf, NaN
  return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));          // rebias 15 -> 127
}

template <typename S>
S store(acc_t<S> v);

template <>
inline float store<float>(float v) {
  return v;
}

template <>
inline double store<double>(double v) {
  return v;
}

// binary32 -> bfloat16, round to nearest even; NaN stays a (quiet) NaN.
template <>
inline bf16 store<bf16>(float v) {
  uint32_t u = float_to_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// binary32 -> binary16, round to nearest even (overflow to inf, gradual underflow).
template <>
inline f16 store<f16>(float v) {
  const uint32_t u = float_to_bits(v), sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return f16{static_cast<uint16_t>(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (a >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (a < 0x38800000u) {
    // Below the smallest normal (2^-14): the result is round(|v| 2^24) units of 2^-24. The scaling
    // is exact, and adding then subtracting 2^23 rounds to an integer in the current (nearest-even)
    // mode; 1024 is the smallest normal's encoding, as it should be.
    const float r = (bits_to_float(a) * 0x1p24f + 0x1p23f) - 0x1p23f;
    return f16{static_cast<uint16_t>(sign | static_cast<uint32_t>(r))};
  }
  a += 0xfffu + ((a >> 13) & 1u);  // round the 13 dropped bits to nearest even
  return f16{static_cast<uint16_t>(sign | ((a - (112u << 23)) >> 13))};
}

VAEISO_ISA_END

}  // namespace vaeiso
