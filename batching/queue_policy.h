#pragma once

// Priority levels and their queue policies, as Triton's dynamic batcher configures them
// (ModelDynamicBatching's priority_levels, default_priority_level, default_queue_policy,
// priority_queue_policy; ModelQueuePolicy), in the batcher's own terms: no config proto, no gRPC.
// PriorityQueue (batching/priority_queue.h) applies them.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace model_server::batching {

// What happens to a task whose timeout passes while it waits in the queue.
enum class TimeoutAction {
  // It leaves the queue and is failed with UNAVAILABLE "request timeout expired", as Triton
  // fails it.
  kReject,
  // It moves behind the other waiting tasks of its level and runs later; it is not failed.
  kDelay,
};

// One priority level's queue policy (Triton's ModelQueuePolicy).
struct QueuePolicy {
  // Tasks the level holds at most; one more is refused at once with UNAVAILABLE. 0: no bound of
  // its own (the queue's max_queue_rows still holds).
  size_t max_queue_size = 0;
  // How long a task may wait before timeout_action applies to it; 0: no timeout.
  std::chrono::microseconds default_timeout{0};
  // Whether a task's own timeout (BatchTask::timeout) applies where it is shorter than
  // default_timeout; it never lengthens it. With default_timeout 0 any timeout of its own is
  // shorter.
  bool allow_timeout_override = false;
  // What a task whose timeout passed gets.
  TimeoutAction timeout_action = TimeoutAction::kReject;
};

// The timeout a task that asks for `requested` (0: it asks for none) waits under `policy`; 0:
// none. Triton's rule: the task's own timeout only where the policy allows overrides and it is
// shorter than the default (any non-zero timeout is shorter than none).
std::chrono::microseconds EffectiveTimeout(const QueuePolicy& policy,
                                           std::chrono::microseconds requested);

// The most priority levels a queue may have: each is a queue of its own, and a metric series.
inline constexpr size_t kMaxPriorityLevels = 64;

// The queue's priority levels (Triton's priority_levels and the rest).
struct PriorityOptions {
  // Levels 1 (served first) to `levels`; 0: none, one queue, whatever priority tasks give.
  size_t levels = 0;
  // The level of tasks that give priority 0; from 1 to `levels` when there are levels, else 0.
  size_t default_level = 0;
  // The policy of each level without one of its own (of the one queue without levels).
  QueuePolicy default_policy;
  // Policies of their own, by level (1 to `levels`).
  std::map<size_t, QueuePolicy> level_policies;
};

// Whether a task may be rejected for its timeout: some level REJECTs and has a timeout or lets
// tasks set their own.
bool MayReject(const PriorityOptions& options);

// INVALID_ARGUMENT naming the field for: more levels than kMaxPriorityLevels, a default level
// or a level policy outside 1..levels (or any of them without levels), a negative timeout.
absl::Status ValidatePriorityOptions(const PriorityOptions& options);

// The level a task of `priority` waits in: `default_level` for 0, else `priority` itself;
// without levels, 0 for any priority (as Triton ignores it there). INVALID_ARGUMENT for a
// priority above `levels` (Triton would quietly use the default level instead).
absl::StatusOr<size_t> LevelOf(const PriorityOptions& options, uint64_t priority);

// The level's policy.
const QueuePolicy& PolicyOf(const PriorityOptions& options, size_t level);

// Why a queue policy turned a task away, for the caller's counts.
enum class Refusal {
  kMaxQueueRows,  // the queue held max_queue_rows rows (BatchingOptions)
  kMaxQueueSize,  // its level held max_queue_size tasks
  kTimeout,       // its timeout passed under timeout_action REJECT
};

// Hears of each task a queue policy refused, rejected or delayed, with its level (0 without
// levels). Called with the batcher's mutex held, on the thread that enqueued the task (a refusal)
// or a batcher thread (a timeout): it must be quick, must not block, and must not call the
// batcher.
class QueueEvents {
 public:
  virtual ~QueueEvents() = default;
  virtual void Refused(size_t level, Refusal why) = 0;
  // A task's timeout passed under timeout_action DELAY: it waits on, behind its level's others.
  virtual void Delayed(size_t level) = 0;
};

}  // namespace model_server::batching
