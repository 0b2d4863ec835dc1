// The per-thread scratch buffers of cpu_workspace.h.
#include "cpu_workspace.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

namespace vaeiso {
namespace {

constexpr size_t kAlign = 64;
constexpr int kSlots = 2;

size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

void* alloc_aligned(size_t bytes) {
  void* p = std::aligned_alloc(kAlign, round_up(bytes > 0 ? bytes : 1));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

struct Slot {
  void* p = nullptr;
  size_t cap = 0;
  bool held = false;
};

struct ThreadSlots {
  Slot slot[kSlots];
  ~ThreadSlots() {
    for (auto& s : slot) std::free(s.p);
  }
};

ThreadSlots& slots() {
  thread_local ThreadSlots t;
  return t;
}

}  // namespace

Workspace::Workspace(size_t bytes, WorkspaceSlot which, bool zero) {
  const int i = static_cast<int>(which);
  Slot& s = slots().slot[i];
  if (s.held) {
    owned_ = alloc_aligned(bytes);
    p_ = owned_;
  } else {
    if (s.cap < bytes) {
      // Grow by at least a quarter: a run of slowly growing requests reallocates a few times only.
      const size_t cap = round_up(bytes > s.cap + s.cap / 4 ? bytes : s.cap + s.cap / 4);
      void* p = alloc_aligned(cap);
      std::free(s.p);
      s.p = p;
      s.cap = cap;
    }
    s.held = true;
    slot_ = i;
    p_ = s.p;
  }
  if (zero && bytes > 0) std::memset(p_, 0, bytes);
}

Workspace::~Workspace() {
  if (owned_ != nullptr)
    std::free(owned_);
  else if (slot_ >= 0)
    slots().slot[slot_].held = false;
}

size_t workspace_bytes_this_thread() {
  size_t total = 0;
  for (const auto& s : slots().slot) total += s.cap;
  return total;
}

// ---------------------------------------------------------------------------- kept tensors

namespace {

// A freed block is reused for a request of at least half its size; the cache holds at most
// kMaxBlocks blocks and kMaxBytes bytes (the oldest go back to the heap first).
constexpr size_t kMaxBlocks = 64;  // an MS-SSIM call keeps ~30 (maps, pyramid, gradients)
constexpr size_t kMaxBytes = size_t(1) << 30;
constexpr size_t kHeapBytes = size_t(4) << 10;  // a page: MS-SSIM's coarsest level (12 KiB at N=4) is kept too

struct Block {
  void* p;
  size_t cap;
};

struct KeptCache {
  std::mutex mu;
  std::vector<Block*> free;  // oldest first
  size_t bytes = 0;

  Block* take(size_t n) {
    std::lock_guard<std::mutex> lock(mu);
    size_t best = free.size();
    for (size_t i = 0; i < free.size(); ++i) {
      const size_t cap = free[i]->cap;
      if (cap >= n && cap / 2 <= n && (best == free.size() || cap < free[best]->cap)) best = i;
    }
    if (best == free.size()) return nullptr;
    Block* b = free[best];
    free.erase(free.begin() + static_cast<std::ptrdiff_t>(best));
    bytes -= b->cap;
    return b;
  }

  void give(Block* b) {
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mu);
      free.push_back(b);
      bytes += b->cap;
      while (free.size() > kMaxBlocks || bytes > kMaxBytes) {
        drop.push_back(free.front());
        bytes -= free.front()->cap;
        free.erase(free.begin());
      }
    }
    for (Block* d : drop) {
      std::free(d->p);
      delete d;
    }
  }
};

KeptCache& cache() {
  static auto* c = new KeptCache();  // never destroyed: tensors may be freed during exit
  return *c;
}

void give_back(void* /*data*/, void* ctx) { cache().give(static_cast<Block*>(ctx)); }

}  // namespace
}  // namespace vaeiso

// torch_from_blob (stable C shim, torch >= 2.11): a tensor over our memory with a deleter. Weak,
// so that the library still loads under torch 2.10, where it is null.
extern "C" AOTITorchError torch_from_blob(void* data, int64_t ndim, const int64_t* sizes_ptr,
                                          const int64_t* strides_ptr, int64_t storage_offset, int32_t dtype,
                                          int32_t device_type, int32_t device_index, AtenTensorHandle* ret,
                                          int32_t layout, const uint8_t* opaque_metadata, int64_t opaque_metadata_size,
                                          void (*deleter)(void* data, void* ctx), void* deleter_ctx)
    __attribute__((weak));
// The message of the shim's last error (torch >= 2.13; weak likewise).
extern "C" const char* torch_exception_get_what_without_backtrace() __attribute__((weak));

namespace vaeiso {

bool kept_cache_available() { return torch_from_blob != nullptr; }

Tensor kept_empty(const std::vector<int64_t>& sizes, ScalarType dtype, const Tensor& like) {
  VAEISO_CHECK(like.is_cpu(), "kept_empty: a CPU tensor only");
  if (!kept_cache_available()) return alloc(sizes, dtype, like);
  const int64_t nd = static_cast<int64_t>(sizes.size());
  const auto strides = contiguous_strides(sizes);
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const size_t n = static_cast<size_t>(numel) * elem_size(dtype);
  // A small block (under a page) comes from torch's allocator: an ordinary, resizable storage
  // (ours is not). Larger ones come from the cache: blocks of a few KiB from the heap can still
  // take a page fault per call when the heap's top is trimmed and regrown (MS-SSIM's coarsest
  // level at the bench sizes, 12 KiB, did).
  if (n < kHeapBytes) return alloc(sizes, dtype, like);
  Block* b = n > 0 ? cache().take(n) : nullptr;
  if (b == nullptr) b = new Block{alloc_aligned(n), round_up(n > 0 ? n : 1)};
  AtenTensorHandle h = nullptr;
  const int32_t shim_dtype = torch::stable::detail::to<int32_t>(torch::stable::detail::from(dtype));
  const int32_t cpu =
      torch::stable::detail::to<int32_t>(torch::stable::detail::from(torch::headeronly::DeviceType::CPU));
  const int32_t strided =
      torch::stable::detail::to<int32_t>(torch::stable::detail::from(torch::headeronly::Layout::Strided));
  const auto err = torch_from_blob(b->p, nd, sizes.data(), strides.data(), 0, shim_dtype, cpu, -1, &h, strided, nullptr,
                                   0, &give_back, b);
  if (err != 0) {
    cache().give(b);
    const char* why = torch_exception_get_what_without_backtrace ? torch_exception_get_what_without_backtrace() : "";
    VAEISO_CHECK(false, "kept_empty: torch_from_blob failed: ", why ? why : "");
  }
  return Tensor(h);
}

size_t kept_cache_bytes() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().bytes;
}

}  // namespace vaeiso
