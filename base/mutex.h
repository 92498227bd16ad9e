#pragma once

// std::mutex and std::condition_variable with Clang's thread-safety annotations, so that fields
// marked ABSL_GUARDED_BY(mu_) are checked at compile time: clang's -Wthread-safety, which the
// sanitizer builds turn into errors (scripts/sanitize.sh). libstdc++'s std::mutex carries no
// annotations. absl::Mutex does, but Debian's libabsl is built without TSan, which would then see
// no synchronisation in it; these wrappers are std::mutex underneath, which TSan understands.

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace model_server::base {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Takes the mutex if it is free; returns whether it did. Never blocks.
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex from construction to the end of its scope; Unlock and Lock let it go and take
// it again in between.
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    if (held_) mu_.Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() ABSL_UNLOCK_FUNCTION() {
    mu_.Unlock();
    held_ = false;
  }
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// A condition variable for a Mutex. Waits may also end spuriously: callers wait in a loop that
// checks their condition.
class CondVar {
 public:
  // Lets `mu` go, waits for a Signal, takes `mu` again.
  void Wait(Mutex& mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    wake_.wait(lock);
    lock.release();  // `mu` stays held, by the caller
  }

  // As Wait, until `deadline` at the latest. Returns false when the deadline has passed.
  template <typename Clock, typename Duration>
  bool WaitUntil(Mutex& mu, std::chrono::time_point<Clock, Duration> deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    const std::cv_status status = wake_.wait_until(lock, deadline);
    lock.release();
    return status == std::cv_status::no_timeout;
  }

  void Signal() { wake_.notify_one(); }
  void SignalAll() { wake_.notify_all(); }

 private:
  std::condition_variable wake_;
};

}  // namespace model_server::base
