#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "batching/batch_task.h"
#include "batching/clock.h"

namespace model_server::batching {

struct BatchingOptions {
  // A batch closes once its rows reach this; a single larger task runs as a batch of its own.
  size_t max_batch_rows = 4096;
  // How long the oldest queued task may wait for more rows; 0 runs whatever is queued at once.
  std::chrono::microseconds max_queue_delay{0};
  // Rows the queue holds at most; a task that would go beyond it is rejected.
  size_t max_queue_rows = 65536;
  // Tasks a batch holds at most (1: every task runs alone, as Triton runs a model without
  // dynamic batching).
  size_t max_batch_tasks = std::numeric_limits<size_t>::max();
  // Batch sizes (rows) to cut at once, without waiting for max_queue_delay, as soon as the queue
  // holds one of them: the largest one the queue can fill (Triton's preferred_batch_size).
  // Ascending; empty: none.
  std::vector<size_t> preferred_batch_rows;
  // Where the batcher reads time and waits; tests pass a fake clock.
  Clock* clock = RealClock();
};

absl::Status ValidateBatchingOptions(const BatchingOptions& options);

// A batch cut from the queue: the tasks to run together, in arrival order, and the tasks that
// were dropped instead (deadline passed, client gone), each with the reason.
template <typename Task>
struct Cut {
  std::vector<std::unique_ptr<Task>> batch;
  std::vector<std::pair<std::unique_ptr<Task>, absl::Status>> dropped;
};

// The batching policy, without threads or clocks of its own: time is passed in, so tests drive
// it with any time they like. Not thread-safe; DynamicBatcher guards it with its mutex.
template <typename Task>
class BatchQueue {
  static_assert(std::is_base_of_v<BatchTask, Task>, "a batched task is a BatchTask");

 public:
  explicit BatchQueue(const BatchingOptions& options) : options_(options) {}

  // Takes ownership of `task` on OK. On RESOURCE_EXHAUSTED the queue is full and `task` is left
  // with the caller, untouched.
  absl::Status Push(std::unique_ptr<Task>& task, TimePoint now) {
    const size_t rows = task->rows();
    if (queued_rows_ + rows > options_.max_queue_rows) {
      return absl::ResourceExhaustedError(
          absl::StrCat("server queue is full (", queued_rows_, " of ", options_.max_queue_rows,
                       " rows queued, request has ", rows, "); retry later"));
    }
    queued_rows_ += rows;
    entries_.push_back(Entry{now, std::move(task)});
    return absl::OkStatus();
  }

  // The earliest time at which Pop returns a batch; nullopt while the queue is empty.
  std::optional<TimePoint> ReadyAt() const {
    if (entries_.empty()) return std::nullopt;
    const bool full = queued_rows_ >= options_.max_batch_rows ||
                      entries_.size() >= options_.max_batch_tasks || PreferredRows().has_value();
    if (full) return entries_.front().enqueued;
    return entries_.front().enqueued + options_.max_queue_delay;
  }

  // Pops the next batch if it is ready at `now` (or at once when `flush`). A batch holds
  // queued tasks in order while their rows fit max_batch_rows and their batch keys equal the
  // first one's, and at least one task.
  Cut<Task> Pop(TimePoint now, bool flush) {
    Cut<Task> cut;
    const std::optional<TimePoint> ready_at = ReadyAt();
    if (!ready_at || (!flush && now < *ready_at)) return cut;
    const size_t limit = PreferredRows().value_or(options_.max_batch_rows);
    size_t batch_rows = 0;
    while (!entries_.empty()) {
      const Task& next = *entries_.front().task;
      const size_t rows = next.rows();
      if (!cut.batch.empty() &&
          (batch_rows + rows > limit || cut.batch.size() >= options_.max_batch_tasks ||
           next.batch_key() != cut.batch.front()->batch_key())) {
        break;
      }
      std::unique_ptr<Task> task = std::move(entries_.front().task);
      entries_.pop_front();
      queued_rows_ -= rows;
      absl::Status keep = task->Dequeue(now);
      if (!keep.ok()) {
        cut.dropped.emplace_back(std::move(task), std::move(keep));
        continue;
      }
      batch_rows += rows;
      cut.batch.push_back(std::move(task));
      if (batch_rows >= limit) break;
    }
    return cut;
  }

  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  size_t queued_rows() const { return queued_rows_; }

 private:
  // The largest preferred batch size the queued rows fill (within max_batch_rows); nullopt
  // when they fill none.
  std::optional<size_t> PreferredRows() const {
    const size_t fillable = std::min(queued_rows_, options_.max_batch_rows);
    std::optional<size_t> preferred;
    for (const size_t rows : options_.preferred_batch_rows) {
      if (rows <= fillable) preferred = rows;
    }
    return preferred;
  }

  struct Entry {
    TimePoint enqueued;
    std::unique_ptr<Task> task;
  };

  const BatchingOptions options_;
  std::deque<Entry> entries_;
  size_t queued_rows_ = 0;
};

}  // namespace model_server::batching
