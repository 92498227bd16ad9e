#pragma once

#include <condition_variable>
#include <mutex>

#include "batching/batch_task.h"

namespace model_server::batching {

// Where the batcher reads time and waits for it: the steady clock in production, a fake clock in
// tests, so that delay tests advance time instead of sleeping (as TF Serving's Env does).
class Clock {
 public:
  virtual ~Clock() = default;

  // The current time. Any thread.
  virtual TimePoint Now() = 0;

  // Blocks on `wake`, whose mutex `lock` holds, until it is notified or Now() reaches `deadline`;
  // like std::condition_variable::wait_until it may also return spuriously.
  virtual void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& wake,
                         TimePoint deadline) = 0;
};

// The process's steady clock; lives for the whole program.
Clock* RealClock();

}  // namespace model_server::batching
