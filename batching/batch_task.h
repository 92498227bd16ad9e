#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace model_server::batching {

using TimePoint = std::chrono::steady_clock::time_point;

// What the batcher needs of a task: its size, whether it is still worth running as it leaves the
// queue, and a way to end it when it will not run. What running it means is the batch callback's
// business (DynamicBatcher::ProcessBatch).
class BatchTask {
 public:
  virtual ~BatchTask() = default;

  // Rows this task adds to a batch; constant while it is queued.
  virtual size_t rows() const = 0;

  // Tasks share a batch only with tasks of an equal key (e.g. the sizes of their variable
  // dimensions); constant while it is queued.
  virtual absl::Span<const int64_t> batch_key() const { return {}; }

  // The priority it asks for: 1 is served first, 2 next, ...; 0 takes the queue's default level
  // (PriorityOptions). Constant while it is queued.
  virtual uint64_t priority() const { return 0; }

  // How long it asks to wait in the queue at most; 0: it asks nothing. Its level's QueuePolicy
  // decides whether it counts (EffectiveTimeout). Constant while it is queued.
  virtual std::chrono::microseconds timeout() const { return std::chrono::microseconds(0); }

  // Called once, on a batch thread, as the task leaves the queue. OK keeps it in the batch; any
  // other status (e.g. DEADLINE_EXCEEDED, CANCELLED) drops it, and it is then failed with that
  // status.
  virtual absl::Status Dequeue(TimePoint now) = 0;

  // Ends a task that will not run (dropped as it left the queue, rejected for its timeout, or
  // the batcher shut down without running it); called at most once, on a batch thread or the
  // batcher's timeout thread.
  virtual void Fail(absl::Status status) = 0;
};

}  // namespace model_server::batching
