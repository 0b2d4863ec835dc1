// The scratch memory of the SSIM CPU passes: the row layouts the filters read aligned, one
// layout of a task's buffers for every pass (each asks for the parts it uses), and the one place
// where the buffers are acquired (run_tasks). Part of the per-ISA build of ssim_cpu_impl.h.
#pragma once
#include "cpu_parallel.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_workspace.h"
#include "ssim/ssim_cpu_fir.h"
#include "ssim/ssim_entry.h"

namespace vaeiso::ssim::VAEISO_CPU_ISA {

// Rows of one buffer: values at `lead` inside zero margins, `stride` apart (64-byte multiples);
// `vs`: the stride of the strip's filtered rows of Wo values.
struct Layout {
  int64_t lead, stride, vs;
};

template <typename T>
constexpr int64_t kAlign = 64 / sizeof(T);

inline int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// The strip pipeline's staged and vertically filtered rows: W values at `lead` (64-byte aligned,
// so the vertical FIR's loads and stores are aligned), zero margins of at least pad on each side.
template <typename T>
Layout strip_layout(const Geometry& g) {
  constexpr int64_t A = kAlign<T>;
  const int64_t lead = round_up(g.pad, A);
  return Layout{lead, round_up(lead + g.W + g.pad, A), round_up(g.Wo, A)};
}

// The adjoint's vertical results: Wo values at `lead` = ws - 1 - pad inside zero margins. Image
// column c takes row columns c .. c + ws - 1, so the horizontal pass reads aligned rows; one
// vector of slack past them (fir_h).
template <typename T>
Layout adjoint_layout(const Geometry& g) {
  constexpr int64_t A = kAlign<T>;
  return Layout{g.ws - 1 - g.pad, round_up(g.W + g.ws - 1, A) + A, 0};
}

// What a task of a pass needs besides its inputs and outputs.
struct ScratchNeeds {
  int64_t strip_rows = 0;    // output rows per strip of the strip pipeline (0: no strip)
  bool value_row = false;    // one row of Wo per-position values
  bool base_stats = false;   // ssim_pairs: 4 x strip_rows x Wo statistics of the base image
  int64_t adjoint_rows = 0;  // rows of the adjoint's vertical results (0: no adjoint)
  bool grad_rows = false;    // backward: 4 x kRowsR rows of W adjoint results, a row of x and of y
};

// A task's buffers. The strip pipeline's s (staged x then y, 2 x srows rows) and vb (up to 5
// moments x 4 rows), the adjoint's vpad: 64-byte aligned rows whose margins must come zeroed
// (only the interiors are written); v: 5 filtered rows vs apart.
template <typename T>
struct TaskBuffers {
  Layout lay{}, adj{};
  int64_t srows = 0;
  T *s = nullptr, *vb = nullptr, *v = nullptr, *vpad = nullptr;
  T *lrow = nullptr, *bst = nullptr, *G = nullptr, *xr = nullptr, *yr = nullptr;
};

// The one size arithmetic: offsets (in T) of each part from a 64-byte aligned start, the aligned
// rows first; `size` includes the alignment slack and a vector of read slack past the end (fir_h
// reads up to one vector past a row's last window).
template <typename T>
struct ScratchPlan {
  TaskBuffers<T> parts;  // the layouts; carve sets the pointers
  int64_t s = -1, vb = -1, v = -1, vpad = -1, lrow = -1, bst = -1, G = -1, xr = -1, yr = -1, size = 0;

  ScratchPlan(const Geometry& g, const ScratchNeeds& n) {
    int64_t at = 0;
    auto take = [&](int64_t& off, int64_t count) {
      off = at;
      at += count;
    };
    parts.lay = strip_layout<T>(g);
    parts.adj = adjoint_layout<T>(g);
    if (n.strip_rows > 0) {
      parts.srows = n.strip_rows + g.ws - 1;
      take(s, 2 * parts.srows * parts.lay.stride);
      take(vb, 5 * 4 * parts.lay.stride);
      take(v, 5 * parts.lay.vs);
    }
    if (n.adjoint_rows > 0) take(vpad, n.adjoint_rows * parts.adj.stride);
    if (n.value_row) take(lrow, g.Wo);
    if (n.base_stats) take(bst, 4 * n.strip_rows * g.Wo);
    if (n.grad_rows) {
      take(G, 4 * kRowsR * g.W);
      take(xr, g.W);
      take(yr, g.W);
    }
    size = at + 2 * kAlign<T> + Vec<T>::L;
  }

  // The parts in buf (size elements).
  TaskBuffers<T> carve(T* buf) const {
    const auto u = reinterpret_cast<uintptr_t>(buf);
    T* base = reinterpret_cast<T*>((u + 63) / 64 * 64);
    auto at = [&](int64_t off) { return off < 0 ? nullptr : base + off; };
    TaskBuffers<T> p = parts;
    p.s = at(s);
    p.vb = at(vb);
    p.v = at(v);
    p.vpad = at(vpad);
    p.lrow = at(lrow);
    p.bst = at(bst);
    p.G = at(G);
    p.xr = at(xr);
    p.yr = at(yr);
    return p;
  }
};

// body(t0, t1, scratch) over tasks [0, ntasks) with parallel_for (cpu_parallel.h); each chunk of tasks gets
// its own zeroed scratch, per-thread memory kept between calls. The one place the SSIM CPU
// passes acquire scratch memory.
template <typename T, typename Body>
void run_tasks(int64_t ntasks, const Geometry& g, const ScratchNeeds& needs, Body&& body) {
  const ScratchPlan<T> plan(g, needs);
  ::vaeiso::parallel_for(0, ntasks, 1, [&](int64_t b, int64_t e) {
    ::vaeiso::Scratch<T> buf(plan.size);  // zeroed, kept between calls (cpu_workspace.h)
    body(b, e, plan.carve(buf.data()));
  });
}

}  // namespace vaeiso::ssim::VAEISO_CPU_ISA
