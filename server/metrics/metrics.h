#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "server/metrics/bounded_http.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace model_server::server::metrics {

// One GPU's memory as its allocator reports it (libtorch's CUDA caching allocator), read at each
// scrape.
struct DeviceMemory {
  int device = 0;                    // the CUDA device index
  int64_t allocated_bytes = 0;       // held by tensors now
  int64_t reserved_bytes = 0;        // held by the allocator (tensors' and cached)
  int64_t peak_allocated_bytes = 0;  // the most allocated_bytes since the process started
  int64_t alloc_retries = 0;  // allocations that had to free the cache and retry (since start)
  int64_t ooms = 0;           // allocations that failed even then (since start)
};

struct MetricsOptions {
  // host:port for HTTP GET /metrics ("[::1]:8002" for IPv6); "" serves no HTTP (Render still
  // works); port 0 picks a free port (see ServerMetrics::port).
  std::string address = "0.0.0.0:8002";
  // What HTTP clients can hold: threads, queue, the per-connection deadline, request size.
  HttpLimits http = {};
  // Each GPU's memory, read at each scrape (on the scraping thread); null or empty: no GPU
  // series.
  std::function<std::vector<DeviceMemory>()> device_memory = nullptr;
};

// The RPCs whose requests are counted; rendered as the `method` label: the seed's ModelService
// and the Open Inference Protocol's GRPCInferenceService.
enum class Method {
  kEvaluateModel,
  kHealthCheck,
  kModelInfer,
  kServerLive,
  kServerReady,
  kModelReady,
  kServerMetadata,
  kModelMetadata,
  kModelConfig,
  kModelStatistics,
  kRepositoryIndex,
  kRepositoryModelLoad,
  kRepositoryModelUnload,
};
inline constexpr size_t kMethodCount = 13;

// gRPC status codes are 0..16; any other value counts as UNKNOWN, as gRPC itself treats codes
// it does not know.
inline constexpr int kGrpcCodeCount = 17;

// A Prometheus histogram with fixed upper bounds. Observe is lock-free (relaxed atomics) and
// allocates nothing, so any number of threads may call it concurrently; Render may run at the
// same time and sees each bucket's value as of some instant (the sum may lag the buckets by
// the observations in flight).
class Histogram {
 public:
  // `upper_bounds` must be strictly increasing and finite; +Inf is implied.
  explicit Histogram(std::vector<double> upper_bounds);

  // Counts `value` in the first bucket whose bound is >= value. NaN is ignored.
  void Observe(double value);

  // Appends `name`_bucket{labels,le=...} (cumulative), `name`_sum and `name`_count lines.
  // `labels` is "" or a rendered label list without braces, e.g. `method="HealthCheck"`.
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // Observations so far, and their sum.
  uint64_t count() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> upper_bounds_;
  // Per-bucket (not cumulative) counts; the last one is the +Inf bucket.
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

// Priority levels counted apart in the queue metrics: 0 (a model without levels) to this one;
// higher levels count as this one (batching::kMaxPriorityLevels).
inline constexpr size_t kMaxPriorityLevel = 64;

// The queue policy that turned a request away; rendered as the `policy` label.
enum class QueueRejection {
  kMaxQueueRows,  // "max_queue_rows": the model's queue held --max-queue-rows rows
  kMaxQueueSize,  // "max_queue_size": its priority level held its max_queue_size requests
  kTimeout,       // "timeout": its queue timeout passed under timeout_action REJECT
};
inline constexpr size_t kQueueRejectionCount = 3;

// What the response cache holds and has done, read at each scrape.
struct CacheStats {
  uint64_t capacity_bytes = 0;
  uint64_t bytes = 0;
  uint64_t entries = 0;
  uint64_t insertions = 0;
  uint64_t evictions = 0;
  uint64_t invalidations = 0;
};

// Bucket bounds shared by the time histograms: 100µs .. 10s, 1-2.5-5 per decade.
std::vector<double> LatencyBucketsSeconds();
// 1, 2, 4, ... 2^max_exponent.
std::vector<double> PowerOfTwoBuckets(int max_exponent);

// One served model's metrics, each series labelled model="<name>" (model_server_* families
// below, see docs/METRICS.md). Made by ServerMetrics::AddModel and owned by it. Record*, Set* and
// Add* are lock-free (relaxed atomics) and allocate nothing: any thread, on the request path.
class ModelMetrics {
 public:
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  const std::string& name() const { return name_; }

  // Per request: time from enqueue in the batcher to the cut of the batch that takes it.
  void RecordQueueTime(double seconds);
  // Per batch: the requests and rows it carried, the forward passes it took (more than one when
  // a failed batch was rerun request by request) and how long they took.
  void RecordBatch(size_t requests, size_t rows, size_t forward_passes, double compute_seconds);
  // A request run to completion on the thread that received it (the server was idle), not
  // queued; its batch (of one) is recorded as well.
  void RecordIdleRun() { idle_requests_.fetch_add(1, std::memory_order_relaxed); }
  // The serving version's load and warm-up times (summed over its instances) and its number.
  void SetLoadSeconds(double seconds);
  void SetWarmupSeconds(double seconds);
  void SetVersion(int64_t version);
  // One attempt to load a new version: it serves now (ok), or it was refused.
  void RecordReload(bool ok);
  // A request of priority level `priority` that a queue policy turned away.
  void RecordQueueRejection(size_t priority, QueueRejection why);
  // A request of priority level `priority` whose queue timeout passed: rejected (REJECT) or
  // moved back (DELAY).
  void RecordQueueTimeout(size_t priority, bool delayed);
  // A request answered from the response cache, or computed and then cached.
  void RecordCacheHit();
  void RecordCacheMiss();
  // Forward passes that ran out of memory, and that found the device lost (handlers/fault.h).
  void RecordFaults(size_t out_of_memory, size_t device_lost);

  // What a scrape reads from the model itself: requests waiting in its queue and versions in
  // memory (more than one while an old version finishes its last batches). Null reports 0.
  // Thread-safe; a scrape after the call no longer uses the previous functions.
  void SetSources(std::function<size_t()> queued_requests, std::function<size_t()> loaded_versions);
  // The same for the requests waiting in each priority level, as (level, requests) pairs (level
  // 0 for a model without levels); null reports none.
  void SetQueueDepthSource(std::function<std::vector<std::pair<size_t, size_t>>()> queue_depth);

  // Totals for logs and tests; any thread.
  uint64_t batches() const { return batch_requests_.count(); }
  uint64_t batched_requests() const { return static_cast<uint64_t>(batch_requests_.sum()); }
  uint64_t forward_passes() const { return forward_passes_.load(std::memory_order_relaxed); }
  uint64_t idle_requests() const { return idle_requests_.load(std::memory_order_relaxed); }
  uint64_t reloads(bool ok) const { return reloads_[ok ? 1 : 0].load(std::memory_order_relaxed); }
  uint64_t queue_rejections(size_t priority, QueueRejection why) const;
  uint64_t queue_timeouts(size_t priority, bool delayed) const;
  uint64_t cache_hits() const { return cache_hits_.load(std::memory_order_relaxed); }
  uint64_t cache_misses() const { return cache_misses_.load(std::memory_order_relaxed); }
  uint64_t out_of_memory_faults() const { return out_of_memory_.load(std::memory_order_relaxed); }
  uint64_t device_lost_faults() const { return device_lost_.load(std::memory_order_relaxed); }

 private:
  friend class ServerMetrics;
  explicit ModelMetrics(std::string name);

  const std::string name_;
  const std::string label_;  // model="<name>"
  Histogram queue_time_;
  Histogram compute_time_;
  Histogram batch_rows_;
  Histogram batch_requests_;
  std::atomic<uint64_t> forward_passes_{0};
  std::atomic<uint64_t> idle_requests_{0};
  std::atomic<double> load_seconds_{0.0};
  std::atomic<double> warmup_seconds_{0.0};
  std::atomic<int64_t> version_{0};
  std::array<std::atomic<uint64_t>, 2> reloads_{};  // [failed, ok]
  // [policy][priority]
  std::array<std::array<std::atomic<uint64_t>, kMaxPriorityLevel + 1>, kQueueRejectionCount>
      queue_rejections_{};
  // [delayed][priority]
  std::array<std::array<std::atomic<uint64_t>, kMaxPriorityLevel + 1>, 2> queue_timeouts_{};
  std::atomic<uint64_t> cache_hits_{0};
  std::atomic<uint64_t> cache_misses_{0};
  std::atomic<uint64_t> out_of_memory_{0};
  std::atomic<uint64_t> device_lost_{0};
  mutable base::Mutex sources_mu_;
  std::function<size_t()> queued_requests_ ABSL_GUARDED_BY(sources_mu_);
  std::function<size_t()> loaded_versions_ ABSL_GUARDED_BY(sources_mu_);
  std::function<std::vector<std::pair<size_t, size_t>>()> queue_depth_ ABSL_GUARDED_BY(sources_mu_);
};

// The server's Prometheus metrics (model_server_*, see docs/METRICS.md), those of each model
// (ModelMetrics) and, optionally, the HTTP endpoint that serves them. Created once per server;
// the transport records into it from its completion-queue, codec and batch threads.
class ServerMetrics {
 public:
  // Starts the HTTP endpoint (GET /metrics; its own listener thread plus options.http.threads
  // workers) when options.address is not empty. Errors: INVALID_ARGUMENT when the address is not
  // host:port, UNAVAILABLE when it can't be bound (in use, or no such local address).
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Start(const MetricsOptions& options);

  // Stops the HTTP endpoint and joins its threads. Recording must have stopped.
  ~ServerMetrics();

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The bound HTTP port; 0 without HTTP.
  int port() const { return port_; }

  // All Record*/Set*/Add* calls are thread-safe, lock-free (relaxed atomics) and allocate
  // nothing, so they may be called from any thread on the request path.

  // The metrics of the model `name` (made on the first call for a name, the same object on every
  // later one: a model reloaded or loaded again keeps its series), rendered from now on; valid
  // as long as this object. Any thread (takes a lock: not for the request path).
  ModelMetrics* AddModel(const std::string& name);

  // One finished RPC: its final gRPC status code (0..16; others count as UNKNOWN) and the time
  // from arrival to completion.
  void RecordRequest(Method method, int grpc_status_code, double latency_seconds);
  // Gauge of EvaluateModel and ModelInfer calls accepted and not finished: +1 on arrival, -1 on
  // completion. Returns the gauge after the change (1 on arrival: no other call in flight).
  int64_t AddInFlight(int64_t delta);
  // What a scrape reads of the response cache; null (no cache) reports zeros. Thread-safe; a
  // scrape after the call no longer uses the previous function.
  void SetCacheSource(std::function<CacheStats()> cache);

  // Every metric in the Prometheus text exposition format 0.0.4. Any thread.
  std::string Render() const;

  // Totals for logs and tests, over all models; any thread.
  uint64_t requests(Method method, int grpc_status_code) const;
  uint64_t batches() const;
  uint64_t batched_requests() const;
  uint64_t forward_passes() const;
  uint64_t idle_requests() const;
  // The in-flight gauge (AddInFlight).
  int64_t in_flight() const { return inflight_requests_.load(std::memory_order_relaxed); }

 private:
  explicit ServerMetrics(std::function<std::vector<DeviceMemory>()> device_memory);
  absl::Status StartHttp(const std::string& address, const HttpLimits& limits);

  // requests_total, indexed [method][code].
  std::array<std::array<std::atomic<uint64_t>, kGrpcCodeCount>, kMethodCount> requests_{};
  std::array<Histogram, kMethodCount> request_latency_;
  std::atomic<int64_t> inflight_requests_{0};
  mutable base::Mutex cache_mu_;
  std::function<CacheStats()> cache_ ABSL_GUARDED_BY(cache_mu_);
  mutable base::Mutex models_mu_;
  std::vector<std::unique_ptr<ModelMetrics>> models_ ABSL_GUARDED_BY(models_mu_);  // never shrinks
  const std::function<std::vector<DeviceMemory>()> device_memory_;

  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int port_ = 0;
};

}  // namespace model_server::server::metrics
