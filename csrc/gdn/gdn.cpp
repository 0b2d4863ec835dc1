// GDN / IGDN on any device: argument checks and layout choice; then the CPU kernels, fused around
// their GEMMs (gdn_cpu_impl.h), or on CUDA the channel-mixing GEMMs (cuBLAS on torch's handle,
// gdn_cuda_gemm.cpp) around the element-wise passes of gdn_cuda.cu.
#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "cpu_workspace.h"
#include "gdn/gdn_entry.h"

namespace vaeiso::gdn {
namespace {

// Channel-last dense input (channels_last images, (N, C) matrices) is used as an (M, C) matrix
// with no copy; anything else is made contiguous channel-first (N, C, S). The fake impl in
// ops/_gdn.py mirrors this rule so output strides match.
bool use_channel_last(const Tensor& x) { return channels_last_contiguous(x); }

// On the CPU from the kept cache (cpu_workspace.h), outputs included: no fresh multi-MB heap
// block per call, and so no page faults per call in a user's process.
Tensor empty_in_layout(const Tensor& like, bool cl, ScalarType dt) {
  auto make = [&](const std::vector<int64_t>& sizes) {
    return like.is_cuda() ? alloc(sizes, dt, like) : kept_empty(sizes, dt, like);
  };
  if (cl) return channels_first_view(make(channels_last_sizes(like)));
  return make(sizes_of(like));
}

Tensor to_layout(const Tensor& t, bool cl) {
  if (cl) return channels_first_view(contig(channels_last_view(t)));
  return contig(t);
}

ScalarType acc_type(const Tensor& x) { return vaeiso::acc_type(x.scalar_type()); }

// beta and gamma have x's dtype, or float32 with a half x (autocast keeps parameters in float32):
// the kernels compute in float32 then, and the parameter gradients come out in float32.
void check_param_dtype(const Tensor& p, const Tensor& x, const char* name) {
  const auto dt = p.scalar_type();
  VAEISO_CHECK(dt == x.scalar_type() || (is_half(x.scalar_type()) && dt == dt::kFloat), name, ": expected dtype ",
               x.scalar_type(), " (the dtype of x)", is_half(x.scalar_type()) ? " or float32" : "", ", got ", dt);
}

void check_params(const Tensor& x, const Tensor& beta, const Tensor& gamma) {
  VAEISO_CHECK(x.dim() >= 2, "gdn: x: expected a tensor of shape (N, C, *) with at least 2 dims, got ", x.dim(),
               " dims");
  check_float_dtype(x, "gdn: x");
  const int64_t C = x.size(1);
  VAEISO_CHECK(beta.dim() == 1 && beta.size(0) == C, "gdn: beta: expected shape (", C, ",) for x with ", C,
               " channels, got ", Shape(beta.sizes()));
  VAEISO_CHECK(gamma.dim() == 2 && gamma.size(0) == C && gamma.size(1) == C, "gdn: gamma: expected shape (", C, ", ", C,
               ") for x with ", C, " channels, got ", Shape(gamma.sizes()));
  check_param_dtype(beta, x, "gdn: beta");
  check_param_dtype(gamma, x, "gdn: gamma");
  check_same_dtype(gamma, beta, "gdn: gamma", "beta");
  check_same_device(beta, x, "gdn: beta", "x");
  check_same_device(gamma, x, "gdn: gamma", "x");
}

}  // namespace

std::tuple<Tensor, Tensor> gdn_forward(Tensor x, Tensor beta, Tensor gamma, bool inverse, bool simplified,
                                       bool need_norm) {
  check_params(x, beta, gamma);
  DeviceScope guard(x);
  const Variant v{inverse, simplified};
  const bool cl = use_channel_last(x);
  const auto acc = acc_type(x);
  auto out = empty_in_layout(x, cl, x.scalar_type());
  // Without need_norm (no gradient will be asked for) norm is returned empty, and the CPU
  // kernel never writes it: a tensor of x's size less to store.
  const auto norm = need_norm ? empty_in_layout(x, cl, acc) : alloc({0}, acc, x);
  if (x.numel() == 0) return {out, norm};

  const auto xc = to_layout(x, cl);
  if (!x.is_cuda()) {
    Tensor nrm = need_norm ? norm : Tensor();
    forward_cpu(xc, contig(to_dtype(beta, acc)), contig(to_dtype(gamma, acc)), out, nrm, cl, v);
    return {out, norm};
  }
#ifdef VAEISO_WITH_CUDA
  // the CUDA kernels need norm as a buffer, returned or not
  auto nbuf = need_norm ? norm : empty_in_layout(x, cl, acc);
  auto fx = empty_in_layout(x, cl, acc);
  fx_cuda(xc, fx, v);
  mix_channels_cuda(contig(to_dtype(gamma, acc)), false, fx, nbuf, cl);
  const auto beta_acc = contig(to_dtype(beta, acc));
  forward_epilogue_cuda(xc, nbuf, beta_acc, out, x.size(1), cl ? 1 : xc.numel() / (x.size(0) * x.size(1)), v);
#endif
  return {out, norm};
}

std::tuple<Tensor, Tensor, Tensor> gdn_backward(Tensor grad, Tensor x, Tensor norm, Tensor gamma, bool inverse,
                                                bool simplified, std::vector<bool> output_mask) {
  VAEISO_CHECK(x.dim() >= 2, "gdn_backward: x: expected at least 2 dims, got ", x.dim());
  check_float_dtype(x, "gdn_backward: x");
  VAEISO_CHECK(same_sizes(grad, x), "gdn_backward: grad: expected shape ", Shape(x.sizes()), " (the shape of x), got ",
               Shape(grad.sizes()));
  VAEISO_CHECK(same_sizes(norm, x), "gdn_backward: norm: expected shape ", Shape(x.sizes()), " (the shape of x), got ",
               Shape(norm.sizes()));
  const int64_t C = x.size(1);
  VAEISO_CHECK(gamma.dim() == 2 && gamma.size(0) == C && gamma.size(1) == C, "gdn_backward: gamma: expected shape (", C,
               ", ", C, "), got ", Shape(gamma.sizes()));
  check_same_dtype(grad, x, "gdn_backward: grad", "x");
  check_param_dtype(gamma, x, "gdn_backward: gamma");
  check_same_device(grad, x, "gdn_backward: grad", "x");
  check_same_device(norm, x, "gdn_backward: norm", "x");
  check_same_device(gamma, x, "gdn_backward: gamma", "x");
  const auto acc = acc_type(x);
  VAEISO_CHECK(norm.scalar_type() == acc, "gdn_backward: norm: expected dtype ", acc, ", got ", norm.scalar_type());

  DeviceScope guard(x);
  const Variant v{inverse, simplified};
  const bool cl = use_channel_last(x);
  auto gx = output_mask[0] ? empty_in_layout(x, cl, x.scalar_type()) : alloc({0}, x.scalar_type(), x);
  // The parameter gradients have the parameters' dtype (that of gamma; beta shares it).
  const auto pdt = gamma.scalar_type();
  // On the CPU from the kept cache like gx (a C x C gamma gradient is above malloc's mmap
  // threshold from C = 182 on). An empty x has zero gradients; otherwise the kernels overwrite them.
  auto param_grad = [&](bool want, const std::vector<int64_t>& sizes) {
    if (!want) return alloc({0}, pdt, x);
    return x.is_cuda() ? alloc(sizes, pdt, x) : kept_empty(sizes, pdt, x);
  };
  auto gbeta = param_grad(output_mask[1], {C});
  auto ggamma = param_grad(output_mask[2], {C, C});
  if (x.numel() == 0) {
    for (auto* t : {&gx, &gbeta, &ggamma}) zero(*t);
    return {gx, gbeta, ggamma};
  }

  const auto xc = to_layout(x, cl), gc = to_layout(grad, cl), nc = to_layout(norm, cl);
  if (!x.is_cuda()) {
    Tensor gb, gg;                // in the accumulation dtype, converted to the parameters' below
    const bool own = pdt == acc;  // the kernels write the gradients in place
    if (output_mask[1]) gb = own ? gbeta : alloc({C}, acc, x);
    if (output_mask[2]) gg = own ? ggamma : alloc({C, C}, acc, x);
    Tensor gxo = output_mask[0] ? gx : Tensor();
    backward_cpu(gc, xc, nc, contig(to_dtype(gamma, acc)), gxo, gb, gg, cl, v);
    if (output_mask[1] && !own) copy_into(gbeta, gb);
    if (output_mask[2] && !own) copy_into(ggamma, gg);
    return {gx, gbeta, ggamma};
  }
#ifdef VAEISO_WITH_CUDA
  auto t = empty_in_layout(x, cl, acc);
  Tensor fx = output_mask[2] ? empty_in_layout(x, cl, acc) : Tensor();
  backward_t_cuda(gc, xc, nc, t, fx, v);

  if (output_mask[1]) {
    std::vector<int64_t> dims = cl ? std::vector<int64_t>{0} : std::vector<int64_t>{0, 2};
    const auto m = cl ? reshaped(channels_last_view(t), {-1, C}) : viewed(t, {x.size(0), C, -1});
    copy_into(gbeta, torch::stable::sum(m, dims));
  }
  if (output_mask[2]) {
    if (pdt == acc) {
      gamma_grad_cuda(t, fx, ggamma, cl);
    } else {
      auto gg = alloc({C, C}, acc, x);
      gamma_grad_cuda(t, fx, gg, cl);
      copy_into(ggamma, gg);
    }
  }
  if (output_mask[0]) {
    auto u = empty_in_layout(x, cl, acc);
    mix_channels_cuda(contig(to_dtype(gamma, acc)), true, t, u, cl);  // u = gamma^T t
    backward_x_cuda(gc, xc, nc, u, gx, v);
  }
#endif
  return {gx, gbeta, ggamma};
}

// The public single-output op: decomposes into gdn_forward (called through the dispatcher),
// whose autograd is registered in Python (vaeiso_ext/ops/_gdn.py), so gradients and
// torch.compile see one kernel.
Tensor gdn(Tensor x, Tensor beta, Tensor gamma, bool inverse, bool simplified) {
  // Checked here as well: under torch 2.10 an error raised inside torch_call_dispatcher reaches
  // the caller without its message ("API call failed at gdn.cpp"; seen by make compat).
  check_params(x, beta, gamma);
  std::array<StableIValue, 6> stack{torch::stable::detail::from(x),          torch::stable::detail::from(beta),
                                    torch::stable::detail::from(gamma),      torch::stable::detail::from(inverse),
                                    torch::stable::detail::from(simplified), torch::stable::detail::from(true)};
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("vaeiso::gdn_forward", "", stack.data(), TORCH_ABI_VERSION));
  // two outputs: out in stack[0], norm in stack[1] (released with its handle)
  Tensor norm = torch::stable::detail::to<Tensor>(stack[1]);
  return torch::stable::detail::to<Tensor>(stack[0]);
}

STABLE_TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("gdn_forward", TORCH_BOX(&gdn_forward));
  m.impl("gdn_backward", TORCH_BOX(&gdn_backward));
}

#ifdef VAEISO_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("gdn_forward", TORCH_BOX(&gdn_forward));
  m.impl("gdn_backward", TORCH_BOX(&gdn_backward));
}
#endif

STABLE_TORCH_LIBRARY_IMPL(vaeiso, CompositeImplicitAutograd, m) { m.impl("gdn", TORCH_BOX(&gdn)); }

}  // namespace vaeiso::gdn
