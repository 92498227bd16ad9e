#include "server/metrics/metrics.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace model_server::server::metrics {
namespace {

// Where a gRPC status code is counted: its own slot, or UNKNOWN's (2) for codes outside 0..16.
int CodeIndex(int grpc_status_code) {
  return grpc_status_code >= 0 && grpc_status_code < kGrpcCodeCount ? grpc_status_code : 2;
}

// "OK", "CANCELLED", ...: gRPC and absl share the code numbers and their names.
std::string CodeName(int grpc_status_code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(CodeIndex(grpc_status_code)));
}

constexpr const char* kContentType = "text/plain; version=0.0.4";

const char* MethodName(Method method) {
  switch (method) {
    case Method::kEvaluateModel:
      return "EvaluateModel";
    case Method::kHealthCheck:
      return "HealthCheck";
    case Method::kModelInfer:
      return "ModelInfer";
    case Method::kServerLive:
      return "ServerLive";
    case Method::kServerReady:
      return "ServerReady";
    case Method::kModelReady:
      return "ModelReady";
    case Method::kServerMetadata:
      return "ServerMetadata";
    case Method::kModelMetadata:
      return "ModelMetadata";
    case Method::kModelConfig:
      return "ModelConfig";
    case Method::kModelStatistics:
      return "ModelStatistics";
    case Method::kRepositoryIndex:
      return "RepositoryIndex";
    case Method::kRepositoryModelLoad:
      return "RepositoryModelLoad";
    case Method::kRepositoryModelUnload:
      return "RepositoryModelUnload";
  }
  return "unknown";
}

// Prometheus sample values: shortest text that reads back as the same double.
void AppendValue(double value, std::string* out) {
  if (std::isnan(value)) {
    out->append("NaN");
  } else if (std::isinf(value)) {
    out->append(value > 0 ? "+Inf" : "-Inf");
  } else {
    char buffer[32];
    auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
    out->append(buffer, result.ptr);
  }
}

void AppendValue(int64_t value, std::string* out) { absl::StrAppend(out, value); }

// Bucket bounds are round numbers; %g style keeps them readable ("0.00025", not "2.5e-04"),
// and stable across scrapes, which matters because `le` is part of the series identity.
std::string BoundLabel(double bound) { return absl::StrCat(bound); }

void AppendHeader(const char* name, const char* type, const char* help, std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

template <typename T>
void AppendSample(const char* name, T value, std::string* out) {
  absl::StrAppend(out, name, " ");
  AppendValue(value, out);
  out->push_back('\n');
}

// The hot path promises no locks; a double CAS loop is only lock-free where the hardware has it.
static_assert(std::atomic<double>::is_always_lock_free);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

void AddDouble(std::atomic<double>* target, double delta) {
  double current = target->load(std::memory_order_relaxed);
  while (!target->compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

// Accepts the port only once; httplib's default (SO_REUSEPORT) would let a second server,
// or a gRPC listener, bind the same port and silently split the scrapes.
void PlainBindSocketOptions(int socket) {
  int yes = 1;
  // SO_REUSEADDR only lets a restart bind while old connections sit in TIME_WAIT.
  setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

// Splits "host:port" or "[v6]:port". Empty host means all IPv4 interfaces.
absl::Status ParseAddress(const std::string& address, std::string* host, int* port) {
  std::string port_text;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find("]:");
    if (close == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics address \"", address, "\" is not [host]:port"));
    }
    *host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics address \"", address, "\" is not host:port"));
    }
    *host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  if (host->empty()) *host = "0.0.0.0";
  if (!absl::SimpleAtoi(port_text, port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\" has no valid port (0..65535)"));
  }
  return absl::OkStatus();
}

// The GPU memory families, one series per device; nothing without devices.
void RenderDeviceMemory(const std::vector<DeviceMemory>& devices, std::string* out) {
  if (devices.empty()) return;
  const auto each = [&](const char* name, const char* type, const char* help, auto value) {
    AppendHeader(name, type, help, out);
    for (const DeviceMemory& device : devices) {
      absl::StrAppend(out, name, "{device=\"", device.device, "\"} ", value(device), "\n");
    }
  };
  each("model_server_gpu_memory_allocated_bytes", "gauge",
       "GPU memory held by tensors now (libtorch's caching allocator).",
       [](const DeviceMemory& d) { return d.allocated_bytes; });
  each("model_server_gpu_memory_reserved_bytes", "gauge",
       "GPU memory the caching allocator holds: tensors' and its cache.",
       [](const DeviceMemory& d) { return d.reserved_bytes; });
  each("model_server_gpu_memory_peak_allocated_bytes", "gauge",
       "The most GPU memory tensors held at once since the server started.",
       [](const DeviceMemory& d) { return d.peak_allocated_bytes; });
  each("model_server_gpu_alloc_retries_total", "counter",
       "GPU allocations that had to free the allocator's cache and retry.",
       [](const DeviceMemory& d) { return d.alloc_retries; });
  each("model_server_gpu_ooms_total", "counter",
       "GPU allocations that failed even after freeing the cache (out of memory).",
       [](const DeviceMemory& d) { return d.ooms; });
}

}  // namespace

std::vector<double> LatencyBucketsSeconds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

std::vector<double> PowerOfTwoBuckets(int max_exponent) {
  std::vector<double> bounds;
  for (int exponent = 0; exponent <= max_exponent; ++exponent) {
    bounds.push_back(std::ldexp(1.0, exponent));
  }
  return bounds;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // First bound >= value: Prometheus buckets are `le` (less than or equal).
  size_t bucket =
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  AddDouble(&sum_, value);
}

uint64_t Histogram::count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
  }
  return total;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  const std::string separator = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    const std::string le = i < upper_bounds_.size() ? BoundLabel(upper_bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, separator, "le=\"", le, "\"} ", cumulative,
                    "\n");
  }
  const std::string braced = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braced, " ");
  AppendValue(sum_.load(std::memory_order_relaxed), out);
  // _count is the +Inf bucket, so a scrape never shows them disagreeing.
  absl::StrAppend(out, "\n", name, "_count", braced, " ", cumulative, "\n");
}

ModelMetrics::ModelMetrics(std::string name)
    : name_(std::move(name)),
      label_(absl::StrCat("model=\"", name_, "\"")),
      queue_time_(LatencyBucketsSeconds()),
      compute_time_(LatencyBucketsSeconds()),
      batch_rows_(PowerOfTwoBuckets(16)),
      batch_requests_(PowerOfTwoBuckets(12)) {}

void ModelMetrics::RecordQueueTime(double seconds) { queue_time_.Observe(seconds); }

void ModelMetrics::RecordBatch(size_t requests, size_t rows, size_t forward_passes,
                               double compute_seconds) {
  forward_passes_.fetch_add(forward_passes, std::memory_order_relaxed);
  batch_requests_.Observe(static_cast<double>(requests));
  batch_rows_.Observe(static_cast<double>(rows));
  compute_time_.Observe(compute_seconds);
}

void ModelMetrics::SetLoadSeconds(double seconds) {
  load_seconds_.store(seconds, std::memory_order_relaxed);
}

void ModelMetrics::SetWarmupSeconds(double seconds) {
  warmup_seconds_.store(seconds, std::memory_order_relaxed);
}

void ModelMetrics::SetVersion(int64_t version) {
  version_.store(version, std::memory_order_relaxed);
}

void ModelMetrics::RecordReload(bool ok) {
  reloads_[ok ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
}

namespace {

size_t PriorityIndex(size_t priority) { return std::min(priority, kMaxPriorityLevel); }

const char* RejectionName(size_t why) {
  switch (static_cast<QueueRejection>(why)) {
    case QueueRejection::kMaxQueueRows:
      return "max_queue_rows";
    case QueueRejection::kMaxQueueSize:
      return "max_queue_size";
    case QueueRejection::kTimeout:
      return "timeout";
  }
  return "unknown";
}

}  // namespace

void ModelMetrics::RecordQueueRejection(size_t priority, QueueRejection why) {
  const size_t policy = static_cast<size_t>(why);
  if (policy >= kQueueRejectionCount) return;
  queue_rejections_[policy][PriorityIndex(priority)].fetch_add(1, std::memory_order_relaxed);
}

void ModelMetrics::RecordQueueTimeout(size_t priority, bool delayed) {
  queue_timeouts_[delayed ? 1 : 0][PriorityIndex(priority)].fetch_add(1, std::memory_order_relaxed);
}

void ModelMetrics::RecordCacheHit() { cache_hits_.fetch_add(1, std::memory_order_relaxed); }

void ModelMetrics::RecordCacheMiss() { cache_misses_.fetch_add(1, std::memory_order_relaxed); }

uint64_t ModelMetrics::queue_rejections(size_t priority, QueueRejection why) const {
  const size_t policy = static_cast<size_t>(why);
  if (policy >= kQueueRejectionCount) return 0;
  return queue_rejections_[policy][PriorityIndex(priority)].load(std::memory_order_relaxed);
}

uint64_t ModelMetrics::queue_timeouts(size_t priority, bool delayed) const {
  return queue_timeouts_[delayed ? 1 : 0][PriorityIndex(priority)].load(std::memory_order_relaxed);
}

void ModelMetrics::SetQueueDepthSource(
    std::function<std::vector<std::pair<size_t, size_t>>()> queue_depth) {
  base::MutexLock lock(sources_mu_);
  queue_depth_ = std::move(queue_depth);
}

void ModelMetrics::RecordFaults(size_t out_of_memory, size_t device_lost) {
  out_of_memory_.fetch_add(out_of_memory, std::memory_order_relaxed);
  device_lost_.fetch_add(device_lost, std::memory_order_relaxed);
}

void ModelMetrics::SetSources(std::function<size_t()> queued_requests,
                              std::function<size_t()> loaded_versions) {
  base::MutexLock lock(sources_mu_);
  queued_requests_ = std::move(queued_requests);
  loaded_versions_ = std::move(loaded_versions);
}

namespace {

template <size_t... I>
std::array<Histogram, sizeof...(I)> LatencyHistograms(std::index_sequence<I...>) {
  return {((void)I, Histogram(LatencyBucketsSeconds()))...};
}

}  // namespace

ServerMetrics::ServerMetrics(std::function<std::vector<DeviceMemory>()> device_memory)
    : request_latency_(LatencyHistograms(std::make_index_sequence<kMethodCount>())),
      device_memory_(std::move(device_memory)) {}

ModelMetrics* ServerMetrics::AddModel(const std::string& name) {
  base::MutexLock lock(models_mu_);
  for (const auto& model : models_) {
    if (model->name() == name) return model.get();
  }
  models_.push_back(std::unique_ptr<ModelMetrics>(new ModelMetrics(name)));
  return models_.back().get();
}

uint64_t ServerMetrics::batches() const {
  base::MutexLock lock(models_mu_);
  uint64_t total = 0;
  for (const auto& model : models_) total += model->batches();
  return total;
}

uint64_t ServerMetrics::batched_requests() const {
  base::MutexLock lock(models_mu_);
  uint64_t total = 0;
  for (const auto& model : models_) total += model->batched_requests();
  return total;
}

uint64_t ServerMetrics::forward_passes() const {
  base::MutexLock lock(models_mu_);
  uint64_t total = 0;
  for (const auto& model : models_) total += model->forward_passes();
  return total;
}

uint64_t ServerMetrics::idle_requests() const {
  base::MutexLock lock(models_mu_);
  uint64_t total = 0;
  for (const auto& model : models_) total += model->idle_requests();
  return total;
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(const MetricsOptions& options) {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics(options.device_memory));
  if (!options.address.empty()) {
    absl::Status status = metrics->StartHttp(options.address, options.http);
    if (!status.ok()) return status;
  }
  return metrics;
}

absl::Status ServerMetrics::StartHttp(const std::string& address, const HttpLimits& limits) {
  std::string host;
  int port = 0;
  absl::Status parsed = ParseAddress(address, &host, &port);
  if (!parsed.ok()) return parsed;

  std::unique_ptr<httplib::Server> http = MakeBoundedHttpServer(limits);
  http->set_socket_options(PlainBindSocketOptions);
  http->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Render(), kContentType);
  });
  // Unrouted paths get httplib's 404.

  if (port == 0) {
    port = http->bind_to_any_port(host);  // -1 on failure
  } else if (!http->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0 || !WidenListenBacklog(*http)) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, " (address in use or not local)"));
  }

  // Shared because the thread outlives this call (it returns only when stopped).
  auto listen_returned = std::make_shared<std::atomic<bool>>(false);
  httplib::Server* server = http.get();
  http_thread_ = std::thread([server, listen_returned] {
    server->listen_after_bind();
    *listen_returned = true;
  });
  // stop() is a no-op until the listen loop runs, so wait for it: otherwise a destructor
  // racing this start would join a thread that never stops.
  while (!server->is_running() && !*listen_returned) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server->is_running()) {
    http_thread_.join();
    return absl::UnavailableError(absl::StrCat("metrics listener on ", address, " stopped"));
  }
  http_ = std::move(http);
  port_ = port;
  spdlog::info("metrics: serving GET /metrics on {}:{}", host, port_);
  return absl::OkStatus();
}

ServerMetrics::~ServerMetrics() {
  if (http_) {
    http_->stop();
    http_thread_.join();
  }
}

void ServerMetrics::RecordRequest(Method method, int grpc_status_code, double latency_seconds) {
  size_t method_index = static_cast<size_t>(method);
  if (method_index >= kMethodCount) return;
  requests_[method_index][CodeIndex(grpc_status_code)].fetch_add(1, std::memory_order_relaxed);
  request_latency_[method_index].Observe(latency_seconds);
}

int64_t ServerMetrics::AddInFlight(int64_t delta) {
  return inflight_requests_.fetch_add(delta, std::memory_order_relaxed) + delta;
}

void ServerMetrics::SetCacheSource(std::function<CacheStats()> cache) {
  base::MutexLock lock(cache_mu_);
  cache_ = std::move(cache);
}

uint64_t ServerMetrics::requests(Method method, int grpc_status_code) const {
  const size_t method_index = static_cast<size_t>(method);
  if (method_index >= kMethodCount) return 0;
  return requests_[method_index][CodeIndex(grpc_status_code)].load(std::memory_order_relaxed);
}

std::string ServerMetrics::Render() const {
  std::string out;
  out.reserve(16384);

  AppendHeader("model_server_requests_total", "counter",
               "Finished RPCs by method and final gRPC status code.", &out);
  for (size_t method = 0; method < kMethodCount; ++method) {
    for (int code = 0; code < kGrpcCodeCount; ++code) {
      uint64_t count = requests_[method][code].load(std::memory_order_relaxed);
      // OK is always present so rate() has a series from the first scrape; other codes appear
      // once they happen.
      if (count == 0 && code != 0) continue;
      absl::StrAppend(&out, "model_server_requests_total{method=\"",
                      MethodName(static_cast<Method>(method)), "\",code=\"", CodeName(code), "\"} ",
                      count, "\n");
    }
  }

  AppendHeader("model_server_request_latency_seconds", "histogram",
               "Time from RPC arrival to its completion, by method.", &out);
  for (size_t method = 0; method < kMethodCount; ++method) {
    request_latency_[method].Render(
        "model_server_request_latency_seconds",
        absl::StrCat("method=\"", MethodName(static_cast<Method>(method)), "\""), &out);
  }

  AppendHeader("model_server_inflight_requests", "gauge",
               "EvaluateModel and ModelInfer calls accepted and not yet finished.", &out);
  AppendSample("model_server_inflight_requests", inflight_requests_.load(std::memory_order_relaxed),
               &out);

  CacheStats cache;
  {
    base::MutexLock lock(cache_mu_);
    if (cache_) cache = cache_();
  }
  const auto cache_sample = [&out](const char* name, const char* type, const char* help,
                                   uint64_t value) {
    AppendHeader(name, type, help, &out);
    AppendSample(name, static_cast<int64_t>(value), &out);
  };
  cache_sample("model_server_cache_capacity_bytes", "gauge",
               "Bytes the response cache may hold (--cache-config local,size=BYTES; 0: no cache).",
               cache.capacity_bytes);
  cache_sample("model_server_cache_bytes", "gauge",
               "Bytes the response cache holds: keys, values and a fixed cost per entry.",
               cache.bytes);
  cache_sample("model_server_cache_entries", "gauge", "Entries the response cache holds.",
               cache.entries);
  cache_sample("model_server_cache_insertions_total", "counter",
               "Responses stored in the response cache.", cache.insertions);
  cache_sample("model_server_cache_evictions_total", "counter",
               "Response cache entries dropped, least recently used first, to make room.",
               cache.evictions);
  cache_sample("model_server_cache_invalidations_total", "counter",
               "Response cache entries dropped because their model version stopped serving.",
               cache.invalidations);

  if (device_memory_) RenderDeviceMemory(device_memory_(), &out);

  // Each model's families, every model's series under one header.
  base::MutexLock lock(models_mu_);  // to the end of the scrape, as before
  std::vector<const ModelMetrics*> models;
  for (const auto& model : models_) models.push_back(model.get());
  const auto each_model = [&models](const char* name, const char* type, const char* help,
                                    std::string* out, const auto& render) {
    AppendHeader(name, type, help, out);
    for (const ModelMetrics* model : models) render(*model, out);
  };
  const auto gauge = [](const char* name, const ModelMetrics& model, auto value, std::string* out) {
    absl::StrAppend(out, name, "{", model.label_, "} ");
    AppendValue(value, out);
    out->push_back('\n');
  };
  each_model("model_server_queue_time_seconds", "histogram",
             "Per request, time from enqueue in the batcher to the cut of its batch.", &out,
             [](const ModelMetrics& m, std::string* out) {
               m.queue_time_.Render("model_server_queue_time_seconds", m.label_, out);
             });
  each_model("model_server_compute_time_seconds", "histogram",
             "Per batch, time the model took to run it (reruns included).", &out,
             [](const ModelMetrics& m, std::string* out) {
               m.compute_time_.Render("model_server_compute_time_seconds", m.label_, out);
             });
  each_model("model_server_forward_passes_total", "counter",
             "Forward passes run, including reruns of a failed batch request by request.", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_forward_passes_total", m,
                     static_cast<int64_t>(m.forward_passes()), out);
             });
  each_model("model_server_idle_requests_total", "counter",
             "Requests run to completion on the thread that received them (the server was idle), "
             "not queued for a batch.",
             &out, [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_idle_requests_total", m, static_cast<int64_t>(m.idle_requests()),
                     out);
             });
  each_model("model_server_batch_rows", "histogram", "Per batch, rows in the batch.", &out,
             [](const ModelMetrics& m, std::string* out) {
               m.batch_rows_.Render("model_server_batch_rows", m.label_, out);
             });
  each_model("model_server_batch_requests", "histogram",
             "Per batch, requests coalesced into the batch.", &out,
             [](const ModelMetrics& m, std::string* out) {
               m.batch_requests_.Render("model_server_batch_requests", m.label_, out);
             });
  each_model("model_server_queued_requests", "gauge", "Requests waiting in the batcher queue.",
             &out, [&gauge](const ModelMetrics& m, std::string* out) {
               base::MutexLock sources(m.sources_mu_);
               gauge("model_server_queued_requests", m,
                     static_cast<int64_t>(m.queued_requests_ ? m.queued_requests_() : 0), out);
             });
  each_model("model_server_queue_depth", "gauge",
             "Requests waiting in the batcher queue, by priority level (0: a model without "
             "levels).",
             &out, [](const ModelMetrics& m, std::string* out) {
               base::MutexLock sources(m.sources_mu_);
               if (!m.queue_depth_) return;
               for (const auto& [priority, requests] : m.queue_depth_()) {
                 absl::StrAppend(out, "model_server_queue_depth{", m.label_, ",priority=\"",
                                 priority, "\"} ", requests, "\n");
               }
             });
  each_model("model_server_queue_rejections_total", "counter",
             "Requests a queue policy turned away, by priority level and policy: max_queue_rows "
             "(the queue was full), max_queue_size (the level was full), timeout (REJECT).",
             &out, [](const ModelMetrics& m, std::string* out) {
               for (size_t policy = 0; policy < kQueueRejectionCount; ++policy) {
                 for (size_t priority = 0; priority <= kMaxPriorityLevel; ++priority) {
                   const uint64_t count =
                       m.queue_rejections_[policy][priority].load(std::memory_order_relaxed);
                   if (count == 0) continue;  // a series appears once it happens
                   absl::StrAppend(out, "model_server_queue_rejections_total{", m.label_,
                                   ",priority=\"", priority, "\",policy=\"", RejectionName(policy),
                                   "\"} ", count, "\n");
                 }
               }
             });
  each_model("model_server_queue_timeouts_total", "counter",
             "Requests whose queue timeout passed, by priority level and timeout_action: reject "
             "(failed) or delay (moved behind the level's others).",
             &out, [](const ModelMetrics& m, std::string* out) {
               for (const bool delayed : {false, true}) {
                 for (size_t priority = 0; priority <= kMaxPriorityLevel; ++priority) {
                   const uint64_t count =
                       m.queue_timeouts_[delayed ? 1 : 0][priority].load(std::memory_order_relaxed);
                   if (count == 0) continue;
                   absl::StrAppend(out, "model_server_queue_timeouts_total{", m.label_,
                                   ",priority=\"", priority, "\",action=\"",
                                   delayed ? "delay" : "reject", "\"} ", count, "\n");
                 }
               }
             });
  each_model("model_server_cache_hits_total", "counter",
             "Requests answered from the response cache, without queueing or a forward pass.", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_cache_hits_total", m, static_cast<int64_t>(m.cache_hits()), out);
             });
  each_model("model_server_cache_misses_total", "counter",
             "Requests of a model with a response cache that were computed, then cached.", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_cache_misses_total", m, static_cast<int64_t>(m.cache_misses()),
                     out);
             });
  each_model("model_server_model_load_seconds", "gauge",
             "Time it took to load the serving version (0 until loaded).", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_model_load_seconds", m,
                     m.load_seconds_.load(std::memory_order_relaxed), out);
             });
  each_model("model_server_model_warmup_seconds", "gauge",
             "Time the serving version's warmup forward passes took (0 until done).", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_model_warmup_seconds", m,
                     m.warmup_seconds_.load(std::memory_order_relaxed), out);
             });
  each_model("model_server_model_version", "gauge",
             "The version new batches run on (1 at startup, +1 per swap).", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               gauge("model_server_model_version", m, m.version_.load(std::memory_order_relaxed),
                     out);
             });
  each_model("model_server_model_versions_loaded", "gauge",
             "Versions in memory: 1, or 2 while an old one finishes its last batches.", &out,
             [&gauge](const ModelMetrics& m, std::string* out) {
               base::MutexLock sources(m.sources_mu_);
               gauge("model_server_model_versions_loaded", m,
                     static_cast<int64_t>(m.loaded_versions_ ? m.loaded_versions_() : 0), out);
             });
  each_model("model_server_model_reloads_total", "counter",
             "Attempts to load a new version of the model's file: result ok (it serves now) or "
             "failed (refused; the old version serves on).",
             &out, [](const ModelMetrics& m, std::string* out) {
               for (const bool ok : {true, false}) {
                 absl::StrAppend(out, "model_server_model_reloads_total{", m.label_, ",result=\"",
                                 ok ? "ok" : "failed", "\"} ", m.reloads(ok), "\n");
               }
             });
  each_model("model_server_forward_faults_total", "counter",
             "Forward passes that failed with a fault the server acts on: fault out_of_memory "
             "(the batch was split, or the request alone did not fit) or device_lost (serving "
             "ended).",
             &out, [](const ModelMetrics& m, std::string* out) {
               absl::StrAppend(out, "model_server_forward_faults_total{", m.label_,
                               ",fault=\"out_of_memory\"} ", m.out_of_memory_faults(), "\n");
               absl::StrAppend(out, "model_server_forward_faults_total{", m.label_,
                               ",fault=\"device_lost\"} ", m.device_lost_faults(), "\n");
             });
  return out;
}

}  // namespace model_server::server::metrics
