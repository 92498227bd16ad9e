#pragma once

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/model_bench/latency_histogram.h"

namespace model_server::bench {

inline constexpr char kEvaluateMethod[] = "/ModelService/EvaluateModel";
inline constexpr char kModelInferMethod[] = "/inference.GRPCInferenceService/ModelInfer";

// One step of load: a closed loop (`concurrency` calls always in flight) or an open loop
// (`rate` arrivals per second, latency measured from each call's intended send time so that a
// stalled server shows in the percentiles).
struct LoadOptions {
  // Calls go to these channels round-robin; must not be empty.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  // The unary method called: the seed's EvaluateModel or the Open Inference Protocol's
  // ModelInfer (kModelInferMethod).
  std::string method = kEvaluateMethod;
  // Serialized request messages of `method`, used in turn; must not be empty.
  std::vector<std::string> payloads;
  // Client threads, each with its own completion queue and share of the load.
  int threads = 1;
  // Closed loop: calls kept in flight. Used when rate is 0.
  int concurrency = 1;
  // Open loop: arrivals per second; 0 selects the closed loop.
  double rate = 0;
  // Open loop: exponential gaps between arrivals (Poisson process); false spaces them evenly.
  bool poisson = true;
  // Open loop: calls in flight at most; arrivals beyond wait (their latency still counts from
  // their intended send time).
  int max_in_flight = 20000;
  // Calls sent before warmup has passed are not counted.
  std::chrono::milliseconds warmup{1000};
  // Counted calls are sent during this long after the warmup (unless max_requests stops first).
  std::chrono::milliseconds duration{10000};
  // Stops after this many counted calls; 0 means no limit.
  int64_t max_requests = 0;
  // Per-call deadline.
  std::chrono::milliseconds timeout{10000};
  // Verifies an OK call's serialized reply message; failures count as errors named
  // BAD_RESPONSE. Null skips reading replies altogether.
  std::function<absl::Status(const std::string&)> check;
  // Open loop in bursts: from the step's start (warm-up included), `burst_on` at `rate`, then
  // `burst_off` at `burst_off_rate`, again and again. Zero burst_on: no bursts.
  std::chrono::milliseconds burst_on{0};
  std::chrono::milliseconds burst_off{0};
  double burst_off_rate = 0;
};

// Where a call's intended send time falls in a bursty step, for LoadResult::phases.
enum class BurstPhase {
  kBurst,        // during a burst
  kFirstSecond,  // within a second after a burst ended
  kLater,        // later after a burst
};
inline constexpr size_t kBurstPhases = 3;
const char* BurstPhaseName(BurstPhase phase);

struct LoadResult {
  LatencyHistogram latency;  // of counted calls, OK or not
  int64_t ok = 0;
  // With bursts: the latency and the OK calls of the counted calls sent in each BurstPhase.
  std::array<LatencyHistogram, kBurstPhases> phase_latency;
  std::array<int64_t, kBurstPhases> phase_ok{};
  std::map<std::string, int64_t> errors;  // by gRPC status code name (or BAD_RESPONSE)
  double elapsed_s = 0;  // from the end of the warmup to the last counted completion
  double throughput() const { return elapsed_s > 0 ? ok / elapsed_s : 0; }
  int64_t error_count() const;
};

// Called about 4 times a second from the calling thread: fraction of the step done (by time or
// by requests) and counted completions so far.
using ProgressCallback = std::function<void(double fraction, int64_t completed)>;

// Runs one step and blocks until every call it sent has finished.
LoadResult RunLoad(const LoadOptions& options, const ProgressCallback& progress);

}  // namespace model_server::bench
