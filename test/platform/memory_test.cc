#include "platform/memory.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace model_server::platform {
namespace {

constexpr size_t kMiB = 1024 * 1024;

using namespace std::chrono_literals;

// 128 MiB in 64 KiB blocks (below glibc's mmap threshold, so on the heap), touched; freeing
// every other one leaves 64 MiB of holes that free cannot give back to the kernel.
class Holes {
 public:
  Holes() : blocks_(2048) {
    for (void*& block : blocks_) {
      block = std::malloc(kBlock);
      REQUIRE(block != nullptr);
      std::memset(block, 1, kBlock);
    }
  }
  ~Holes() {
    for (size_t i = freed_ ? 1 : 0; i < blocks_.size(); i += freed_ ? 2 : 1) std::free(blocks_[i]);
  }
  void FreeEveryOther() {
    for (size_t i = 0; i < blocks_.size(); i += 2) std::free(blocks_[i]);
    freed_ = true;
  }

 private:
  static constexpr size_t kBlock = 64 * 1024;
  std::vector<void*> blocks_;
  bool freed_ = false;
};

TEST_CASE("memory freed inside the heap is returned by a trim, not by free") {
  Holes holes;
  const size_t full = ResidentBytes();
  REQUIRE(full > 128 * kMiB);
  holes.FreeEveryOther();
  CHECK(ResidentBytes() > full - 16 * kMiB);

  CHECK_FALSE(TrimFreeHeap(1024 * kMiB));  // less than that is free: nothing happens
  CHECK(ResidentBytes() > full - 16 * kMiB);
  CHECK(TrimFreeHeap(16 * kMiB));
  CHECK(ResidentBytes() < full - 48 * kMiB);
}

TEST_CASE("the trimmer returns what a burst freed, within an interval") {
  Holes holes;
  const size_t full = ResidentBytes();
  MemoryTrimOptions options;
  options.interval = 50ms;
  options.min_bytes = 16 * kMiB;
  const MemoryTrimmer trimmer(options);
  std::this_thread::sleep_for(200ms);  // it looked, and found nothing to return
  CHECK(ResidentBytes() > full - 16 * kMiB);
  holes.FreeEveryOther();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (ResidentBytes() > full - 48 * kMiB && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK(ResidentBytes() < full - 48 * kMiB);
}

}  // namespace
}  // namespace model_server::platform
