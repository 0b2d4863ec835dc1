// GDN / IGDN on any device: argument checks and layout choice; then the CPU kernels, fused around
// their GEMMs (gdn_cpu_impl.h), or on CUDA the channel-mixing GEMMs (cuBLAS through ATen) around
// the element-wise passes of gdn_cuda.cu.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common.h"
#include "cpu_workspace.h"
#include "gdn/gdn_kernels.h"
#include "gemm_policy.h"

namespace vaeiso::gdn {
namespace {

// Channel-last dense input (channels_last images, (N, C) matrices) is used as an (M, C) matrix
// with no copy; anything else is made contiguous channel-first (N, C, S). The fake impl in
// ops/_gdn.py mirrors this rule so output strides match.
bool use_channel_last(const at::Tensor& x) { return x.movedim(1, -1).is_contiguous(); }

// On the CPU from the kept cache (cpu_workspace.h), outputs included: no fresh multi-MB heap
// block per call, and so no page faults per call in a user's process.
at::Tensor empty_in_layout(const at::Tensor& like, bool cl, at::ScalarType dt) {
  const auto opts = like.options().dtype(dt);
  auto make = [&](at::IntArrayRef sizes) {
    return like.is_cuda() ? at::empty(sizes, opts) : kept_empty(sizes, opts);
  };
  if (cl) return make(like.movedim(1, -1).sizes()).movedim(-1, 1);
  return make(like.sizes());
}

at::Tensor to_layout(const at::Tensor& t, bool cl) {
  if (cl) return t.movedim(1, -1).contiguous().movedim(-1, 1);
  return t.contiguous();
}

at::ScalarType acc_type(const at::Tensor& x) { return vaeiso::acc_type(x.scalar_type()); }

// beta and gamma have x's dtype, or float32 with a half x (autocast keeps parameters in float32):
// the kernels compute in float32 then, and the parameter gradients come out in float32.
void check_param_dtype(const at::Tensor& p, const at::Tensor& x, const char* name) {
  const auto dt = p.scalar_type();
  TORCH_CHECK(dt == x.scalar_type() || (is_half(x.scalar_type()) && dt == at::kFloat), name,
              ": expected dtype ", x.scalar_type(), " (the dtype of x)",
              is_half(x.scalar_type()) ? " or float32" : "", ", got ", dt);
}

#ifdef VAEISO_WITH_CUDA  // the CUDA path's GEMMs over whole tensors
// Views of a dense tensor in the chosen layout as matrices.
at::Tensor as_rows(const at::Tensor& t) { return t.movedim(1, -1).reshape({-1, t.size(1)}); }
at::Tensor as_planes(const at::Tensor& t) { return t.view({t.size(0), t.size(1), -1}); }

// out = mix @ fx per position: (M, C) x mix^T channel-last, mix x (C, S) per sample otherwise.
void mix_channels(const at::Tensor& mix, const at::Tensor& fx, at::Tensor& out, bool cl) {
  if (cl) {
    auto o = as_rows(out);
    at::mm_out(o, as_rows(fx), mix.t());
    return;
  }
  auto o = as_planes(out);
  const auto f = as_planes(fx);
  at::bmm_out(o, mix.expand({f.size(0), mix.size(0), mix.size(1)}), f);
}

// dgamma[i, k] = sum over positions of t_i f(x_k)
at::Tensor gamma_grad(const at::Tensor& t, const at::Tensor& fx, bool cl) {
  if (cl) return at::mm(as_rows(t).t(), as_rows(fx));
  return at::bmm(as_planes(t), as_planes(fx).transpose(1, 2)).sum(0);
}

at::Tensor beta_grad(const at::Tensor& t, bool cl) {
  return cl ? as_rows(t).sum(0) : as_planes(t).sum(at::IntArrayRef{0, 2});
}
#endif

void check_params(const at::Tensor& x, const at::Tensor& beta, const at::Tensor& gamma) {
  TORCH_CHECK(x.dim() >= 2, "gdn: x: expected a tensor of shape (N, C, *) with at least 2 dims, got ",
              x.dim(), " dims");
  check_float_dtype(x, "gdn: x");
  const int64_t C = x.size(1);
  TORCH_CHECK(beta.dim() == 1 && beta.size(0) == C, "gdn: beta: expected shape (", C,
              ",) for x with ", C, " channels, got ", beta.sizes());
  TORCH_CHECK(gamma.dim() == 2 && gamma.size(0) == C && gamma.size(1) == C,
              "gdn: gamma: expected shape (", C, ", ", C, ") for x with ", C, " channels, got ",
              gamma.sizes());
  check_param_dtype(beta, x, "gdn: beta");
  check_param_dtype(gamma, x, "gdn: gamma");
  check_same_dtype(gamma, beta, "gdn: gamma", "beta");
  check_same_device(beta, x, "gdn: beta", "x");
  check_same_device(gamma, x, "gdn: gamma", "x");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gdn_forward(const at::Tensor& x, const at::Tensor& beta,
                                               const at::Tensor& gamma, bool inverse,
                                               bool simplified, bool need_norm) {
  check_params(x, beta, gamma);
  c10::DeviceGuard guard(x.device());
  const Variant v{inverse, simplified};
  const bool cl = use_channel_last(x);
  const auto acc = acc_type(x);
  auto out = empty_in_layout(x, cl, x.scalar_type());
  // Without need_norm (no gradient will be asked for) norm is returned empty, and the CPU
  // kernel never writes it: a tensor of x's size less to store.
  const auto no_norm = at::empty({0}, x.options().dtype(acc));
  auto norm = need_norm ? empty_in_layout(x, cl, acc) : no_norm;
  if (x.numel() == 0) return {out, norm};

  const auto xc = to_layout(x, cl);
  if (!x.is_cuda()) {
    at::Tensor nrm = need_norm ? norm : at::Tensor();
    forward_cpu(xc, beta.to(acc).contiguous(), gamma.to(acc).contiguous(), out, nrm, cl, v);
    return {out, norm};
  }
#ifdef VAEISO_WITH_CUDA
  if (!need_norm) norm = empty_in_layout(x, cl, acc);  // the CUDA kernels need it as a buffer
  auto fx = empty_in_layout(x, cl, acc);
  fx_cuda(xc, fx, v);
  policy_gemm("gdn", fx, [&] { mix_channels(gamma.to(acc), fx, norm, cl); });
  const auto beta_acc = beta.to(acc).contiguous();
  forward_epilogue_cuda(xc, norm, beta_acc, out, x.size(1),
                        cl ? 1 : xc.numel() / (x.size(0) * x.size(1)), v);
#endif
  return {out, need_norm ? norm : no_norm};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gdn_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& norm, const at::Tensor& gamma,
    bool inverse, bool simplified, std::array<bool, 3> output_mask) {
  TORCH_CHECK(x.dim() >= 2, "gdn_backward: x: expected at least 2 dims, got ", x.dim());
  check_float_dtype(x, "gdn_backward: x");
  TORCH_CHECK(grad.sizes() == x.sizes(), "gdn_backward: grad: expected shape ", x.sizes(),
              " (the shape of x), got ", grad.sizes());
  TORCH_CHECK(norm.sizes() == x.sizes(), "gdn_backward: norm: expected shape ", x.sizes(),
              " (the shape of x), got ", norm.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK(gamma.dim() == 2 && gamma.size(0) == C && gamma.size(1) == C,
              "gdn_backward: gamma: expected shape (", C, ", ", C, "), got ", gamma.sizes());
  check_same_dtype(grad, x, "gdn_backward: grad", "x");
  check_param_dtype(gamma, x, "gdn_backward: gamma");
  check_same_device(grad, x, "gdn_backward: grad", "x");
  check_same_device(norm, x, "gdn_backward: norm", "x");
  check_same_device(gamma, x, "gdn_backward: gamma", "x");
  const auto acc = acc_type(x);
  TORCH_CHECK(norm.scalar_type() == acc, "gdn_backward: norm: expected dtype ", acc, ", got ",
              norm.scalar_type());

  c10::DeviceGuard guard(x.device());
  const Variant v{inverse, simplified};
  const bool cl = use_channel_last(x);
  auto gx = output_mask[0] ? empty_in_layout(x, cl, x.scalar_type()) : at::empty({0}, x.options());
  // The parameter gradients have the parameters' dtype (that of gamma; beta shares it).
  const auto popts = gamma.options();
  // On the CPU from the kept cache like gx (a C x C gamma gradient is above malloc's mmap
  // threshold from C = 182 on). An empty x has zero gradients; otherwise the kernels overwrite them.
  auto param_grad = [&](bool want, at::IntArrayRef sizes) {
    if (!want) return at::empty({0}, popts);
    return x.is_cuda() ? at::empty(sizes, popts) : kept_empty(sizes, popts);
  };
  auto gbeta = param_grad(output_mask[1], {C});
  auto ggamma = param_grad(output_mask[2], {C, C});
  if (x.numel() == 0) {
    for (auto* t : {&gx, &gbeta, &ggamma}) t->zero_();
    return {gx, gbeta, ggamma};
  }

  const auto xc = to_layout(x, cl), gc = to_layout(grad, cl), nc = to_layout(norm, cl);
  if (!x.is_cuda()) {
    at::Tensor gb, gg;  // in the accumulation dtype, converted to the parameters' below
    if (output_mask[1]) gb = gbeta.scalar_type() == acc ? gbeta : at::empty({C}, popts.dtype(acc));
    if (output_mask[2]) gg = ggamma.scalar_type() == acc ? ggamma : at::empty({C, C}, popts.dtype(acc));
    at::Tensor gxo = output_mask[0] ? gx : at::Tensor();
    backward_cpu(gc, xc, nc, gamma.to(acc).contiguous(), gxo, gb, gg, cl, v);
    if (output_mask[1] && !gb.is_same(gbeta)) gbeta.copy_(gb);
    if (output_mask[2] && !gg.is_same(ggamma)) ggamma.copy_(gg);
    return {gx, gbeta, ggamma};
  }
#ifdef VAEISO_WITH_CUDA
  auto t = empty_in_layout(x, cl, acc);
  at::Tensor fx = output_mask[2] ? empty_in_layout(x, cl, acc) : at::Tensor();
  backward_t_cuda(gc, xc, nc, t, fx, v);

  if (output_mask[1]) gbeta.copy_(beta_grad(t, cl));
  if (output_mask[2]) policy_gemm("gdn_backward", t, [&] { ggamma.copy_(gamma_grad(t, fx, cl)); });
  if (output_mask[0]) {
    auto u = empty_in_layout(x, cl, acc);
    policy_gemm("gdn_backward", t, [&] { mix_channels(gamma.to(acc).t(), t, u, cl); });  // u = gamma^T t
    backward_x_cuda(gc, xc, nc, u, gx, v);
  }
#endif
  return {gx, gbeta, ggamma};
}

// The public single-output op: decomposes into gdn_forward, whose autograd is registered in
// Python (vaeiso_ext/ops/_gdn.py), so gradients and torch.compile see one kernel.
at::Tensor gdn(const at::Tensor& x, const at::Tensor& beta, const at::Tensor& gamma, bool inverse,
               bool simplified) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("vaeiso::gdn_forward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool, bool)>();
  return std::get<0>(op.call(x, beta, gamma, inverse, simplified, true));
}

TORCH_LIBRARY_IMPL(vaeiso, CPU, m) {
  m.impl("gdn_forward", &gdn_forward);
  m.impl("gdn_backward", &gdn_backward);
}

#ifdef VAEISO_WITH_CUDA
TORCH_LIBRARY_IMPL(vaeiso, CUDA, m) {
  m.impl("gdn_forward", &gdn_forward);
  m.impl("gdn_backward", &gdn_backward);
}
#endif

TORCH_LIBRARY_IMPL(vaeiso, CompositeImplicitAutograd, m) { m.impl("gdn", &gdn); }

}  // namespace vaeiso::gdn
