#pragma once

#include <chrono>
#include <cstddef>
#include <thread>

#include "base/mutex.h"

namespace model_server::platform {

struct MemoryTrimOptions {
  // How often the heap is looked at; zero: never (no thread).
  std::chrono::milliseconds interval{std::chrono::seconds(10)};
  // Trim once this much more freed heap memory is resident than right after the last trim.
  size_t min_bytes = 64 * 1024 * 1024;
};

// glibc's malloc keeps the memory freed inside its heaps for reuse, so after a burst (many
// large requests at once, or an attack that filled gRPC's buffers up to its quota) the resident
// set stays at its peak although the memory is free. malloc_trim(0) hands those pages back to
// the kernel (docs/SECURITY.md: 483 -> 181 MiB after 4 x 64 stalled 4 MiB messages). Returns
// whether it trimmed: when at least `min_free_bytes` of the heap are free.
bool TrimFreeHeap(size_t min_free_bytes);

// The resident set of this process, in bytes (0 when /proc cannot be read).
size_t ResidentBytes();

// The resident set less the heap memory in use: code, stacks and the like, which barely
// change, plus freed heap memory that is still resident, which a trim returns.
size_t ResidentBytesNotInUse();

// Looks every options.interval, on a thread of its own, and trims (TrimFreeHeap) after bursts
// only: when ResidentBytesNotInUse has grown by options.min_bytes since the last trim. A heap
// that was trimmed and stays quiet is not trimmed again, and a trim during a burst does not
// hide the memory the burst frees afterwards.
class MemoryTrimmer {
 public:
  explicit MemoryTrimmer(const MemoryTrimOptions& options);
  // Stops and joins the thread.
  ~MemoryTrimmer();

  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;

 private:
  void Run();

  const MemoryTrimOptions options_;
  base::Mutex mutex_;
  base::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace model_server::platform
