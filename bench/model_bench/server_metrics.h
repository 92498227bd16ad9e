#pragma once

// The server's own view of a load step, read from its Prometheus endpoint (GET /metrics) before
// and after the step, as perf_analyzer shows Triton's: time queued vs time computing.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace model_server::bench {

// Cumulative counters of one or more servers (summed).
struct ServerCounters {
  double queue_seconds = 0;     // model_server_queue_time_seconds_sum
  double queued = 0;            // model_server_queue_time_seconds_count (requests)
  double compute_seconds = 0;   // model_server_compute_time_seconds_sum
  double batches = 0;           // model_server_compute_time_seconds_count
  double batched_requests = 0;  // model_server_batch_requests_sum
};

// What happened on the servers between two readings.
struct ServerBreakdown {
  double queue_ms_per_request = 0;
  double compute_ms_per_batch = 0;
  double requests_per_batch = 0;
};

// Reads the counters from Prometheus text; a counter the text lacks counts as 0.
ServerCounters ParseServerCounters(const std::string& text);

// Fetches GET /metrics from each host:port and sums the counters. Errors: UNAVAILABLE naming
// the address that did not answer.
absl::StatusOr<ServerCounters> ScrapeServers(const std::vector<std::string>& addresses);

ServerBreakdown Between(const ServerCounters& before, const ServerCounters& after);

}  // namespace model_server::bench
