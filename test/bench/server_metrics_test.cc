#include "bench/model_bench/server_metrics.h"

#include <catch2/catch.hpp>

namespace model_server::bench {
namespace {

std::string Text(double queue_sum, double queue_count, double compute_sum, double batches,
                 double batched_requests) {
  return "# HELP model_server_queue_time_seconds x\n"
         "# TYPE model_server_queue_time_seconds histogram\n"
         "model_server_queue_time_seconds_bucket{le=\"0.001\"} 3\n"
         "model_server_queue_time_seconds_sum " +
         std::to_string(queue_sum) + "\n" + "model_server_queue_time_seconds_count " +
         std::to_string(queue_count) + "\n" + "model_server_compute_time_seconds_sum " +
         std::to_string(compute_sum) + "\n" + "model_server_compute_time_seconds_count " +
         std::to_string(batches) + "\n" + "model_server_batch_requests_sum " +
         std::to_string(batched_requests) + "\n" + "model_server_batch_requests_count " +
         std::to_string(batches) + "\n";
}

TEST_CASE("server counters are read from Prometheus text", "[server_metrics]") {
  const ServerCounters counters = ParseServerCounters(Text(1.5, 30, 0.25, 5, 30));
  CHECK(counters.queue_seconds == Approx(1.5));
  CHECK(counters.queued == 30);
  CHECK(counters.compute_seconds == Approx(0.25));
  CHECK(counters.batches == 5);
  CHECK(counters.batched_requests == 30);
  CHECK(ParseServerCounters("").queued == 0);
}

TEST_CASE("a step's breakdown is the difference of two readings", "[server_metrics]") {
  const ServerCounters before = ParseServerCounters(Text(1, 10, 0.5, 2, 10));
  const ServerCounters after = ParseServerCounters(Text(1.2, 110, 0.7, 12, 110));
  const ServerBreakdown breakdown = Between(before, after);
  CHECK(breakdown.queue_ms_per_request == Approx(2.0));   // 0.2 s over 100 requests
  CHECK(breakdown.compute_ms_per_batch == Approx(20.0));  // 0.2 s over 10 batches
  CHECK(breakdown.requests_per_batch == Approx(10.0));
  CHECK(Between(after, after).requests_per_batch == 0);  // no batches: no division by zero
}

TEST_CASE("an address without a metrics endpoint is an error", "[server_metrics]") {
  CHECK(ScrapeServers({"127.0.0.1:1"}).status().code() == absl::StatusCode::kUnavailable);
  CHECK(ScrapeServers({"no-port"}).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace model_server::bench
