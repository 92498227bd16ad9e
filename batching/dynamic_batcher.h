#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
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

  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(const BatchingOptions& options,
                                                                size_t num_workers,
                                                                ProcessBatch process) {
    if (absl::Status valid = ValidateBatchingOptions(options); !valid.ok()) return valid;
    if (num_workers == 0) return absl::InvalidArgumentError("num_workers must be at least 1");
    return std::unique_ptr<DynamicBatcher>(
        new DynamicBatcher(options, num_workers, std::move(process)));
  }

  ~DynamicBatcher() { Shutdown(); }

  // Never blocks. Takes ownership of `task` on OK. Otherwise `task` stays with the caller,
  // untouched: UNAVAILABLE when shutting down, or as BatchQueue::Push refuses it (a priority
  // outside the levels, the queue or the task's level full). Any thread.
  absl::Status Enqueue(std::unique_ptr<Task>& task) {
    bool sooner_rejection = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return absl::UnavailableError("server is shutting down");
      const std::optional<TimePoint> before = queue_.NextRejection();
      if (absl::Status pushed = queue_.Push(task, clock_.Now()); !pushed.ok()) return pushed;
      const std::optional<TimePoint> after = queue_.NextRejection();
      sooner_rejection = after && (!before || *after < *before);
    }
    wake_.notify_one();
    // Its timeout passes before the one the timeout thread waits for.
    if (sooner_rejection && timeouts_.joinable()) expiry_wake_.notify_one();
    return absl::OkStatus();
  }

  // Tasks waiting in the queue (not those being run). Any thread.
  size_t NumEnqueuedTasks() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }
  // The same by priority level (see PriorityQueue::SizePerLevel). Any thread.
  std::vector<std::pair<size_t, size_t>> EnqueuedTasksPerLevel() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.SizePerLevel();
  }
  // The rows a batch holds at most now, and how long a partial batch waits for more (they move
  // under a latency objective). Any thread.
  size_t BatchCap() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.BatchCap();
  }
  std::chrono::nanoseconds Delay() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.Delay();
  }

  // Runs every task still queued, then joins the batch threads. Idempotent; any thread but a
  // batch thread.
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    expiry_wake_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
    if (timeouts_.joinable()) timeouts_.join();
  }

 private:
  DynamicBatcher(const BatchingOptions& options, size_t num_workers, ProcessBatch process)
      : process_(std::move(process)), clock_(*options.clock), queue_(options) {
    for (size_t worker = 0; worker < num_workers; ++worker) {
      workers_.emplace_back([this, worker] { Loop(worker); });
    }
    if (MayReject(options.priorities)) timeouts_ = std::thread([this] { RejectLoop(); });
  }

  // The timeout thread: fails the tasks whose REJECT timeout passes, whatever the batch threads
  // are doing.
  void RejectLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      if (std::optional<TimePoint> next = queue_.NextRejection()) {
        clock_.WaitUntil(lock, expiry_wake_, *next);
      } else {
        expiry_wake_.wait(lock);
      }
      if (stopping_) return;  // the batch threads flush what is queued
      auto rejected = queue_.Expire(clock_.Now());
      if (rejected.empty()) continue;
      lock.unlock();
      for (auto& [task, reason] : rejected) task->Fail(std::move(reason));
      lock.lock();
    }
  }

  void Loop(size_t worker) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      const TimePoint now = clock_.Now();
      Cut<Task> cut = queue_.Pop(now, stopping_);
      if (!cut.batch.empty() || !cut.dropped.empty()) {
        const bool more_queued = !queue_.empty();
        lock.unlock();
        // Another worker may cut the next batch while this one computes.
        if (more_queued) wake_.notify_one();
        for (auto& [task, reason] : cut.dropped) task->Fail(std::move(reason));
        const bool ran = !cut.batch.empty();
        size_t rows = 0;
        for (const auto& task : cut.batch) rows += task->rows();
        if (ran) process_(worker, cut.batch);
        const TimePoint done = clock_.Now();
        lock.lock();
        if (ran) queue_.RecordBatch(rows, now - cut.oldest_enqueued, done - now);
        continue;
      }
      if (stopping_ && queue_.empty()) return;
      if (std::optional<TimePoint> ready_at = queue_.ReadyAt()) {
        clock_.WaitUntil(lock, wake_, *ready_at);
      } else {
        wake_.wait(lock);
      }
    }
  }

  const ProcessBatch process_;
  Clock& clock_;
  std::mutex mu_;
  std::condition_variable wake_;         // the batch threads wait on it
  std::condition_variable expiry_wake_;  // the timeout thread waits on it
  BatchQueue<Task> queue_;               // guarded by mu_
  bool stopping_ = false;                // guarded by mu_
  std::vector<std::thread> workers_;
  std::thread timeouts_;  // where MayReject
};

}  // namespace model_server::batching
