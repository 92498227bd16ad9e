#include "batching/latency_objective.h"

#include <algorithm>

namespace model_server::batching {
namespace {

// Weight of the newest sample in the exponentially weighted means.
constexpr double kNewest = 0.125;

LatencyObjective::Duration Mix(std::optional<LatencyObjective::Duration> mean,
                               LatencyObjective::Duration sample) {
  if (!mean) return sample;
  return LatencyObjective::Duration(static_cast<int64_t>(
      (1 - kNewest) * static_cast<double>(mean->count()) + kNewest * sample.count()));
}

}  // namespace

LatencyObjective::LatencyObjective(std::chrono::microseconds objective, size_t max_rows)
    : objective_(objective),
      max_rows_(std::max<size_t>(max_rows, 1)),
      step_rows_(std::max<size_t>(max_rows_ / 32, 1)),
      cap_(max_rows_) {}

bool LatencyObjective::ArrivalsExpected() const {
  return delay_.count() > 0 && last_gap_ && mean_gap_ && *last_gap_ < delay_ && *mean_gap_ < delay_;
}

void LatencyObjective::OnArrival(TimePoint now) {
  if (last_arrival_) {
    const Duration gap = std::max(Duration(0), now - *last_arrival_);
    last_gap_ = gap;
    // A quiet spell counts as one objective's gap, so that the mean forgets it within a few
    // arrivals once traffic resumes.
    mean_gap_ = Mix(mean_gap_, std::min(gap, objective_));
  }
  last_arrival_ = now;
}

void LatencyObjective::OnBatch(size_t rows, Duration waited, Duration compute) {
  const Duration budget = objective_ / 2;
  mean_compute_ = Mix(mean_compute_, compute);
  if (compute > budget) {
    const size_t ran = std::max<size_t>(std::min(cap_, rows), 1);
    cap_ = std::max<size_t>(ran * 9 / 10, 1);
  } else if (rows >= cap_) {
    cap_ = std::min(cap_ + step_rows_, max_rows_);
  }
  const Duration latency = waited + compute;
  if (latency > objective_) {
    delay_ /= 2;
  } else if (latency < objective_ / 2) {
    const Duration slack = std::max(Duration(0), budget - *mean_compute_);
    delay_ = std::min(delay_ + objective_ / 20, slack);
  }
}

}  // namespace model_server::batching
