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
// Task is a BatchTask (or derives from one).
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

  // Never blocks. Takes ownership of `task` on OK. On RESOURCE_EXHAUSTED (queue full) or
  // UNAVAILABLE (shutting down) `task` stays with the caller, untouched. Any thread.
  absl::Status Enqueue(std::unique_ptr<Task>& task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return absl::UnavailableError("server is shutting down");
      if (absl::Status pushed = queue_.Push(task, clock_.Now()); !pushed.ok()) return pushed;
    }
    wake_.notify_one();
    return absl::OkStatus();
  }

  // Tasks waiting in the queue (not those being run). Any thread.
  size_t NumEnqueuedTasks() {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.size();
  }

  // Runs every task still queued, then joins the batch threads. Idempotent; any thread but a
  // batch thread.
  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
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
  }

  void Loop(size_t worker) {
    if (start_) start_(worker);
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      Cut<Task> cut = queue_.Pop(clock_.Now(), stopping_);
      if (!cut.batch.empty() || !cut.dropped.empty()) {
        const bool more_queued = !queue_.empty();
        lock.unlock();
        // Another worker may cut the next batch while this one computes.
        if (more_queued) wake_.notify_one();
        for (auto& [task, reason] : cut.dropped) task->Fail(std::move(reason));
        if (!cut.batch.empty()) process_(worker, cut.batch);
        lock.lock();
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
  const StartWorker start_;
  Clock& clock_;
  std::mutex mu_;
  std::condition_variable wake_;
  BatchQueue<Task> queue_;  // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace model_server::batching
