// CPU element-wise passes of GDN: at::parallel_for over contiguous runs the compiler vectorises.
// Compiled once per instruction set (gdn_cpu_default.cpp, gdn_cpu_avx2.cpp) into the namespace
// VAEISO_CPU_ISA (see host_device.h); gdn_cpu.cpp picks one at run time and dispatches on dtype.
// Half types are loaded into float, computed there and rounded once on store.
#ifndef VAEISO_CPU_ISA
#error "define VAEISO_CPU_ISA before including gdn_cpu_impl.h"
#endif
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu_half.h"
#include "gdn/gdn_cpu_passes.h"
#include "gdn/gdn_math.h"

namespace vaeiso::gdn {
VAEISO_GDN_DECLARE_PASSES(VAEISO_CPU_ISA)
}

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

template <typename S>
void fx(const S* xp, acc_t<S>* fp, int64_t n, Variant v) {
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fp[i] = f(load(xp[i]), SV::simplified);
    });
  });
}

template <typename S>
void forward_epilogue(const S* xp, acc_t<S>* np, const acc_t<S>* bp, S* op, int64_t n, int64_t C,
                      int64_t inner, Variant v) {
  using A = acc_t<S>;
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    // A row is a run of one channel (channel-first) or all channels of one position
    // (channel-last), so the inner loop is contiguous either way.
    const bool channel_last = inner == 1;
    const int64_t row_len = channel_last ? C : inner;
    const int64_t rows = row_len == 0 ? 0 : n / row_len;
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(row_len, 1));
    at::parallel_for(0, rows, grain, [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r) {
        const S* xr = xp + r * row_len;
        A* nr = np + r * row_len;
        S* orow = op + r * row_len;
        if (channel_last) {
          for (int64_t c = 0; c < C; ++c) {
            const A nv = nr[c] + bp[c];
            nr[c] = nv;
            orow[c] = store<S>(load(xr[c]) * scale(nv, SV::inverse, SV::simplified));
          }
        } else {
          const A b = bp[r % C];
          for (int64_t s = 0; s < row_len; ++s) {
            const A nv = nr[s] + b;
            nr[s] = nv;
            orow[s] = store<S>(load(xr[s]) * scale(nv, SV::inverse, SV::simplified));
          }
        }
      }
    });
  });
}

template <typename S>
void backward_t(const S* gp, const S* xp, const acc_t<S>* np, acc_t<S>* tp, acc_t<S>* fp, int64_t n,
                Variant v) {
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        tp[i] = grad_norm(load(gp[i]), load(xp[i]), np[i], SV::inverse, SV::simplified);
      if (fp)
        for (int64_t i = b; i < e; ++i) fp[i] = f(load(xp[i]), SV::simplified);
    });
  });
}

template <typename S>
void backward_x(const S* gp, const S* xp, const acc_t<S>* np, const acc_t<S>* up, S* op, int64_t n,
                Variant v) {
  with_variant(v, [&](auto sv) {
    using SV = decltype(sv);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        op[i] = store<S>(grad_x(load(gp[i]), load(xp[i]), np[i], up[i], SV::inverse, SV::simplified));
    });
  });
}

#define VAEISO_GDN_INSTANTIATE(S)                                                              \
  template void fx<S>(const S*, acc_t<S>*, int64_t, Variant);                                  \
  template void forward_epilogue<S>(const S*, acc_t<S>*, const acc_t<S>*, S*, int64_t, int64_t, \
                                    int64_t, Variant);                                         \
  template void backward_t<S>(const S*, const S*, const acc_t<S>*, acc_t<S>*, acc_t<S>*,       \
                              int64_t, Variant);                                               \
  template void backward_x<S>(const S*, const S*, const acc_t<S>*, const acc_t<S>*, S*, int64_t, \
                              Variant);
VAEISO_GDN_INSTANTIATE(float)
VAEISO_GDN_INSTANTIATE(double)
VAEISO_GDN_INSTANTIATE(f16)
VAEISO_GDN_INSTANTIATE(bf16)
#undef VAEISO_GDN_INSTANTIATE

}  // namespace vaeiso::gdn::VAEISO_CPU_ISA
