#pragma once

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"
#include "batching/batch_task.h"

namespace model_server::batching {

// Where the batcher reads time and waits for it: the steady clock in production, a fake clock in
// tests, so that delay tests advance time instead of sleeping (as TF Serving's Env does).
class Clock {
 public:
  virtual ~Clock() = default;

  // The current time. Any thread.
  virtual TimePoint Now() = 0;

  // Lets `mu` go and blocks on `wake` until it is signalled or Now() reaches `deadline`, then
  // takes `mu` again; like std::condition_variable::wait_until it may also return spuriously.
  virtual void WaitUntil(base::Mutex& mu, base::CondVar& wake, TimePoint deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;
};

// The process's steady clock; lives for the whole program.
Clock* RealClock();

}  // namespace model_server::batching
