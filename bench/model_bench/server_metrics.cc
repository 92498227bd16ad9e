#include "bench/model_bench/server_metrics.h"

#include <httplib.h>

#include <sstream>

#include "absl/strings/str_cat.h"

namespace model_server::bench {
namespace {

// The value of the unlabelled sample `name` in Prometheus text, or 0.
double Sample(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ' ') {
      return std::stod(line.substr(name.size() + 1));
    }
  }
  return 0;
}

double Ratio(double numerator, double denominator) {
  return denominator > 0 ? numerator / denominator : 0;
}

}  // namespace

ServerCounters ParseServerCounters(const std::string& text) {
  ServerCounters counters;
  counters.queue_seconds = Sample(text, "model_server_queue_time_seconds_sum");
  counters.queued = Sample(text, "model_server_queue_time_seconds_count");
  counters.compute_seconds = Sample(text, "model_server_compute_time_seconds_sum");
  counters.batches = Sample(text, "model_server_compute_time_seconds_count");
  counters.batched_requests = Sample(text, "model_server_batch_requests_sum");
  return counters;
}

absl::StatusOr<ServerCounters> ScrapeServers(const std::vector<std::string>& addresses) {
  ServerCounters total;
  for (const std::string& address : addresses) {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics address ", address, " is not host:port"));
    }
    httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
    client.set_connection_timeout(2);
    const httplib::Result response = client.Get("/metrics");
    if (!response || response->status != 200) {
      return absl::UnavailableError(absl::StrCat("no metrics from http://", address, "/metrics"));
    }
    const ServerCounters counters = ParseServerCounters(response->body);
    total.queue_seconds += counters.queue_seconds;
    total.queued += counters.queued;
    total.compute_seconds += counters.compute_seconds;
    total.batches += counters.batches;
    total.batched_requests += counters.batched_requests;
  }
  return total;
}

ServerBreakdown Between(const ServerCounters& before, const ServerCounters& after) {
  ServerBreakdown breakdown;
  breakdown.queue_ms_per_request =
      1e3 * Ratio(after.queue_seconds - before.queue_seconds, after.queued - before.queued);
  breakdown.compute_ms_per_batch =
      1e3 * Ratio(after.compute_seconds - before.compute_seconds, after.batches - before.batches);
  breakdown.requests_per_batch =
      Ratio(after.batched_requests - before.batched_requests, after.batches - before.batches);
  return breakdown;
}

}  // namespace model_server::bench
