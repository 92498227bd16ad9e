#include "platform/memory.h"

#include <malloc.h>
#include <unistd.h>

#include <fstream>

namespace model_server::platform {

bool TrimFreeHeap(size_t min_free_bytes) {
  // fordblks: bytes in free chunks of every arena (mmapped blocks are returned when freed).
  if (mallinfo2().fordblks < min_free_bytes) return false;
  malloc_trim(0);
  return true;
}

size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t size_pages = 0;
  size_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

size_t ResidentBytesNotInUse() {
  const struct mallinfo2 heap = mallinfo2();
  // uordblks: bytes in chunks in use; hblkhd: bytes in mmapped blocks (always in use).
  const size_t in_use = heap.uordblks + heap.hblkhd;
  const size_t resident = ResidentBytes();
  return resident > in_use ? resident - in_use : 0;
}

MemoryTrimmer::MemoryTrimmer(const MemoryTrimOptions& options) : options_(options) {
  if (options_.interval.count() > 0) thread_ = std::thread([this] { Run(); });
}

MemoryTrimmer::~MemoryTrimmer() {
  {
    base::MutexLock lock(mutex_);
    stopping_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void MemoryTrimmer::Run() {
  size_t after_trim = ResidentBytesNotInUse();
  for (;;) {
    {
      const auto next = std::chrono::steady_clock::now() + options_.interval;
      base::MutexLock lock(mutex_);
      while (!stopping_ && wake_.WaitUntil(mutex_, next)) {
      }
      if (stopping_) return;
    }
    const size_t not_in_use = ResidentBytesNotInUse();
    if (not_in_use >= after_trim + options_.min_bytes && TrimFreeHeap(options_.min_bytes)) {
      after_trim = ResidentBytesNotInUse();
    } else if (not_in_use < after_trim) {
      after_trim = not_in_use;  // it shrank by itself: measure growth from here
    }
  }
}

}  // namespace model_server::platform
