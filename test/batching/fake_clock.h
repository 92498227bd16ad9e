#pragma once

#include <algorithm>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "batching/clock.h"

namespace model_server::batching {

// A clock that moves only when the test says so. Waits on it return when Advance reaches their
// deadline (or on a notify), so delay tests run without sleeping.
class FakeClock final : public Clock {
 public:
  TimePoint Now() override {
    base::MutexLock lock(mu_);
    return now_;
  }

  void WaitUntil(base::Mutex& mu, base::CondVar& wake, TimePoint deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Registered and checked under the caller's mutex, which Advance takes before signalling:
    // an Advance cannot slip between the check and the wait.
    const Waiter waiter{&wake, &mu};
    {
      base::MutexLock guard(mu_);
      if (now_ >= deadline) return;
      waiters_.push_back(waiter);
      ++waits_;
    }
    wake.Wait(mu);
    base::MutexLock guard(mu_);
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), waiter));
  }

  // Moves time on and wakes every waiter. The waiters' mutexes and condition variables (the
  // batcher's) must outlive the call.
  void Advance(std::chrono::microseconds by) {
    std::vector<Waiter> waiters;
    {
      base::MutexLock lock(mu_);
      now_ += by;
      waiters = waiters_;
    }
    for (const Waiter& waiter : waiters) {
      base::MutexLock lock(*waiter.mutex);
      waiter.wake->SignalAll();
    }
  }

  // Waits that have started so far: a thread that woke, found its deadline not reached and
  // waits again adds one.
  size_t waits() {
    base::MutexLock lock(mu_);
    return waits_;
  }

 private:
  struct Waiter {
    base::CondVar* wake;
    base::Mutex* mutex;
    bool operator==(const Waiter& other) const {
      return wake == other.wake && mutex == other.mutex;
    }
  };

  base::Mutex mu_;
  TimePoint now_ ABSL_GUARDED_BY(mu_){};
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);  // one entry per blocked thread
  size_t waits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace model_server::batching
