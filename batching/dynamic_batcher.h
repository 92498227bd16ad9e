#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "batching/batch_queue.h"

namespace model_server::batching {

// Coalesces tasks into batches and hands each closed batch to a callback on a batch thread.
// Where a queue policy may reject tasks for their timeout (MayReject), a timeout thread of its own
// fails them when their timeout passes, even while every batch thread computes. Task is a
// BatchTask (or derives from one).
template <typename Task>
class DynamicBatcher {
 public:
  // Runs one batch on batch thread `worker` (0 <= worker < num_workers). It owns the tasks and
  // completes each of them.
  using ProcessBatch = std::function<void(size_t worker, std::vector<std::unique_ptr<Task>>&)>;
  // Runs once on batch thread `worker` as it starts, before it takes any batch (e.g. to warm
  // up what that thread runs).
  using StartWorker = std::function<void(size_t worker)>;

  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(const BatchingOptions& options,
                                                                size_t num_workers,
                                                                ProcessBatch process,
                                                                StartWorker start = nullptr) {
    if (absl::Status valid = ValidateBatchingOptions(options); !valid.ok()) return valid;
    if (num_workers == 0) return absl::InvalidArgumentError("num_workers must be at least 1");
    return std::unique_ptr<DynamicBatcher>(
        new DynamicBatcher(options, num_workers, std::move(process), std::move(start)));
  }

  ~DynamicBatcher() { Shutdown(); }

  // Never blocks. Takes ownership of `task` on OK. Otherwise `task` stays with the caller,
  // untouched: UNAVAILABLE when shutting down, or as BatchQueue::Push refuses it (a priority
  // outside the levels, the queue or the task's level full). Any thread.
  absl::Status Enqueue(std::unique_ptr<Task>& task) {
    bool sooner_rejection = false;
    {
      base::MutexLock lock(mu_);
      if (stopping_) return absl::UnavailableError("server is shutting down");
      const std::optional<TimePoint> before = queue_.NextRejection();
      if (absl::Status pushed = queue_.Push(task, clock_.Now()); !pushed.ok()) return pushed;
      const std::optional<TimePoint> after = queue_.NextRejection();
      sooner_rejection = after && (!before || *after < *before);
    }
    wake_.Signal();
    // Its timeout passes before the one the timeout thread waits for.
    if (sooner_rejection && timeouts_.joinable()) expiry_wake_.Signal();
    return absl::OkStatus();
  }

  // Tasks waiting in the queue (not those being run). Any thread.
  size_t NumEnqueuedTasks() {
    base::MutexLock lock(mu_);
    return queue_.size();
  }
  // The same by priority level (see PriorityQueue::SizePerLevel). Any thread.
  std::vector<std::pair<size_t, size_t>> EnqueuedTasksPerLevel() {
    base::MutexLock lock(mu_);
    return queue_.SizePerLevel();
  }
  // The rows a batch holds at most now, and how long a partial batch waits for more (they move
  // under a latency objective). Any thread.
  size_t BatchCap() {
    base::MutexLock lock(mu_);
    return queue_.BatchCap();
  }
  std::chrono::nanoseconds Delay() {
    base::MutexLock lock(mu_);
    return queue_.Delay();
  }

  // Runs every task still queued, then joins the batch threads. Idempotent; any thread but a
  // batch thread.
  void Shutdown() {
    {
      base::MutexLock lock(mu_);
      stopping_ = true;
    }
    wake_.SignalAll();
    expiry_wake_.SignalAll();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
    if (timeouts_.joinable()) timeouts_.join();
  }

 private:
  DynamicBatcher(const BatchingOptions& options, size_t num_workers, ProcessBatch process,
                 StartWorker start)
      : process_(std::move(process)),
        start_(std::move(start)),
        clock_(*options.clock),
        queue_(options) {
    for (size_t worker = 0; worker < num_workers; ++worker) {
      workers_.emplace_back([this, worker] { Loop(worker); });
    }
    if (MayReject(options.priorities)) timeouts_ = std::thread([this] { RejectLoop(); });
  }

  // The timeout thread: fails the tasks whose REJECT timeout passes, whatever the batch threads
  // are doing.
  void RejectLoop() {
    base::MutexLock lock(mu_);
    while (!stopping_) {
      if (std::optional<TimePoint> next = queue_.NextRejection()) {
        clock_.WaitUntil(mu_, expiry_wake_, *next);
      } else {
        expiry_wake_.Wait(mu_);
      }
      if (stopping_) return;  // the batch threads flush what is queued
      auto rejected = queue_.Expire(clock_.Now());
      if (rejected.empty()) continue;
      lock.Unlock();
      for (auto& [task, reason] : rejected) task->Fail(std::move(reason));
      lock.Lock();
    }
  }

  void Loop(size_t worker) {
    if (start_) start_(worker);
    base::MutexLock lock(mu_);
    while (true) {
      const TimePoint now = clock_.Now();
      Cut<Task> cut = queue_.Pop(now, stopping_);
      if (!cut.batch.empty() || !cut.dropped.empty()) {
        const bool more_queued = !queue_.empty();
        lock.Unlock();
        // Another worker may cut the next batch while this one computes.
        if (more_queued) wake_.Signal();
        for (auto& [task, reason] : cut.dropped) task->Fail(std::move(reason));
        const bool ran = !cut.batch.empty();
        size_t rows = 0;
        for (const auto& task : cut.batch) rows += task->rows();
        if (ran) process_(worker, cut.batch);
        const TimePoint done = clock_.Now();
        lock.Lock();
        if (ran) queue_.RecordBatch(rows, now - cut.oldest_enqueued, done - now);
        continue;
      }
      if (stopping_ && queue_.empty()) return;
      if (std::optional<TimePoint> ready_at = queue_.ReadyAt()) {
        clock_.WaitUntil(mu_, wake_, *ready_at);
      } else {
        wake_.Wait(mu_);
      }
    }
  }

  const ProcessBatch process_;
  const StartWorker start_;
  Clock& clock_;
  base::Mutex mu_;
  base::CondVar wake_;         // the batch threads wait on it
  base::CondVar expiry_wake_;  // the timeout thread waits on it
  BatchQueue<Task> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
  std::thread timeouts_;  // where MayReject
};

}  // namespace model_server::batching
