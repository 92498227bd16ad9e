#include "bench/model_bench/latency_histogram.h"

#include <algorithm>
#include <cmath>

namespace model_server::bench {
namespace {

const double kLogGrowth = std::log(1.02);
// Bucket i holds [1.02^i, 1.02^(i+1)) ns; 1.02^1400 ns is about 10^12 s, beyond any latency.
constexpr int kBuckets = 1400;

int BucketOf(int64_t nanos) {
  if (nanos <= 1) return 0;
  const int bucket = static_cast<int>(std::log(static_cast<double>(nanos)) / kLogGrowth);
  return std::min(bucket, kBuckets - 1);
}

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

void LatencyHistogram::Record(int64_t nanos) {
  nanos = std::max<int64_t>(nanos, 0);
  ++counts_[BucketOf(nanos)];
  ++count_;
  sum_ += nanos;
  min_ = std::min(min_, nanos);
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

int64_t LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  const int64_t rank = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(q * count_)), 1, count_);
  int64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const double middle = std::exp((i + 0.5) * kLogGrowth);
      return std::clamp(static_cast<int64_t>(std::llround(middle)), min(), max_);
    }
  }
  return max_;
}

}  // namespace model_server::bench
