// Memory the CPU kernels keep between calls, so that a call in a user's process takes no page
// faults once warm. With glibc's default malloc a multi-MB block is a fresh mmap (every page
// faulted in and zeroed on first touch), or comes from a heap that free() trims back to the
// system once its free top exceeds the trim threshold (twice the largest mmapped block freed so
// far): a kernel that took fresh multi-MB buffers each call touched new pages each call, and
// pushed the heap past its threshold so that the user's own tensors faulted again too.
//
// Two kinds:
// - Scratch: per-thread buffers for the kernels' tasks. Each thread keeps one buffer per slot,
//   grown to the largest request it has served and never shrunk (freed when the thread ends).
//   Held for a scope (a task of at::parallel_for, or a whole call on the calling thread); two
//   slots let a call hold one on its thread while that thread also runs tasks of the call's
//   parallel region. A nested request for a slot already held on this thread (a kernel called
//   from inside a task) gets its own heap block: correct, only not reused.
// - kept_empty: tensors an op keeps for itself from its forward to its backward (SSIM's
//   derivative maps, GDN's norm) and its large outputs, from a small process-wide cache of
//   freed blocks instead of the heap (host code only). The tensor wraps our block through the
//   stable C shim's torch_from_blob with a deleter that gives the block back (torch >= 2.11,
//   looked up at load time: a weak symbol); under torch 2.10, which lacks it, kept_empty is a
//   plain empty tensor (correct, only without the reuse). A tensor under 4 KiB is a plain empty tensor too
//   (resizable). The cache's tensors cannot be resized in place (torch_from_blob's storage is fixed).
// Both are defined out of line (cpu_workspace.cpp, the baseline instruction set): one state for
// all the ISA builds of a kernel.
#pragma once
#include <cstddef>
#include <cstdint>

#include "host_device.h"

#ifndef VAEISO_CPU_ISA
#include "stable_abi.h"
#endif

namespace vaeiso {

enum class WorkspaceSlot : int { kTask = 0, kCall = 1 };

class Workspace {
 public:
  // `bytes` of 64-byte aligned memory, zero-filled when `zero` (what a fresh std::vector gave).
  Workspace(size_t bytes, WorkspaceSlot slot, bool zero);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* raw() const { return p_; }

 private:
  void* p_ = nullptr;
  void* owned_ = nullptr;  // a nested request's own block
  int slot_ = -1;          // the held slot, or -1
};

// Bytes this thread keeps in its workspace slots (for the tests).
size_t workspace_bytes_this_thread();

// n values of T (zero-filled unless told otherwise): the drop-in for a per-call std::vector<T>.
// (Per ISA build, like every inline code of ours: see host_device.h.)
VAEISO_ISA_BEGIN
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n, WorkspaceSlot slot = WorkspaceSlot::kTask, bool zero = true)
      : ws_(static_cast<size_t>(n > 0 ? n : 0) * sizeof(T), slot, zero) {}
  T* data() const { return static_cast<T*>(ws_.raw()); }
  T& operator[](int64_t i) const { return data()[i]; }

 private:
  Workspace ws_;
};
VAEISO_ISA_END

#ifndef VAEISO_CPU_ISA
// An empty contiguous CPU tensor of `dtype` (`like` gives the device: a CPU tensor), its storage
// from the kept cache: a freed block serves a later request of between half its size and its
// size. The cache holds at most 64 blocks and 1 GiB (the oldest go back to the heap first).
Tensor kept_empty(const std::vector<int64_t>& sizes, ScalarType dtype, const Tensor& like);

// Whether kept_empty uses the cache (this torch has torch_from_blob), for the tests.
bool kept_cache_available();

// Bytes of freed blocks the cache holds now (for the tests).
size_t kept_cache_bytes();
#endif

}  // namespace vaeiso
