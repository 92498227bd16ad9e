#pragma once

// A latency objective instead of a hand-tuned batching delay: the batch cap and the delay adapt
// online (additive increase, multiplicative decrease, as Clipper's batch sizing does, NSDI 2017)
// from what each batch took. Pure: no clock, no threads; BatchQueue asks it and DynamicBatcher
// tells it what each batch took, under the batcher's mutex.

#include <chrono>
#include <cstddef>
#include <optional>

#include "batching/batch_task.h"

namespace model_server::batching {

// How the batcher adapts to a p99 latency objective (BatchingOptions::latency_objective).
//  - Batch cap (rows): a batch whose forward took longer than half the objective (a request may
//    wait for the batch in progress, then run in the next) lowers the cap to 90 % of that
//    batch's rows (multiplicative decrease, at least 1 row); a full batch that took less raises
//    it by max_rows / 32 (additive increase, at least 1 row), up to max_rows. It starts at
//    max_rows.
//  - Delay: a batch whose oldest request waited and computed longer than the objective halves
//    it; one that took less than half the objective adds objective / 20, up to the slack (half
//    the objective less the mean forward time). It starts at 0.
//  - A partial batch is held for more rows only while requests come faster than the delay: the
//    gap between the last two arrivals and the mean gap (gaps counted at most one objective)
//    are both below it. A lone request after a quiet spell (a gap longer than the delay) runs at
//    once.
class LatencyObjective {
 public:
  using Duration = std::chrono::nanoseconds;

  // `objective` > 0; `max_rows` >= 1 (the batcher's max_batch_rows).
  LatencyObjective(std::chrono::microseconds objective, size_t max_rows);

  // Rows a batch holds at most now (1..max_rows).
  size_t batch_cap() const { return cap_; }
  // How long a partial batch may wait for more rows now.
  Duration delay() const { return delay_; }
  // Whether a partial batch is worth holding for delay(): requests have come faster than it.
  bool ArrivalsExpected() const;

  // A task arrived at `now`.
  void OnArrival(TimePoint now);
  // A batch of `rows` ran: its oldest task had waited `waited` when it was cut and the forward
  // took `compute`.
  void OnBatch(size_t rows, Duration waited, Duration compute);

 private:
  const Duration objective_;
  const size_t max_rows_;
  const size_t step_rows_;
  size_t cap_;
  Duration delay_{0};
  std::optional<Duration> mean_compute_;  // exponentially weighted
  std::optional<TimePoint> last_arrival_;
  std::optional<Duration> last_gap_;
  std::optional<Duration> mean_gap_;  // exponentially weighted
};

}  // namespace model_server::batching
