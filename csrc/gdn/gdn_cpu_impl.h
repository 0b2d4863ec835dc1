// CPU element-wise passes of GDN: at::parallel_for over contiguous runs the compiler vectorises.
// Compiled once per instruction set (gdn_cpu_default.cpp, gdn_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA; gdn_cpu.cpp picks one at run time.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including gdn_cpu_impl.h"
#endif
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "gdn/gdn_kernels.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn::VAEISO_CPU_ISA {
namespace {

constexpr int64_t kGrain = 16384;  // elements per task; below this threading costs more than it saves

template <bool I, bool S>
struct StaticVariant {
  static constexpr bool inverse = I, simplified = S;
};

// Calls fn(StaticVariant<...>{}) so the variant is a compile-time constant: the inner loops
// then carry no branches and vectorise.
template <typename Fn>
void with_variant(Variant v, Fn&& fn) {
  if (v.inverse) {
    if (v.simplified) fn(StaticVariant<true, true>{});
    else fn(StaticVariant<true, false>{});
  } else {
    if (v.simplified) fn(StaticVariant<false, true>{});
    else fn(StaticVariant<false, false>{});
  }
}

}  // namespace

void fx(const at::Tensor& x, at::Tensor& fx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_fx_cpu", [&] {
    with_variant(v, [&](auto sv) {
      using SV = decltype(sv);
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* fp = fx.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) fp[i] = f(xp[i], SV::simplified);
      });
    });
  });
}

void forward_epilogue(const at::Tensor& x, at::Tensor& norm, const at::Tensor& beta,
                          at::Tensor& out, int64_t C, int64_t inner, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_forward_epilogue_cpu", [&] {
    with_variant(v, [&](auto sv) {
      using SV = decltype(sv);
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
          const scalar_t* xr = xp + r * row_len;
          scalar_t* nr = np + r * row_len;
          scalar_t* orow = op + r * row_len;
          if (channel_last) {
            for (int64_t c = 0; c < C; ++c) {
              const scalar_t n = nr[c] + bp[c];
              nr[c] = n;
              orow[c] = xr[c] * scale(n, SV::inverse, SV::simplified);
            }
          } else {
            const scalar_t b = bp[r % C];
            for (int64_t s = 0; s < row_len; ++s) {
              const scalar_t n = nr[s] + b;
              nr[s] = n;
              orow[s] = xr[s] * scale(n, SV::inverse, SV::simplified);
            }
          }
        }
      });
    });
  });
}

void backward_t(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    at::Tensor& t, at::Tensor& fx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_backward_t_cpu", [&] {
    with_variant(v, [&](auto sv) {
      using SV = decltype(sv);
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* np = norm.const_data_ptr<scalar_t>();
      scalar_t* tp = t.mutable_data_ptr<scalar_t>();
      scalar_t* fp = fx.defined() ? fx.mutable_data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          tp[i] = grad_norm(gp[i], xp[i], np[i], SV::inverse, SV::simplified);
        if (fp)
          for (int64_t i = b; i < e; ++i) fp[i] = f(xp[i], SV::simplified);
      });
    });
  });
}

void backward_x(const at::Tensor& g, const at::Tensor& x, const at::Tensor& norm,
                    const at::Tensor& u, at::Tensor& gx, Variant v) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gdn_backward_x_cpu", [&] {
    with_variant(v, [&](auto sv) {
      using SV = decltype(sv);
      const scalar_t* gp = g.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      const scalar_t* np = norm.const_data_ptr<scalar_t>();
      const scalar_t* up = u.const_data_ptr<scalar_t>();
      scalar_t* op = gx.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
          op[i] = grad_x(gp[i], xp[i], np[i], up[i], SV::inverse, SV::simplified);
      });
    });
  });
}

}  // namespace vaeiso::gdn::VAEISO_CPU_ISA
