#pragma once

#include <cstdint>
#include <vector>

namespace model_server::bench {

// Latencies in nanoseconds, in buckets whose bounds grow by 2 % each, so any quantile comes back
// within 1 % of the exact sample at that rank (the bucket's geometric middle is at most a
// factor sqrt(1.02) from either bound). Min, max and mean are exact. Not thread-safe: keep one
// per thread and Merge.
class LatencyHistogram {
 public:
  LatencyHistogram();

  void Record(int64_t nanos);
  void Merge(const LatencyHistogram& other);

  int64_t count() const { return count_; }
  int64_t min() const { return count_ > 0 ? min_ : 0; }
  int64_t max() const { return max_; }
  double mean() const { return count_ > 0 ? static_cast<double>(sum_) / count_ : 0.0; }

  // The sample of rank ceil(q * count) (q in [0, 1]), within 1 %; 0 when empty.
  int64_t Quantile(double q) const;

 private:
  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t sum_ = 0;
  int64_t min_ = INT64_MAX;
  int64_t max_ = 0;
};

}  // namespace model_server::bench
