#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "bench/model_bench/load_generator.h"
#include "bench/model_bench/server_metrics.h"

namespace model_server::bench {

// One measured step of a run (a sweep has several).
struct Step {
  int concurrency = 0;  // closed loop; 0 for an open-loop step
  double rate = 0;      // open loop: offered requests/s; 0 for a closed-loop step
  int64_t rows_per_request = 0;
  LoadResult result;
  // The servers' queue and compute times over the step (warm-up included), with --metrics.
  std::optional<ServerBreakdown> server;

  std::string Label() const;  // "c=64" or "r=1000/s"
};

// The run's settings as flag name and value, shown with the results.
using Settings = std::vector<std::pair<std::string, std::string>>;

// Throughput (req/s, rows/s), latency p50/p90/p99/p99.9/max in ms and errors by code.
void PrintTable(const std::vector<Step>& steps, std::ostream& out);

// With bursts: each step's OK calls and latency p50/p99/max by burst phase (LoadResult).
void PrintPhases(const std::vector<Step>& steps, std::ostream& out);

// Each writer replaces `path`; errors are UNAVAILABLE naming the path. JSON carries the burst
// phases as steps[i].phases when there are any.
absl::Status WriteJson(const Settings& settings, const std::vector<Step>& steps,
                       const std::string& path);
absl::Status WriteCsv(const std::vector<Step>& steps, const std::string& path);
// A self-contained page (inline SVG, no scripts, no network): p50 and p99 latency against
// achieved throughput across the steps, the results table and the settings.
absl::Status WriteHtml(const Settings& settings, const std::vector<Step>& steps,
                       const std::string& path);

}  // namespace model_server::bench
