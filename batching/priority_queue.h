#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "batching/batch_task.h"
#include "batching/queue_policy.h"

namespace model_server::batching {

// The waiting tasks of a batcher by priority level, each level under its QueuePolicy: the order
// in which they are served (level 1 first; within a level, arrival order, then the tasks its
// DELAY timeouts moved back, in the order their timeouts passed), each level's bound, and each
// task's timeout. Knows nothing of batches (BatchQueue cuts them from the front). Time is passed
// in. Not thread-safe; BatchQueue's owner guards it.
template <typename Task>
class PriorityQueue {
  static_assert(std::is_base_of_v<BatchTask, Task>, "a queued task is a BatchTask");

 public:
  // `options` must be valid (ValidatePriorityOptions).
  explicit PriorityQueue(const PriorityOptions& options)
      : options_(options), levels_(std::max<size_t>(options.levels, 1)) {
    for (size_t index = 0; index < levels_.size(); ++index) {
      levels_[index].policy = PolicyOf(options_, LevelNumber(index));
    }
  }

  // The level `task` waits in (see LevelOf): INVALID_ARGUMENT for a priority outside the levels.
  absl::StatusOr<size_t> LevelFor(const Task& task) const {
    return LevelOf(options_, task.priority());
  }

  // Queues `task` at the back of `level` (from LevelFor) at `now` and takes ownership. On
  // UNAVAILABLE (the level holds its max_queue_size tasks) `task` is left with the caller.
  absl::Status Push(std::unique_ptr<Task>& task, size_t level, TimePoint now) {
    Level& queue = levels_[Index(level)];
    const QueuePolicy& policy = queue.policy;
    if (policy.max_queue_size > 0 && queue.size() >= policy.max_queue_size) {
      return absl::UnavailableError(absl::StrCat("exceeds maximum queue size: priority level ",
                                                 level, " holds ", queue.size(), " of ",
                                                 policy.max_queue_size, " requests; retry later"));
    }
    const std::chrono::microseconds timeout = EffectiveTimeout(policy, task->timeout());
    queue.waiting.push_back(Entry{now, level, std::move(task), std::nullopt});
    if (timeout.count() > 0) {
      const auto entry = std::prev(queue.waiting.end());
      entry->deadline = queue.deadlines.emplace(now + timeout, entry);
    }
    ++size_;
    return absl::OkStatus();
  }

  // Applies every timeout that has passed at `now`: under DELAY the task moves behind its level's
  // others (and has no timeout any more); under REJECT it leaves the queue and is returned, with
  // its level, for the caller to fail. `delayed` gets the level of each task delayed.
  std::vector<std::pair<std::unique_ptr<Task>, size_t>> Expire(TimePoint now,
                                                               std::vector<size_t>* delayed) {
    std::vector<std::pair<std::unique_ptr<Task>, size_t>> rejected;
    for (Level& queue : levels_) {
      while (!queue.deadlines.empty() && queue.deadlines.begin()->first <= now) {
        const auto entry = queue.deadlines.begin()->second;
        queue.deadlines.erase(queue.deadlines.begin());
        entry->deadline.reset();
        if (queue.policy.timeout_action == TimeoutAction::kDelay) {
          delayed->push_back(entry->level);
          queue.delayed.splice(queue.delayed.end(), queue.waiting, entry);
          continue;
        }
        rejected.emplace_back(std::move(entry->task), entry->level);
        queue.waiting.erase(entry);
        --size_;
      }
    }
    return rejected;
  }

  // The task served next, and when it was queued; null when the queue is empty.
  const Task* Front() const {
    const Entries* entries = FrontEntries();
    return entries == nullptr ? nullptr : entries->front().task.get();
  }
  TimePoint FrontEnqueued() const { return FrontEntries()->front().enqueued; }

  // Takes the task served next out of the queue; the queue must not be empty.
  std::unique_ptr<Task> PopFront() {
    Level& queue = levels_[FrontLevel()];
    Entries& entries = !queue.waiting.empty() ? queue.waiting : queue.delayed;
    Entry& entry = entries.front();
    if (entry.deadline) queue.deadlines.erase(*entry.deadline);
    std::unique_ptr<Task> task = std::move(entry.task);
    entries.pop_front();
    --size_;
    return task;
  }

  // When the task that has waited longest was queued; nullopt when the queue is empty.
  std::optional<TimePoint> OldestEnqueued() const {
    std::optional<TimePoint> oldest;
    for (const Level& queue : levels_) {
      for (const Entries* entries : {&queue.waiting, &queue.delayed}) {
        if (!entries->empty() && (!oldest || entries->front().enqueued < *oldest)) {
          oldest = entries->front().enqueued;
        }
      }
    }
    return oldest;
  }

  // The earliest time at which a REJECT timeout passes; nullopt when none is pending. (A DELAY
  // timeout changes only the order, which matters only when a batch is cut.)
  std::optional<TimePoint> NextRejection() const {
    std::optional<TimePoint> next;
    for (const Level& queue : levels_) {
      if (queue.policy.timeout_action != TimeoutAction::kReject || queue.deadlines.empty()) {
        continue;
      }
      const TimePoint at = queue.deadlines.begin()->first;
      if (!next || at < *next) next = at;
    }
    return next;
  }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // Tasks waiting in each level, as (level, tasks), level 1 first (one entry, level 0, without
  // levels).
  std::vector<std::pair<size_t, size_t>> SizePerLevel() const {
    std::vector<std::pair<size_t, size_t>> sizes;
    for (size_t index = 0; index < levels_.size(); ++index) {
      sizes.emplace_back(LevelNumber(index), levels_[index].size());
    }
    return sizes;
  }

 private:
  struct Entry;
  using Entries = std::list<Entry>;
  using Deadlines = std::multimap<TimePoint, typename Entries::iterator>;
  struct Entry {
    TimePoint enqueued;
    size_t level = 0;
    std::unique_ptr<Task> task;
    std::optional<typename Deadlines::iterator> deadline;  // while a timeout is pending
  };
  struct Level {
    QueuePolicy policy;
    Entries waiting;      // in arrival order
    Entries delayed;      // DELAY timeouts passed, in the order they passed
    Deadlines deadlines;  // the pending timeouts of `waiting`
    size_t size() const { return waiting.size() + delayed.size(); }
  };

  size_t Index(size_t level) const { return options_.levels == 0 ? 0 : level - 1; }
  size_t LevelNumber(size_t index) const { return options_.levels == 0 ? 0 : index + 1; }

  // The index of the level served next: the first that holds a task; levels_.size() when none
  // does.
  size_t FrontLevel() const {
    size_t index = 0;
    while (index < levels_.size() && levels_[index].size() == 0) ++index;
    return index;
  }
  // The tasks served next: the front level's waiting ones, else its delayed ones; null when the
  // queue is empty.
  const Entries* FrontEntries() const {
    const size_t index = FrontLevel();
    if (index == levels_.size()) return nullptr;
    const Level& queue = levels_[index];
    return !queue.waiting.empty() ? &queue.waiting : &queue.delayed;
  }

  const PriorityOptions options_;
  std::vector<Level> levels_;  // by Index(level)
  size_t size_ = 0;
};

}  // namespace model_server::batching
