#include "bench/model_bench/latency_histogram.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <random>

namespace model_server::bench {
namespace {

TEST_CASE("Quantiles are within 1% of the exact samples") {
  std::mt19937_64 random(42);
  std::lognormal_distribution<double> latency(std::log(2e6), 1.0);  // around 2 ms, wide
  std::vector<int64_t> samples;
  LatencyHistogram histogram;
  for (int i = 0; i < 100000; ++i) {
    samples.push_back(static_cast<int64_t>(latency(random)) + 1000);
    histogram.Record(samples.back());
  }
  std::sort(samples.begin(), samples.end());
  for (const double q : {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    INFO("q = " << q);
    const int64_t rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * samples.size())));
    const double exact = samples[rank - 1];
    CHECK(std::abs(histogram.Quantile(q) - exact) <= 0.01 * exact);
  }
  CHECK(histogram.count() == 100000);
  CHECK(histogram.min() == samples.front());
  CHECK(histogram.max() == samples.back());
}

TEST_CASE("Merge adds counts and keeps exact extremes") {
  LatencyHistogram fast, slow;
  for (int i = 0; i < 90; ++i) fast.Record(1000000);   // 1 ms
  for (int i = 0; i < 10; ++i) slow.Record(50000000);  // 50 ms
  fast.Merge(slow);
  CHECK(fast.count() == 100);
  CHECK(fast.min() == 1000000);
  CHECK(fast.max() == 50000000);
  CHECK(fast.mean() == Approx(5.9e6));
  CHECK(fast.Quantile(0.9) == Approx(1e6).epsilon(0.01));
  CHECK(fast.Quantile(0.91) == Approx(5e7).epsilon(0.01));
}

TEST_CASE("An empty histogram reports zeros") {
  LatencyHistogram empty;
  CHECK(empty.Quantile(0.99) == 0);
  CHECK(empty.max() == 0);
  CHECK(empty.min() == 0);
}

}  // namespace
}  // namespace model_server::bench
