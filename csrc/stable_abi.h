// The LibTorch stable ABI as this package uses it (docs/design.md, stable-ABI rules). Every unit
// is compiled with TORCH_TARGET_VERSION 2.10 (CMakeLists.txt), so the stable headers hide any API
// newer than 2.10 and one build loads in every torch from 2.10 on. Nothing here may call a C++
// symbol of libtorch: only the stable headers' inline code and the C shim functions it calls
// (tests/test_stable_abi.py checks the built library's imports).
//
// - Tensor: torch::stable::Tensor (a handle); ATen ops through the stable wrappers of
//   torch/csrc/stable/ops.h, or `call_op` for any op whose arguments the stable conversions
//   carry (Tensor, int, float, bool, int[], dtype, device; no Scalar before torch 2.14).
// - Errors: VAEISO_CHECK throws std::runtime_error with the message alone (Python sees a
//   RuntimeError, as it did with TORCH_CHECK); the Python wrappers raise TypeError/ValueError
//   before any op runs.
// - Argument checks whose messages name the argument (docs/ops.md, conventions).
#pragma once

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace vaeiso {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using Device = torch::stable::Device;
using IntRef = torch::headeronly::IntHeaderOnlyArrayRef;
namespace dt {
constexpr ScalarType kFloat = ScalarType::Float;
constexpr ScalarType kDouble = ScalarType::Double;
constexpr ScalarType kHalf = ScalarType::Half;
constexpr ScalarType kBFloat16 = ScalarType::BFloat16;
}  // namespace dt

// ---------------------------------------------------------------------------- messages

// A shape as ATen prints it: [2, 3].
struct Shape {
  std::vector<int64_t> v;
  Shape(IntRef r) : v(r.begin(), r.end()) {}          // NOLINT: implicit on purpose
  Shape(std::vector<int64_t> r) : v(std::move(r)) {}  // NOLINT
};
inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << "[";
  for (size_t i = 0; i < s.v.size(); ++i) os << (i ? ", " : "") << s.v[i];
  return os << "]";
}

// A tensor's device as ATen prints it: cpu, cuda:0.
struct DeviceName {
  bool cuda;
  int index;
};
inline DeviceName device_of(const Tensor& t) {
  return {t.is_cuda(), t.is_cuda() ? static_cast<int>(t.get_device_index()) : -1};
}
inline std::ostream& operator<<(std::ostream& os, const DeviceName& d) {
  if (!d.cuda) return os << "cpu";
  return os << "cuda:" << d.index;
}
inline bool operator==(const DeviceName& a, const DeviceName& b) { return a.cuda == b.cuda && a.index == b.index; }

template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  ((os << args), ...);
  return os.str();
}

}  // namespace vaeiso

#define VAEISO_CHECK(cond, ...)                                        \
  do {                                                                 \
    if (!(cond)) throw std::runtime_error(::vaeiso::str(__VA_ARGS__)); \
  } while (0)

namespace vaeiso {

// ---------------------------------------------------------------------------- tensors

inline std::vector<int64_t> sizes_of(const Tensor& t) {
  const auto s = t.sizes();
  return {s.begin(), s.end()};
}
inline bool same_sizes(const Tensor& a, const Tensor& b) { return a.dim() == b.dim() && sizes_of(a) == sizes_of(b); }

// Contiguous strides for `sizes` (1 for the last dim).
inline std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> strides(sizes.size());
  int64_t n = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = n;
    n *= sizes[d] > 1 ? sizes[d] : 1;
  }
  return strides;
}

// A fresh contiguous tensor on `like`'s device. On the CPU through the C shim's
// aoti_torch_empty_strided (one C call): the stable new_empty goes through
// torch_call_dispatcher, which looks the operator up by name, converts every argument to an
// IValue and runs the boxed kernel, about 6,000 instructions a call, as much as a small kernel
// (docs/benchmarks.md, the stable-ABI port's per-call cost).
inline Tensor alloc(const std::vector<int64_t>& sizes, ScalarType dtype, const Tensor& like) {
  if (!like.is_cpu()) return torch::stable::new_empty(like, sizes, dtype);
  const auto strides = contiguous_strides(sizes);
  const int32_t shim_dtype = torch::stable::detail::to<int32_t>(torch::stable::detail::from(dtype));
  const int32_t cpu =
      torch::stable::detail::to<int32_t>(torch::stable::detail::from(torch::headeronly::DeviceType::CPU));
  AtenTensorHandle h = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(),
                                                         strides.data(), shim_dtype, cpu, -1, &h));
  return Tensor(h);
}
// t itself when it has dtype `d` already, else a converted copy.
inline Tensor to_dtype(const Tensor& t, ScalarType d) { return t.scalar_type() == d ? t : torch::stable::to(t, d); }
inline Tensor contig(const Tensor& t) { return t.is_contiguous() ? t : torch::stable::contiguous(t); }
inline void copy_into(Tensor& dst, const Tensor& src) { torch::stable::copy_(dst, src); }
inline void zero(Tensor& t) { torch::stable::zero_(t); }
inline Tensor reshaped(const Tensor& t, const std::vector<int64_t>& s) { return torch::stable::reshape(t, s); }
inline Tensor viewed(const Tensor& t, const std::vector<int64_t>& s) { return torch::stable::view(t, s); }

// a * b (aten::mul.Tensor through the stable dispatcher).
inline Tensor mul(const Tensor& a, const Tensor& b) {
  std::array<StableIValue, 2> stack{torch::stable::detail::from(a), torch::stable::detail::from(b)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::mul", "Tensor", stack.data(), TORCH_ABI_VERSION));
  return torch::stable::detail::to<Tensor>(stack[0]);
}

// t with dim 1 moved last (movedim(1, -1)), and back (movedim(-1, 1)): views.
inline std::vector<int64_t> channels_last_order(int64_t dim) {
  std::vector<int64_t> p;
  p.push_back(0);
  for (int64_t d = 2; d < dim; ++d) p.push_back(d);
  p.push_back(1);
  return p;
}
inline Tensor channels_last_view(const Tensor& t) { return torch::stable::permute(t, channels_last_order(t.dim())); }
// The sizes of channels_last_view(t), and whether that view is contiguous, read from t's sizes
// and strides (ATen's rule: dims of size 1 do not count, an empty tensor is contiguous) rather
// than from the view: permute is a dispatcher call.
inline std::vector<int64_t> channels_last_sizes(const Tensor& t) {
  const auto s = t.sizes();
  std::vector<int64_t> out;
  for (const int64_t d : channels_last_order(t.dim())) out.push_back(s[d]);
  return out;
}
inline bool channels_last_contiguous(const Tensor& t) {
  if (t.numel() == 0) return true;
  const auto s = t.sizes();
  const auto st = t.strides();
  const auto p = channels_last_order(t.dim());
  int64_t z = 1;
  for (size_t i = p.size(); i-- > 0;) {
    const int64_t n = s[p[i]];
    if (n == 1) continue;
    if (st[p[i]] != z) return false;
    z *= n;
  }
  return true;
}
inline Tensor channels_first_view(const Tensor& t) {
  std::vector<int64_t> p{0, t.dim() - 1};
  for (int64_t d = 1; d < t.dim() - 1; ++d) p.push_back(d);
  return torch::stable::permute(t, p);
}

template <typename T>
const T* cdata(const Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}
template <typename T>
T* mdata(const Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// ---------------------------------------------------------------------------- dtype checks

inline size_t elem_size(ScalarType d) {
  return d == dt::kDouble ? 8 : d == dt::kFloat ? 4 : (d == dt::kHalf || d == dt::kBFloat16) ? 2 : 0;
}

inline bool is_half(ScalarType d) { return d == dt::kHalf || d == dt::kBFloat16; }

// The dtype the kernels compute in: float32 for the half types.
inline ScalarType acc_type(ScalarType d) { return is_half(d) ? dt::kFloat : d; }

inline void check_float_dtype(const Tensor& t, const char* name) {
  const auto d = t.scalar_type();
  VAEISO_CHECK(d == dt::kFloat || d == dt::kDouble || is_half(d), name,
               ": expected float32, float64, float16 or bfloat16, got ", d);
}

// The two inputs of a loss (prediction and target, docs/ops.md, conventions): the same dtype, or the mix autocast
// produces, a half type against float32, which computes in float32. Returns the dtype to compute
// in (and of the output); anything else mixed is an error naming `name`.
inline ScalarType loss_pair_dtype(const Tensor& t, const Tensor& ref, const char* name, const char* ref_name) {
  const auto a = t.scalar_type(), b = ref.scalar_type();
  if (a == b) return a;
  VAEISO_CHECK((is_half(a) && b == dt::kFloat) || (a == dt::kFloat && is_half(b)), name, ": expected dtype ", b,
               " (the dtype of ", ref_name, "), or float32 against a float16/bfloat16 ", ref_name,
               " (autocast's mix), got ", a);
  return dt::kFloat;
}

inline void check_same_dtype(const Tensor& t, const Tensor& ref, const char* name, const char* ref_name) {
  VAEISO_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ", ref.scalar_type(), " (the dtype of ",
               ref_name, "), got ", t.scalar_type());
}

inline void check_same_device(const Tensor& t, const Tensor& ref, const char* name, const char* ref_name) {
  VAEISO_CHECK(device_of(t) == device_of(ref), name, ": expected a tensor on ", device_of(ref), " (the device of ",
               ref_name, "), got ", device_of(t));
}

// The current CUDA device set to t's for a scope (nothing for a CPU tensor).
class DeviceScope {
 public:
  explicit DeviceScope(const Tensor& t) {
    if (t.is_cuda()) guard_.emplace(t.get_device_index());
  }

 private:
  std::optional<torch::stable::accelerator::DeviceGuard> guard_;
};

}  // namespace vaeiso

// VAEISO_ON_DEVICE(fn, t, args...): fn_cuda(args...) for a CUDA tensor t, else fn_cpu(args...).
#ifdef VAEISO_WITH_CUDA
#define VAEISO_ON_DEVICE(fn, t, ...) ((t).is_cuda() ? fn##_cuda(__VA_ARGS__) : fn##_cpu(__VA_ARGS__))
#else
#define VAEISO_ON_DEVICE(fn, t, ...) fn##_cpu(__VA_ARGS__)
#endif
