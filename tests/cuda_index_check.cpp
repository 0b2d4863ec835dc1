// CPU check of the CUDA kernels' own index arithmetic (csrc/ssim/ssim_cuda_index.h,
// csrc/distance/distance_cuda_index.h), built and run by tests/test_cuda_index.py with the
// system C++ compiler (no torch, no CUDA). Each
// check restates what the kernel needs from first principles; the program prints the first
// failures of each and exits 1 when any failed, else prints "ok" and the number of cases.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "distance/distance_cuda_index.h"
#include "ssim/ssim_cuda_index.h"
#include "ssim/ssim_cuda_plan.h"

namespace ci = vaeiso::ssim::cuda_index;
namespace cp = vaeiso::ssim::cuda_plan;
namespace di = vaeiso::distance::cuda_index;

namespace {

constexpr int64_t kMaxWindow = 255;  // kMaxCudaWindow (ssim_entry.h, which needs torch)
int64_t failures = 0, cases = 0;
std::map<std::string, int64_t> failed;  // failures per check

// Prints the first three failures of each check.
void fail(const char* what, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
  ++failures;
  if (++failed[what] <= 3) {
    std::printf("FAIL %s: %lld %lld %lld %lld %lld\n", what, (long long)a, (long long)b, (long long)c,
                (long long)d, (long long)e);
  }
}

// The first staged slot no tap reads, or -1.
int64_t first_unread(const std::vector<int>& used) {
  for (size_t i = 0; i < used.size(); ++i) {
    if (used[i] == 0) return int64_t(i);
  }
  return -1;
}

// The kernel's zero padding for "valid" (false) and "same" (true), and its outputs (ssim_entry.h).
int64_t pad_of(int64_t ws, bool same) { return same ? ws / 2 : 0; }
int64_t outputs(int64_t n, int64_t ws, bool same) { return n + 2 * pad_of(ws, same) - ws + 1; }

// Along one axis of n pixels, tiles of `len` outputs: every pixel in exactly one tile's L1 span,
// no span outside [0, n).
void check_axis(int64_t n, int64_t ws, bool same, int64_t len, std::vector<int>& count) {
  const int64_t no = outputs(n, ws, same), pad = pad_of(ws, same);
  if (no < 1) return;  // "valid" with the window larger than the image: rejected by ssim
  ++cases;
  const int64_t tiles = ci::tiles_for(no, len);
  if (tiles < 1 || (tiles - 1) * len >= no || tiles * len < no) fail("tiles_for", n, ws, same, len, tiles);
  count.assign(n, 0);
  for (int64_t t = 0; t < tiles; ++t) {
    const ci::Span s = ci::l1_span(t, tiles, len, n, pad);
    if (s.lo < 0 || s.hi > n || s.lo > s.hi) {
      fail("l1_span outside [0, n)", n, ws, same, len, t);
      continue;
    }
    for (int64_t i = s.lo; i < s.hi; ++i) ++count[i];
  }
  for (int64_t i = 0; i < n; ++i) {
    if (count[i] != 1) {
      fail("pixel not counted exactly once (n ws same len pixel)", n, ws, same, len, i);
      break;
    }
  }
}

// The tiles of the forward grid cover [0, H) x [0, W) exactly once (kTH x kTW tiles).
void check_plane(int64_t H, int64_t W, int64_t ws, bool same) {
  const int64_t ho = outputs(H, ws, same), wo = outputs(W, ws, same), pad = pad_of(ws, same);
  if (ho < 1 || wo < 1) return;
  ++cases;
  const int64_t ty = ci::tiles_for(ho, cp::kTH), tx = ci::tiles_for(wo, cp::kTW);
  std::vector<int> count(H * W, 0);
  for (int64_t by = 0; by < ty; ++by) {
    const ci::Span rows = ci::l1_span(by, ty, cp::kTH, H, pad);
    for (int64_t bx = 0; bx < tx; ++bx) {
      const ci::Span cols = ci::l1_span(bx, tx, cp::kTW, W, pad);
      for (int64_t r = rows.lo; r < rows.hi; ++r) {
        for (int64_t c = cols.lo; c < cols.hi; ++c) {
          if (r < 0 || r >= H || c < 0 || c >= W) {
            fail("tile reads outside the plane (H W ws same row)", H, W, ws, same, r);
            return;
          }
          ++count[r * W + c];
        }
      }
    }
  }
  for (int64_t i = 0; i < H * W; ++i) {
    if (count[i] != 1) {
      fail("plane pixel not counted exactly once (H W ws same pixel)", H, W, ws, same, i);
      return;
    }
  }
}

// The backward's staged adjoint columns: for every window, chunk of taps, tile column tx and
// tap t, the slot lies inside the staged columns [0, kTW + taps - 1) and holds map column
// c0 + tx + pad - t; and the staged columns are exactly the ones some (tx, t) reads.
void check_adjoint(int64_t ws, int64_t chunk, int64_t c0, int64_t pad) {
  ++cases;
  for (int64_t t0 = 0; t0 < ws; t0 += chunk) {
    const int64_t taps = chunk < ws - t0 ? chunk : ws - t0, cols = cp::kTW + taps - 1;
    std::vector<int> used(cols, 0);
    for (int tx = 0; tx < cp::kTW; ++tx) {
      for (int64_t t = t0; t < t0 + taps; ++t) {
        const int lc = ci::adjoint_slot(tx, int(t0), int(taps), int(t));
        if (lc < 0 || lc >= cols) {
          fail("adjoint slot outside the staged columns (ws chunk t0 tx t)", ws, chunk, t0, tx, t);
          return;
        }
        ++used[lc];
        const int64_t pc = ci::adjoint_staged_col(c0, pad, ws, t0, taps, lc);
        if (pc != c0 + tx + pad - t) {
          fail("adjoint slot holds the wrong map column (ws chunk t0 tx t)", ws, chunk, t0, tx, t);
          return;
        }
      }
    }
    if (const int64_t lc = first_unread(used); lc >= 0) {
      fail("staged adjoint column never read (ws chunk t0 lc c0)", ws, chunk, t0, lc, c0);
      return;
    }
  }
}

// The forward's staged rows: for every window and chunk of taps, output row o0 + i (i < kTH)
// reads tap t0 + t from a staged row inside the chunk's kTH + taps - 1 rows, holding image row
// o0 + i + t0 + t - pad; and every staged row is read.
void check_forward_staging(int64_t ws, int64_t chunk, int64_t o0, int64_t pad) {
  ++cases;
  for (int t0 = 0; t0 < ws; t0 += int(chunk)) {
    const int taps = int(chunk < ws - t0 ? chunk : ws - t0), rows = cp::kTH + taps - 1;
    std::vector<int> used(rows, 0);
    for (int i = 0; i < cp::kTH; ++i) {
      for (int t = 0; t < taps; ++t) {
        const int r = ci::forward_slot(i, t);
        if (r < 0 || r >= rows) {
          fail("forward slot outside the staged rows (ws chunk t0 i t)", ws, chunk, t0, i, t);
          return;
        }
        ++used[r];
        if (ci::forward_staged_row(o0, t0, r, pad) != o0 + i + t0 + t - pad) {
          fail("forward slot holds the wrong image row (ws chunk t0 i t)", ws, chunk, t0, i, t);
          return;
        }
      }
    }
    if (const int64_t r = first_unread(used); r >= 0) {
      fail("staged forward row never read (ws chunk t0 r o0)", ws, chunk, t0, r, o0);
      return;
    }
  }
}

// pair_distances' partials pass over a sample of L elements, runs of V elements per lane: every
// element in exactly one (block, warp task, lane, run, q), each warp task writing its own
// partial in [0, segments(L)); full segments (the vector path) read whole runs starting at a
// multiple of V.
void check_distance(int64_t L, int V, std::vector<int>& count, std::vector<int>& seg_used) {
  ++cases;
  const int64_t blocks = di::tiles_for(L), S = di::segments(L);
  count.assign(L, 0);
  seg_used.assign(S, 0);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t tile_len = di::tile_length(L, b);
    if (tile_len < 1 || tile_len > di::kTile) {
      fail("distance tile length (L V block)", L, V, b, tile_len, 0);
      return;
    }
    const int64_t segs = di::segments(tile_len);
    for (int seg = 0; seg < segs; ++seg) {
      const int64_t p = di::segment_of(b, seg);
      if (p < 0 || p >= S || seg_used[p]++ != 0) {
        fail("distance partial index out of range or shared (L V block seg)", L, V, b, seg, p);
        return;
      }
      const int64_t len = tile_len - int64_t(seg) * di::kSegment;
      for (int lane = 0; lane < di::kWarp; ++lane) {
        for (int r = 0; r < di::kPerLane / V; ++r) {
          if (len >= di::kSegment && di::lane_element(r, lane, 0, V) % V != 0) {
            fail("distance run not vector-aligned (L V r lane)", L, V, r, lane, 0);
          }
          for (int q = 0; q < V; ++q) {
            const int e = di::lane_element(r, lane, q, V);
            if (e < 0 || e >= di::kSegment) {
              fail("distance element outside its segment (L V r lane q)", L, V, r, lane, q);
              return;
            }
            if (q > 0 && e != di::lane_element(r, lane, 0, V) + q) {
              fail("distance run not contiguous (L V r lane q)", L, V, r, lane, q);
            }
            const int64_t i = b * di::kTile + int64_t(seg) * di::kSegment + e;
            if (e >= len) continue;  // past the sample's end: the kernel skips it
            if (i >= L) {
              fail("distance element beyond the sample (L V block seg e)", L, V, b, seg, e);
              return;
            }
            ++count[i];
          }
        }
      }
    }
  }
  for (int64_t i = 0; i < L; ++i) {
    if (count[i] != 1) {
      fail("distance element not summed exactly once (L V element)", L, V, i, count[i], 0);
      return;
    }
  }
  for (int64_t p = 0; p < S; ++p) {
    if (seg_used[p] != 1) {
      fail("distance partial never written (L V partial)", L, V, p, 0, 0);
      return;
    }
  }
}

}  // namespace

int main() {
  std::vector<int> count;
  for (int same = 0; same < 2; ++same) {
    for (int64_t ws = 1; ws <= kMaxWindow; ++ws) {
      // every image size from 1 to well past the largest padding, the kernel's tile lengths and
      // a few others (1, odd, small)
      for (int64_t n = 1; n <= 2 * kMaxWindow + 3 * cp::kTW; ++n) {
        for (int64_t len : {int64_t(cp::kTH), int64_t(cp::kTW), int64_t(1), int64_t(7)}) {
          check_axis(n, ws, same != 0, len, count);
        }
      }
    }
    for (int64_t ws : {1, 2, 3, 11, 16, 17, 33, 34, 35, 36, 66, 67, 68, 127, 254, 255}) {
      for (int64_t H = 1; H <= 300; H += (H < 80 ? 1 : 23)) {
        for (int64_t W : {int64_t(1), int64_t(5), int64_t(32), int64_t(33), int64_t(64), int64_t(97), ws,
                          ws + 1, 2 * ws + 5}) {
          check_plane(H, W, ws, same != 0);
        }
      }
    }
  }
  for (int64_t ws = 1; ws <= kMaxWindow; ++ws) {
    for (int64_t chunk = 1; chunk <= ws; ++chunk) {
      check_adjoint(ws, chunk, /*c0=*/cp::kTW * 3, /*pad=*/ws / 2);
      check_forward_staging(ws, chunk, /*o0=*/cp::kTH * 2, /*pad=*/ws / 2);
    }
  }
  std::vector<int> seg_used;
  for (int V : {1, 2, 4, 8}) {
    for (int64_t L = 1; L <= 3 * di::kTile + di::kSegment + 7; L += (L < 2 * di::kSegment + 3 ? 1 : 13)) {
      check_distance(L, V, count, seg_used);
    }
    check_distance(int64_t(di::kTile) * 5, V, count, seg_used);
  }
  if (failures > 0) {
    for (const auto& [what, n] : failed) std::printf("%lld x %s\n", (long long)n, what.c_str());
    std::printf("%lld failures in %lld cases\n", (long long)failures, (long long)cases);
    return 1;
  }
  std::printf("ok %lld cases\n", (long long)cases);
  return 0;
}
