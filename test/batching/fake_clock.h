#pragma once

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "batching/clock.h"

namespace model_server::batching {

// A clock that moves only when the test says so. Waits on it return when Advance reaches their
// deadline (or on a notify), so delay tests run without sleeping.
class FakeClock final : public Clock {
 public:
  TimePoint Now() override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }

  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& wake,
                 TimePoint deadline) override {
    // Registered and checked under the caller's mutex, which Advance takes before notifying:
    // an Advance cannot slip between the check and the wait.
    const Waiter waiter{&wake, lock.mutex()};
    {
      std::lock_guard<std::mutex> guard(mu_);
      if (now_ >= deadline) return;
      waiters_.push_back(waiter);
      ++waits_;
    }
    wake.wait(lock);
    std::lock_guard<std::mutex> guard(mu_);
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
  }

  // Moves time on and wakes every waiter. The waiters' mutexes and condition variables (the
  // batcher's) must outlive the call.
  void Advance(std::chrono::microseconds by) {
    std::vector<Waiter> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now_ += by;
      waiters = waiters_;
    }
    for (const Waiter& waiter : waiters) {
      std::lock_guard<std::mutex> lock(*waiter.mutex);
      waiter.wake->notify_all();
    }
  }

  // Waits that have started so far: a thread that woke, found its deadline not reached and
  // waits again adds one.
  size_t waits() {
    std::lock_guard<std::mutex> lock(mu_);
    return waits_;
  }

 private:
  struct Waiter {
    std::condition_variable* wake;
    std::mutex* mutex;
    bool operator==(const Waiter& other) const {
      return wake == other.wake && mutex == other.mutex;
    }
  };

  std::mutex mu_;
  TimePoint now_{};              // guarded by mu_
  std::vector<Waiter> waiters_;  // guarded by mu_; one entry per blocked thread
  size_t waits_ = 0;             // guarded by mu_
};

}  // namespace model_server::batching
