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
#include "batching/latency_objective.h"
#include "batching/priority_queue.h"
#include "batching/queue_policy.h"

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
  // Priority levels and each level's queue policy (bound, timeout); by default one queue
  // without a bound of its own or timeouts.
  PriorityOptions priorities;
  // A p99 latency objective: > 0 lets the batcher adapt its batch cap and delay to it
  // (LatencyObjective), in place of max_queue_delay; 0: off, the fixed options above hold.
  std::chrono::microseconds latency_objective{0};
  // Hears of the tasks queue policies refuse, reject or delay; may be null. Outlives the queue.
  QueueEvents* events = nullptr;
};

absl::Status ValidateBatchingOptions(const BatchingOptions& options);

// A batch cut from the queue: the tasks to run together, in the order they are served (see
// PriorityQueue), and the tasks that were dropped instead (deadline passed, client gone, a
// REJECT timeout), each with the reason.
template <typename Task>
struct Cut {
  std::vector<std::unique_ptr<Task>> batch;
  std::vector<std::pair<std::unique_ptr<Task>, absl::Status>> dropped;
  // When the batch's task that had waited longest was queued; set when `batch` is not empty.
  TimePoint oldest_enqueued{};
};

// The batching policy, without threads or clocks of its own: time is passed in, so tests drive
// it with any time they like. Tasks wait in a PriorityQueue (levels, their bounds and timeouts);
// a batch is cut from its front by size, delay, preferred sizes and batch key, and, with a
// latency objective, by the cap and delay LatencyObjective picks. Not thread-safe;
// DynamicBatcher guards it with its mutex.
template <typename Task>
class BatchQueue {
  static_assert(std::is_base_of_v<BatchTask, Task>, "a batched task is a BatchTask");

 public:
  // `options` must be valid (ValidateBatchingOptions).
  explicit BatchQueue(const BatchingOptions& options)
      : options_(options), waiting_(options.priorities) {
    if (options.latency_objective.count() > 0) {
      objective_.emplace(options.latency_objective, options.max_batch_rows);
    }
  }

  // Takes ownership of `task` on OK. Otherwise `task` is left with the caller, untouched:
  // INVALID_ARGUMENT when its priority is outside the levels, RESOURCE_EXHAUSTED when the queue
  // holds max_queue_rows rows, UNAVAILABLE when its level holds its max_queue_size tasks.
  absl::Status Push(std::unique_ptr<Task>& task, TimePoint now) {
    const absl::StatusOr<size_t> level = waiting_.LevelFor(*task);
    if (!level.ok()) return level.status();
    const size_t rows = task->rows();
    if (queued_rows_ + rows > options_.max_queue_rows) {
      Tell(*level, Refusal::kMaxQueueRows);
      return absl::ResourceExhaustedError(
          absl::StrCat("server queue is full (", queued_rows_, " of ", options_.max_queue_rows,
                       " rows queued, request has ", rows, "); retry later"));
    }
    if (absl::Status pushed = waiting_.Push(task, *level, now); !pushed.ok()) {
      Tell(*level, Refusal::kMaxQueueSize);
      return pushed;
    }
    queued_rows_ += rows;
    if (objective_) objective_->OnArrival(now);
    return absl::OkStatus();
  }

  // The earliest time at which Pop returns a batch or a task it rejects for its timeout; nullopt
  // while the queue is empty.
  std::optional<TimePoint> ReadyAt() const {
    std::optional<TimePoint> ready = BatchReadyAt();
    const std::optional<TimePoint> rejection = waiting_.NextRejection();
    if (rejection && (!ready || *rejection < *ready)) ready = rejection;
    return ready;
  }

  // Applies the timeouts passed at `now` (REJECT ones come back in `dropped`), then pops the next
  // batch if it is ready at `now` (or at once when `flush`). A batch holds queued tasks in the
  // order they are served while their rows fit the batch's limit and their batch keys equal the
  // first one's, and at least one task.
  Cut<Task> Pop(TimePoint now, bool flush) {
    Cut<Task> cut;
    cut.dropped = Expire(now);
    const std::optional<TimePoint> ready_at = BatchReadyAt();
    if (!ready_at || (!flush && now < *ready_at)) return cut;
    const size_t limit = PreferredRows().value_or(BatchCap());
    size_t batch_rows = 0;
    while (!waiting_.empty()) {
      const Task& next = *waiting_.Front();
      const size_t rows = next.rows();
      if (!cut.batch.empty() &&
          (batch_rows + rows > limit || cut.batch.size() >= options_.max_batch_tasks ||
           next.batch_key() != cut.batch.front()->batch_key())) {
        break;
      }
      const TimePoint enqueued = waiting_.FrontEnqueued();
      std::unique_ptr<Task> task = waiting_.PopFront();
      queued_rows_ -= rows;
      absl::Status keep = task->Dequeue(now);
      if (!keep.ok()) {
        cut.dropped.emplace_back(std::move(task), std::move(keep));
        continue;
      }
      if (cut.batch.empty() || enqueued < cut.oldest_enqueued) cut.oldest_enqueued = enqueued;
      batch_rows += rows;
      cut.batch.push_back(std::move(task));
      if (batch_rows >= limit) break;
    }
    return cut;
  }

  // Applies the timeouts passed at `now`: DELAY ones move their tasks back; REJECT ones are
  // returned, each with its UNAVAILABLE status, for the caller to fail.
  std::vector<std::pair<std::unique_ptr<Task>, absl::Status>> Expire(TimePoint now) {
    std::vector<std::pair<std::unique_ptr<Task>, absl::Status>> rejected;
    std::vector<size_t> delayed;
    for (auto& [task, level] : waiting_.Expire(now, &delayed)) {
      queued_rows_ -= task->rows();
      Tell(level, Refusal::kTimeout);
      rejected.emplace_back(std::move(task),
                            absl::UnavailableError("request timeout expired: it waited in the "
                                                   "queue longer than its timeout"));
    }
    if (options_.events != nullptr) {
      for (const size_t level : delayed) options_.events->Delayed(level);
    }
    return rejected;
  }

  // The earliest time a REJECT timeout passes; nullopt when none is pending.
  std::optional<TimePoint> NextRejection() const { return waiting_.NextRejection(); }

  // Tells the latency objective (if any) what a batch cut by Pop took: its rows, how long its
  // oldest task had waited when it was cut, how long its forward took.
  void RecordBatch(size_t rows, std::chrono::nanoseconds waited, std::chrono::nanoseconds compute) {
    if (objective_) objective_->OnBatch(rows, waited, compute);
  }

  bool empty() const { return waiting_.empty(); }
  size_t size() const { return waiting_.size(); }
  size_t queued_rows() const { return queued_rows_; }
  // Tasks waiting in each priority level (see PriorityQueue::SizePerLevel).
  std::vector<std::pair<size_t, size_t>> SizePerLevel() const { return waiting_.SizePerLevel(); }
  // The rows a batch holds at most now (max_batch_rows, or less under a latency objective).
  size_t BatchCap() const {
    return objective_ ? std::min(objective_->batch_cap(), options_.max_batch_rows)
                      : options_.max_batch_rows;
  }
  // How long a partial batch waits for more rows now.
  std::chrono::nanoseconds Delay() const {
    if (!objective_) return options_.max_queue_delay;
    return objective_->ArrivalsExpected() ? objective_->delay() : std::chrono::nanoseconds(0);
  }

 private:
  // The earliest time at which Pop cuts a batch; nullopt while the queue is empty.
  std::optional<TimePoint> BatchReadyAt() const {
    const std::optional<TimePoint> oldest = waiting_.OldestEnqueued();
    if (!oldest) return std::nullopt;
    const bool full = queued_rows_ >= BatchCap() || waiting_.size() >= options_.max_batch_tasks ||
                      PreferredRows().has_value();
    if (full) return *oldest;
    return *oldest + std::chrono::duration_cast<TimePoint::duration>(Delay());
  }

  // The largest preferred batch size the queued rows fill (within the batch cap); nullopt when
  // they fill none.
  std::optional<size_t> PreferredRows() const {
    const size_t fillable = std::min(queued_rows_, BatchCap());
    std::optional<size_t> preferred;
    for (const size_t rows : options_.preferred_batch_rows) {
      if (rows <= fillable) preferred = rows;
    }
    return preferred;
  }

  void Tell(size_t level, Refusal why) const {
    if (options_.events != nullptr) options_.events->Refused(level, why);
  }

  const BatchingOptions options_;
  PriorityQueue<Task> waiting_;
  std::optional<LatencyObjective> objective_;  // with a latency objective
  size_t queued_rows_ = 0;
};

}  // namespace model_server::batching
