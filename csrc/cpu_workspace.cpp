// The per-thread scratch buffers of cpu_workspace.h.
#include "cpu_workspace.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

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
  if (owned_ != nullptr) std::free(owned_);
  else if (slot_ >= 0) slots().slot[slot_].held = false;
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
constexpr size_t kMaxBlocks = 16;
constexpr size_t kMaxBytes = size_t(1) << 30;

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

void give_back(void* ctx) { cache().give(static_cast<Block*>(ctx)); }

struct KeptAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    Block* b = n > 0 ? cache().take(n) : nullptr;
    if (b == nullptr) b = new Block{alloc_aligned(n), round_up(n > 0 ? n : 1)};
    return {b->p, b, &give_back, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

at::Tensor kept_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  static KeptAllocator alloc;
  TORCH_CHECK(opts.device().is_cpu(), "kept_empty: a CPU tensor only");
  return at::detail::empty_generic(sizes, &alloc, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(opts.dtype()), std::nullopt);
}

size_t kept_cache_bytes() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().bytes;
}

}  // namespace vaeiso
