// CPU element-wise passes of GDN: at::parallel_for over contiguous runs the compiler vectorises.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "gdn/gdn_kernels.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn {
namespace {
constexpr int64_t kGrain = 4096;  // elements per task; below this threading costs more than it saves
}

void fx_cpu(const at::Tensor& x, at::Tensor& fx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_fx_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* fp = fx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fp[i] = f(xp[i], v.simplified);
    });
  });
}

void forward_epilogue_cpu(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                          at::Tensor& out, int64_t C, int64_t inner, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_forward_epilogue_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = beta.const_data_ptr<scalar_t>();
    scalar_t* np = norm.mutable_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    // A row is a run of one channel (channel-first) or all channels of one position
    // (channel-last), so the inner loop is contiguous either way.
    const bool channel_last = inner == 1;
    const int64_t row_len = channel_last ? C : inner;
    const int64_t rows = row_len == 0 ? 0 : x.numel() / row_len;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(row_len, 1));
    at::parallel_for(0, rows, grain, [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r) {
        const int64_t base = r * row_len;
        if (channel_last) {
          for (int64_t c = 0; c < C; ++c) {
            const scalar_t n = np[base + c] + bp[c];
            np[base + c] = n;
            op[base + c] = xp[base + c] * scale(n, v.inverse, v.simplified);
          }
        } else {
          const scalar_t b = bp[r % C];
          for (int64_t s = 0; s < row_len; ++s) {
            const scalar_t n = np[base + s] + b;
            np[base + s] = n;
            op[base + s] = xp[base + s] * scale(n, v.inverse, v.simplified);
          }
        }
      }
    });
  });
}

void backward_t_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    at::Tensor& t, at::Tensor& fx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_backward_t_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = norm.const_data_ptr<scalar_t>();
    scalar_t* tp = t.mutable_data_ptr<scalar_t>();
    scalar_t* fp = fx.defined() ? fx.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) tp[i] = grad_norm(gp[i], xp[i], np[i], v.inverse, v.simplified);
      if (fp)
        for (int64_t i = b; i < e; ++i) fp[i] = f(xp[i], v.simplified);
    });
  });
}

void backward_x_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    const at::Tensor& u, at::Tensor& gx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_backward_x_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* np = norm.const_data_ptr<scalar_t>();
    const scalar_t* up = u.const_data_ptr<scalar_t>();
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        op[i] = grad_x(gp[i], xp[i], np[i], up[i], v.inverse, v.simplified);
    });
  });
}

}  // namespace vaeiso::gdn
