#include "base/mutex.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

namespace model_server::base {
namespace {

using namespace std::chrono_literals;

struct Flag {
  Mutex mu;
  CondVar changed;
  bool set ABSL_GUARDED_BY(mu) = false;
};

TEST_CASE("WaitUntil returns false once its deadline has passed, still holding the mutex",
          "[mutex]") {
  Flag flag;
  MutexLock lock(flag.mu);
  const auto start = std::chrono::steady_clock::now();
  bool signalled = true;
  while (!flag.set && (signalled = flag.changed.WaitUntil(flag.mu, start + 50ms))) {
  }
  CHECK_FALSE(signalled);
  CHECK(std::chrono::steady_clock::now() - start >= 50ms);
  flag.set = true;  // still held: the analysis and the code agree
}

TEST_CASE("a Signal ends a Wait; the waiter sees what was written under the mutex", "[mutex]") {
  Flag flag;
  std::thread setter([&] {
    std::this_thread::sleep_for(20ms);
    MutexLock lock(flag.mu);
    flag.set = true;
    flag.changed.SignalAll();
  });
  {
    MutexLock lock(flag.mu);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!flag.set && flag.changed.WaitUntil(flag.mu, deadline)) {
    }
    CHECK(flag.set);
  }
  setter.join();
}

TEST_CASE("MutexLock lets the mutex go between Unlock and Lock", "[mutex]") {
  Flag flag;
  MutexLock lock(flag.mu);
  lock.Unlock();
  std::thread other([&] {
    MutexLock inner(flag.mu);  // would deadlock if `lock` still held it
    flag.set = true;
  });
  other.join();
  lock.Lock();
  CHECK(flag.set);
}

}  // namespace
}  // namespace model_server::base
