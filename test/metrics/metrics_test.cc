#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace model_server::server::metrics {
namespace {

using namespace std::chrono_literals;

// A small parser for the Prometheus text format 0.0.4: fails the test on any malformed line
// and returns every sample keyed by its exact series text, e.g. `a_total{code="OK"}`.
std::map<std::string, double> ParseExposition(const std::string& text) {
  static const std::regex kHelp(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$)");
  static const std::regex kType(
      R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")"
      R"((,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\})? (\S+)$)");
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  REQUIRE(!text.empty());
  REQUIRE(text.back() == '\n');
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    INFO("line: " << line);
    std::smatch match;
    if (std::regex_match(line, match, kHelp)) {
      CHECK(helped.insert(match[1]).second);
    } else if (std::regex_match(line, match, kType)) {
      CHECK(helped.count(match[1]) == 1);  // HELP first, as the Go client writes it
      CHECK(types.emplace(match[1], match[2]).second);
    } else {
      REQUIRE(std::regex_match(line, match, kSample));
      const std::string name = match[1];
      std::string family = name;
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s = suffix;
        if (family.size() > s.size() &&
            family.compare(family.size() - s.size(), s.size(), s) == 0 &&
            types.count(family.substr(0, family.size() - s.size())) == 1) {
          family = family.substr(0, family.size() - s.size());
        }
      }
      CHECK(types.count(family) == 1);  // every sample belongs to a declared family
      const std::string value_text = match[4];
      double value;
      if (value_text == "+Inf") {
        value = INFINITY;
      } else if (value_text == "-Inf") {
        value = -INFINITY;
      } else if (value_text == "NaN") {
        value = NAN;
      } else {
        char* end = nullptr;
        value = std::strtod(value_text.c_str(), &end);
        REQUIRE(*end == '\0');
      }
      const std::string series = line.substr(0, line.rfind(' '));
      CHECK(samples.emplace(series, value).second);  // no duplicate series
    }
  }
  return samples;
}

// The sample's value; fails the test when the series is missing.
double Sample(const std::map<std::string, double>& samples, const std::string& series) {
  INFO("series: " << series);
  auto it = samples.find(series);
  REQUIRE(it != samples.end());
  return it->second;
}

std::unique_ptr<ServerMetrics> StartWithoutHttp(
    std::function<std::vector<DeviceMemory>()> device_memory = nullptr) {
  auto metrics = ServerMetrics::Start(
      MetricsOptions{.address = "", .device_memory = std::move(device_memory)});
  REQUIRE(metrics.ok());
  return std::move(*metrics);
}

// Two GPUs' memory, as libtorch's allocator would report them.
std::vector<DeviceMemory> TwoGpus() { return {{0, 1000, 4096, 3000, 2, 1}, {1, 0, 0, 0, 0, 0}}; }

// A listening TCP socket on 127.0.0.1 (port picked by the kernel), optionally with
// SO_REUSEPORT as gRPC sets it.
struct Listener {
  explicit Listener(bool reuse_port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    int yes = 1;
    if (reuse_port) REQUIRE(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof(yes)) == 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(fd, 4) == 0);
    socklen_t length = sizeof(address);
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port = ntohs(address.sin_port);
  }
  ~Listener() { close(fd); }
  int fd = -1;
  int port = 0;
};

TEST_CASE("request latency buckets are cumulative with sum and count") {
  auto metrics = StartWithoutHttp();
  metrics->RecordRequest(Method::kEvaluateModel, 0, 0.0002);
  metrics->RecordRequest(Method::kEvaluateModel, 0, 0.002);
  metrics->RecordRequest(Method::kEvaluateModel, 0, 2);
  auto samples = ParseExposition(metrics->Render());

  const std::string bucket =
      R"(model_server_request_latency_seconds_bucket{method="EvaluateModel",le=")";
  const std::vector<std::pair<std::string, double>> expected = {
      {"0.0001", 0}, {"0.00025", 1}, {"0.0005", 1}, {"0.001", 1}, {"0.0025", 2}, {"0.005", 2},
      {"0.01", 2},   {"0.025", 2},   {"0.05", 2},   {"0.1", 2},   {"0.25", 2},   {"0.5", 2},
      {"1", 2},      {"2.5", 3},     {"5", 3},      {"10", 3},    {"+Inf", 3}};
  for (const auto& [le, count] : expected) {
    INFO("le=" << le);
    CHECK(Sample(samples, bucket + le + "\"}") == count);
  }
  CHECK(Sample(samples, R"(model_server_request_latency_seconds_count{method="EvaluateModel"})") ==
        3);
  CHECK(Sample(samples, R"(model_server_request_latency_seconds_sum{method="EvaluateModel"})") ==
        Approx(2.0022).epsilon(1e-12));
  CHECK(Sample(samples, R"(model_server_requests_total{method="EvaluateModel",code="OK"})") == 3);
  // The other method's series exist, at zero.
  CHECK(Sample(samples, R"(model_server_requests_total{method="HealthCheck",code="OK"})") == 0);
  CHECK(Sample(samples, R"(model_server_request_latency_seconds_count{method="HealthCheck"})") ==
        0);
  CHECK(Sample(samples,
               R"(model_server_request_latency_seconds_bucket{method="HealthCheck",le="+Inf"})") ==
        0);
}

TEST_CASE("a value equal to a bound counts in that bucket (le)") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  model->RecordQueueTime(0.001);
  model->RecordQueueTime(NAN);  // ignored
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_bucket{model="m",le="0.0005"})") == 0);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_bucket{model="m",le="0.001"})") == 1);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_count{model="m"})") == 1);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_sum{model="m"})") == 0.001);
}

TEST_CASE("status codes are rendered by name; unknown codes count as UNKNOWN") {
  auto metrics = StartWithoutHttp();
  metrics->RecordRequest(Method::kEvaluateModel, 3, 0.01);
  metrics->RecordRequest(Method::kEvaluateModel, 8, 0.01);
  metrics->RecordRequest(Method::kEvaluateModel, 8, 0.01);
  metrics->RecordRequest(Method::kHealthCheck, 16, 0.01);
  metrics->RecordRequest(Method::kHealthCheck, 99, 0.01);
  metrics->RecordRequest(Method::kHealthCheck, -1, 0.01);
  const std::string text = metrics->Render();
  auto samples = ParseExposition(text);
  const std::string prefix = "model_server_requests_total{method=";
  CHECK(Sample(samples, prefix + R"("EvaluateModel",code="INVALID_ARGUMENT"})") == 1);
  CHECK(Sample(samples, prefix + R"("EvaluateModel",code="RESOURCE_EXHAUSTED"})") == 2);
  CHECK(Sample(samples, prefix + R"("EvaluateModel",code="OK"})") == 0);
  CHECK(Sample(samples, prefix + R"("HealthCheck",code="UNAUTHENTICATED"})") == 1);
  CHECK(Sample(samples, prefix + R"("HealthCheck",code="UNKNOWN"})") == 2);
  // Codes never seen have no series.
  CHECK(text.find("DATA_LOSS") == std::string::npos);
  CHECK(Sample(samples, R"(model_server_request_latency_seconds_count{method="HealthCheck"})") ==
        3);
  // The typed totals agree with the exposition.
  CHECK(metrics->requests(Method::kEvaluateModel, 8) == 2);
  CHECK(metrics->requests(Method::kHealthCheck, 2) == 2);
  CHECK(metrics->requests(Method::kHealthCheck, 99) == 2);
}

TEST_CASE("gauges go up and down; a model's gauges are read from its sources at each scrape") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  std::atomic<size_t> queued{0};
  std::atomic<size_t> versions{1};
  model->SetSources([&queued] { return queued.load(); }, [&versions] { return versions.load(); });
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_queued_requests{model="m"})") == 0);
  CHECK(Sample(samples, R"(model_server_model_load_seconds{model="m"})") == 0);
  CHECK(Sample(samples, R"(model_server_model_versions_loaded{model="m"})") == 1);

  queued = 3;
  versions = 2;
  metrics->AddInFlight(1);
  metrics->AddInFlight(1);
  model->SetLoadSeconds(1.5);
  model->SetWarmupSeconds(0.25);
  model->SetVersion(4);
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_queued_requests{model="m"})") == 3);
  CHECK(Sample(samples, "model_server_inflight_requests") == 2);
  CHECK(Sample(samples, R"(model_server_model_load_seconds{model="m"})") == 1.5);
  CHECK(Sample(samples, R"(model_server_model_warmup_seconds{model="m"})") == 0.25);
  CHECK(Sample(samples, R"(model_server_model_version{model="m"})") == 4);
  CHECK(Sample(samples, R"(model_server_model_versions_loaded{model="m"})") == 2);

  queued = 0;
  metrics->AddInFlight(-2);
  model->SetLoadSeconds(2.0);
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_queued_requests{model="m"})") == 0);
  CHECK(Sample(samples, "model_server_inflight_requests") == 0);
  CHECK(Sample(samples, R"(model_server_model_load_seconds{model="m"})") == 2.0);

  // Sources released (the model shut down): the gauges read 0, the sources are not called.
  model->SetSources(nullptr, nullptr);
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_queued_requests{model="m"})") == 0);
  CHECK(Sample(samples, R"(model_server_model_versions_loaded{model="m"})") == 0);
}

TEST_CASE("each model's series carry its label; reloads count by result") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* a = metrics->AddModel("a");
  ModelMetrics* b = metrics->AddModel("b.v2");
  a->RecordBatch(2, 10, 1, 0.01);
  b->RecordBatch(3, 30, 1, 0.01);
  b->RecordBatch(1, 1, 2, 0.01);
  b->RecordReload(true);
  b->RecordReload(false);
  b->RecordReload(false);
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_batch_rows_sum{model="a"})") == 10);
  CHECK(Sample(samples, R"(model_server_batch_rows_sum{model="b.v2"})") == 31);
  CHECK(Sample(samples, R"(model_server_batch_requests_count{model="b.v2"})") == 2);
  CHECK(Sample(samples, R"(model_server_forward_passes_total{model="b.v2"})") == 3);
  CHECK(Sample(samples, R"(model_server_model_reloads_total{model="a",result="ok"})") == 0);
  CHECK(Sample(samples, R"(model_server_model_reloads_total{model="b.v2",result="ok"})") == 1);
  CHECK(Sample(samples, R"(model_server_model_reloads_total{model="b.v2",result="failed"})") == 2);
  // The totals add the models up.
  CHECK(metrics->batches() == 3);
  CHECK(metrics->batched_requests() == 6);
  CHECK(metrics->forward_passes() == 4);
  CHECK(b->reloads(false) == 2);
}

TEST_CASE("queue policies count by priority and policy; queue depth by priority") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  model->RecordQueueRejection(2, QueueRejection::kMaxQueueSize);
  model->RecordQueueRejection(2, QueueRejection::kMaxQueueSize);
  model->RecordQueueRejection(1, QueueRejection::kTimeout);
  model->RecordQueueRejection(0, QueueRejection::kMaxQueueRows);
  model->RecordQueueRejection(500, QueueRejection::kMaxQueueRows);  // counted as the highest
  model->RecordQueueTimeout(1, false);
  model->RecordQueueTimeout(3, true);
  model->SetQueueDepthSource([] {
    return std::vector<std::pair<size_t, size_t>>{{1, 0}, {2, 7}, {3, 1}};
  });
  auto samples = ParseExposition(metrics->Render());
  CHECK(
      Sample(
          samples,
          R"(model_server_queue_rejections_total{model="m",priority="2",policy="max_queue_size"})") ==
      2);
  CHECK(Sample(samples,
               R"(model_server_queue_rejections_total{model="m",priority="1",policy="timeout"})") ==
        1);
  CHECK(
      Sample(
          samples,
          R"(model_server_queue_rejections_total{model="m",priority="0",policy="max_queue_rows"})") ==
      1);
  CHECK(
      Sample(
          samples,
          R"(model_server_queue_rejections_total{model="m",priority="64",policy="max_queue_rows"})") ==
      1);
  // Series appear once they happen.
  CHECK(
      samples.count(
          R"(model_server_queue_rejections_total{model="m",priority="1",policy="max_queue_size"})") ==
      0);
  CHECK(Sample(samples,
               R"(model_server_queue_timeouts_total{model="m",priority="1",action="reject"})") ==
        1);
  CHECK(Sample(samples,
               R"(model_server_queue_timeouts_total{model="m",priority="3",action="delay"})") == 1);
  CHECK(Sample(samples, R"(model_server_queue_depth{model="m",priority="1"})") == 0);
  CHECK(Sample(samples, R"(model_server_queue_depth{model="m",priority="2"})") == 7);
  CHECK(Sample(samples, R"(model_server_queue_depth{model="m",priority="3"})") == 1);
  CHECK(model->queue_rejections(2, QueueRejection::kMaxQueueSize) == 2);
  CHECK(model->queue_timeouts(3, true) == 1);
  model->SetQueueDepthSource(nullptr);
  samples = ParseExposition(metrics->Render());
  CHECK(samples.count(R"(model_server_queue_depth{model="m",priority="2"})") == 0);
}

TEST_CASE("the response cache's hits and misses count per model; its size and evictions once") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, "model_server_cache_capacity_bytes") == 0);  // no cache
  CHECK(Sample(samples, R"(model_server_cache_hits_total{model="m"})") == 0);
  model->RecordCacheHit();
  model->RecordCacheHit();
  model->RecordCacheMiss();
  metrics->SetCacheSource([] { return CacheStats{1000, 640, 5, 9, 3, 1}; });
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_cache_hits_total{model="m"})") == 2);
  CHECK(Sample(samples, R"(model_server_cache_misses_total{model="m"})") == 1);
  CHECK(Sample(samples, "model_server_cache_capacity_bytes") == 1000);
  CHECK(Sample(samples, "model_server_cache_bytes") == 640);
  CHECK(Sample(samples, "model_server_cache_entries") == 5);
  CHECK(Sample(samples, "model_server_cache_insertions_total") == 9);
  CHECK(Sample(samples, "model_server_cache_evictions_total") == 3);
  CHECK(Sample(samples, "model_server_cache_invalidations_total") == 1);
  metrics->SetCacheSource(nullptr);
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, "model_server_cache_bytes") == 0);
}

TEST_CASE("faults count per model and class; GPU memory per device, read at each scrape") {
  std::atomic<int64_t> allocated{1000};
  auto metrics = StartWithoutHttp([&allocated] {
    std::vector<DeviceMemory> devices = TwoGpus();
    devices[0].allocated_bytes = allocated.load();
    return devices;
  });
  ModelMetrics* model = metrics->AddModel("m");
  model->RecordFaults(5, 0);
  model->RecordFaults(0, 1);
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_forward_faults_total{model="m",fault="out_of_memory"})") ==
        5);
  CHECK(Sample(samples, R"(model_server_forward_faults_total{model="m",fault="device_lost"})") ==
        1);
  CHECK(Sample(samples, R"(model_server_gpu_memory_allocated_bytes{device="0"})") == 1000);
  CHECK(Sample(samples, R"(model_server_gpu_memory_reserved_bytes{device="0"})") == 4096);
  CHECK(Sample(samples, R"(model_server_gpu_memory_peak_allocated_bytes{device="0"})") == 3000);
  CHECK(Sample(samples, R"(model_server_gpu_alloc_retries_total{device="0"})") == 2);
  CHECK(Sample(samples, R"(model_server_gpu_ooms_total{device="0"})") == 1);
  CHECK(Sample(samples, R"(model_server_gpu_memory_reserved_bytes{device="1"})") == 0);
  allocated = 2048;
  samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_gpu_memory_allocated_bytes{device="0"})") == 2048);
  CHECK(model->out_of_memory_faults() == 5);
  CHECK(model->device_lost_faults() == 1);
  // Without GPUs (a CPU build, or none visible) no GPU family is written.
  const std::string cpu_only =
      StartWithoutHttp([] { return std::vector<DeviceMemory>(); })->Render();
  CHECK(cpu_only.find("model_server_gpu_") == std::string::npos);
  CHECK(StartWithoutHttp()->Render().find("model_server_gpu_") == std::string::npos);
}

TEST_CASE("batch histograms use power-of-two buckets; totals count batches and forward passes") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  model->RecordBatch(3, 100, 4, 0.01);
  model->RecordBatch(4096, 65536, 1, 0.5);
  model->RecordBatch(5000, 70000, 1, 20);
  auto samples = ParseExposition(metrics->Render());
  CHECK(Sample(samples, R"(model_server_forward_passes_total{model="m"})") == 6);
  CHECK(metrics->batches() == 3);
  CHECK(metrics->batched_requests() == 3 + 4096 + 5000);
  CHECK(metrics->forward_passes() == 6);
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="1"})") == 0);
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="64"})") == 0);
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="128"})") == 1);
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="65536"})") == 2);
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="+Inf"})") == 3);
  CHECK(samples.count(R"(model_server_batch_rows_bucket{model="m",le="131072"})") == 0);
  CHECK(Sample(samples, R"(model_server_batch_rows_sum{model="m"})") == 100 + 65536 + 70000);
  CHECK(Sample(samples, R"(model_server_batch_requests_bucket{model="m",le="2"})") == 0);
  CHECK(Sample(samples, R"(model_server_batch_requests_bucket{model="m",le="4"})") == 1);
  CHECK(Sample(samples, R"(model_server_batch_requests_bucket{model="m",le="4096"})") == 2);
  CHECK(Sample(samples, R"(model_server_batch_requests_bucket{model="m",le="+Inf"})") == 3);
  CHECK(samples.count(R"(model_server_batch_requests_bucket{model="m",le="8192"})") == 0);
  CHECK(Sample(samples, R"(model_server_batch_requests_count{model="m"})") == 3);
  CHECK(Sample(samples, R"(model_server_compute_time_seconds_bucket{model="m",le="0.01"})") == 1);
  CHECK(Sample(samples, R"(model_server_compute_time_seconds_bucket{model="m",le="10"})") == 2);
  CHECK(Sample(samples, R"(model_server_compute_time_seconds_bucket{model="m",le="+Inf"})") == 3);
  CHECK(Sample(samples, R"(model_server_compute_time_seconds_sum{model="m"})") == Approx(20.51));
}

// Runs `promtool check metrics` (Debian's prometheus package; scripts/setup.sh installs it) on
// `exposition`; returns its exit status and output.
std::pair<int, std::string> Promtool(const std::string& exposition) {
  REQUIRE(std::system("command -v promtool >/dev/null") == 0);  // else: scripts/setup.sh
  char path[] = "/tmp/metrics_test_XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, exposition.data(), exposition.size()) ==
          static_cast<ssize_t>(exposition.size()));
  close(fd);
  FILE* pipe = popen(("promtool check metrics < " + std::string(path) + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  unlink(path);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST_CASE("promtool accepts the exposition, every family filled in") {
  auto metrics = StartWithoutHttp(TwoGpus);
  for (size_t method = 0; method < kMethodCount; ++method) {
    metrics->RecordRequest(static_cast<Method>(method), 0, 0.003);
    metrics->RecordRequest(static_cast<Method>(method), 8, 1e-5);
    metrics->RecordRequest(static_cast<Method>(method), 14, 120);
  }
  metrics->AddInFlight(2);
  for (const char* name : {"default", "b.v2"}) {
    ModelMetrics* model = metrics->AddModel(name);
    model->RecordQueueTime(0.001);
    model->RecordBatch(3, 70, 1, 0.02);
    model->RecordBatch(1, 5000, 2, 0.5);
    model->SetLoadSeconds(0.1);
    model->SetWarmupSeconds(0.05);
    model->SetVersion(2);
    model->RecordReload(true);
    model->RecordReload(false);
    model->RecordFaults(3, 1);
    model->SetSources([] { return size_t{4}; }, [] { return size_t{2}; });
    model->SetQueueDepthSource([] {
      return std::vector<std::pair<size_t, size_t>>{{1, 3}, {2, 1}};
    });
    model->RecordQueueRejection(1, QueueRejection::kMaxQueueSize);
    model->RecordQueueRejection(2, QueueRejection::kTimeout);
    model->RecordQueueRejection(0, QueueRejection::kMaxQueueRows);
    model->RecordQueueTimeout(1, true);
    model->RecordQueueTimeout(2, false);
    model->RecordCacheHit();
    model->RecordCacheMiss();
  }
  metrics->SetCacheSource([] { return CacheStats{1000, 500, 3, 4, 1, 0}; });
  const std::string exposition = metrics->Render();
  REQUIRE(exposition.find("model_server_gpu_memory_reserved_bytes{device=\"1\"}") !=
          std::string::npos);
  const auto [status, output] = Promtool(exposition);
  INFO(output);
  CHECK(status == 0);
  CHECK(output.empty());
  // The check itself can fail: a counter without the _total suffix is a lint problem.
  CHECK(Promtool("# HELP requests Calls.\n# TYPE requests counter\nrequests 1\n").first != 0);
}

TEST_CASE("every family has HELP and TYPE of the right kind") {
  auto metrics = StartWithoutHttp(TwoGpus);
  metrics->AddModel("m");
  const std::string text = metrics->Render();
  ParseExposition(text);
  for (const char* line : {
           "# TYPE model_server_requests_total counter\n",
           "# TYPE model_server_request_latency_seconds histogram\n",
           "# TYPE model_server_queue_time_seconds histogram\n",
           "# TYPE model_server_compute_time_seconds histogram\n",
           "# TYPE model_server_batch_rows histogram\n",
           "# TYPE model_server_batch_requests histogram\n",
           "# TYPE model_server_forward_passes_total counter\n",
           "# TYPE model_server_idle_requests_total counter\n",
           "# TYPE model_server_queued_requests gauge\n",
           "# TYPE model_server_inflight_requests gauge\n",
           "# TYPE model_server_model_load_seconds gauge\n",
           "# TYPE model_server_model_warmup_seconds gauge\n",
           "# TYPE model_server_model_version gauge\n",
           "# TYPE model_server_model_versions_loaded gauge\n",
           "# TYPE model_server_model_reloads_total counter\n",
           "# TYPE model_server_queue_depth gauge\n",
           "# TYPE model_server_queue_rejections_total counter\n",
           "# TYPE model_server_queue_timeouts_total counter\n",
           "# TYPE model_server_cache_hits_total counter\n",
           "# TYPE model_server_cache_misses_total counter\n",
           "# TYPE model_server_cache_capacity_bytes gauge\n",
           "# TYPE model_server_cache_bytes gauge\n",
           "# TYPE model_server_cache_entries gauge\n",
           "# TYPE model_server_cache_insertions_total counter\n",
           "# TYPE model_server_cache_evictions_total counter\n",
           "# TYPE model_server_cache_invalidations_total counter\n",
           "# TYPE model_server_forward_faults_total counter\n",
           "# TYPE model_server_gpu_memory_allocated_bytes gauge\n",
           "# TYPE model_server_gpu_memory_reserved_bytes gauge\n",
           "# TYPE model_server_gpu_memory_peak_allocated_bytes gauge\n",
           "# TYPE model_server_gpu_alloc_retries_total counter\n",
           "# TYPE model_server_gpu_ooms_total counter\n",
       }) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

TEST_CASE("concurrent recording from 8 threads loses nothing") {
  auto metrics = StartWithoutHttp();
  ModelMetrics* model = metrics->AddModel("m");
  constexpr int kThreads = 8;
  constexpr int kCalls = 10000;
  std::atomic<bool> done{false};
  // A scraper running alongside, as Prometheus would.
  std::thread scraper([&] {
    while (!done) ParseExposition(metrics->Render());
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        metrics->AddInFlight(1);
        model->RecordQueueTime(0.0003);
        model->RecordBatch(2, 8, 1, 0.004);
        metrics->RecordRequest(Method::kEvaluateModel, t % 2 == 0 ? 0 : 14, 0.5);
        metrics->AddInFlight(-1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  done = true;
  scraper.join();

  auto samples = ParseExposition(metrics->Render());
  constexpr double kTotal = kThreads * kCalls;
  CHECK(Sample(samples, R"(model_server_requests_total{method="EvaluateModel",code="OK"})") ==
        kTotal / 2);
  CHECK(Sample(samples,
               R"(model_server_requests_total{method="EvaluateModel",code="UNAVAILABLE"})") ==
        kTotal / 2);
  CHECK(
      Sample(samples,
             R"(model_server_request_latency_seconds_bucket{method="EvaluateModel",le="0.25"})") ==
      0);
  CHECK(Sample(samples,
               R"(model_server_request_latency_seconds_bucket{method="EvaluateModel",le="0.5"})") ==
        kTotal);
  // 0.5 is exact in binary, so the sum must be exact too.
  CHECK(Sample(samples, R"(model_server_request_latency_seconds_sum{method="EvaluateModel"})") ==
        kTotal * 0.5);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_bucket{model="m",le="0.00025"})") == 0);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_bucket{model="m",le="0.0005"})") ==
        kTotal);
  CHECK(Sample(samples, R"(model_server_queue_time_seconds_sum{model="m"})") ==
        Approx(kTotal * 0.0003).epsilon(1e-9));
  CHECK(Sample(samples, R"(model_server_batch_rows_bucket{model="m",le="8"})") == kTotal);
  CHECK(Sample(samples, R"(model_server_batch_rows_sum{model="m"})") == kTotal * 8);
  CHECK(Sample(samples, R"(model_server_batch_requests_bucket{model="m",le="2"})") == kTotal);
  CHECK(Sample(samples, R"(model_server_compute_time_seconds_count{model="m"})") == kTotal);
  CHECK(Sample(samples, "model_server_inflight_requests") == 0);
  CHECK(Sample(samples, R"(model_server_forward_passes_total{model="m"})") == kTotal);
}

TEST_CASE("HTTP serves GET /metrics and 404 elsewhere") {
  auto started = ServerMetrics::Start(MetricsOptions{.address = "127.0.0.1:0"});
  REQUIRE(started.ok());
  std::unique_ptr<ServerMetrics> metrics = std::move(*started);
  REQUIRE(metrics->port() > 0);
  metrics->RecordRequest(Method::kHealthCheck, 0, 0.001);

  httplib::Client client("127.0.0.1", metrics->port());
  auto response = client.Get("/metrics");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK(response->get_header_value("Content-Type") == "text/plain; version=0.0.4");
  auto samples = ParseExposition(response->body);
  CHECK(Sample(samples, R"(model_server_requests_total{method="HealthCheck",code="OK"})") == 1);

  // A second scrape sees later recordings.
  metrics->RecordRequest(Method::kHealthCheck, 0, 0.001);
  response = client.Get("/metrics");
  REQUIRE(response);
  samples = ParseExposition(response->body);
  CHECK(Sample(samples, R"(model_server_requests_total{method="HealthCheck",code="OK"})") == 2);

  response = client.Get("/other");
  REQUIRE(response);
  CHECK(response->status == 404);
  response = client.Get("/");
  REQUIRE(response);
  CHECK(response->status == 404);
}

TEST_CASE("without an address there is no HTTP, and Render still works") {
  auto metrics = StartWithoutHttp();
  CHECK(metrics->port() == 0);
  metrics->AddInFlight(1);
  CHECK(Sample(ParseExposition(metrics->Render()), "model_server_inflight_requests") == 1);
}

TEST_CASE("a port already listened on fails with UNAVAILABLE") {
  SECTION("a plain listening socket") {
    Listener listener(/*reuse_port=*/false);
    const std::string address = "127.0.0.1:" + std::to_string(listener.port);
    auto metrics = ServerMetrics::Start(MetricsOptions{.address = address});
    REQUIRE_FALSE(metrics.ok());
    CHECK(metrics.status().code() == absl::StatusCode::kUnavailable);
    CHECK(std::string(metrics.status().message()).find(address) != std::string::npos);
  }
  SECTION("a socket with SO_REUSEPORT, as gRPC listens") {
    Listener listener(/*reuse_port=*/true);
    auto metrics = ServerMetrics::Start(
        MetricsOptions{.address = "127.0.0.1:" + std::to_string(listener.port)});
    REQUIRE_FALSE(metrics.ok());
    CHECK(metrics.status().code() == absl::StatusCode::kUnavailable);
  }
  SECTION("another metrics endpoint") {
    auto first = ServerMetrics::Start(MetricsOptions{.address = "127.0.0.1:0"});
    REQUIRE(first.ok());
    const int port = (*first)->port();
    auto second =
        ServerMetrics::Start(MetricsOptions{.address = "127.0.0.1:" + std::to_string(port)});
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().code() == absl::StatusCode::kUnavailable);
    // Once the first is gone, the port can be bound again.
    first->reset();
    auto third =
        ServerMetrics::Start(MetricsOptions{.address = "127.0.0.1:" + std::to_string(port)});
    REQUIRE(third.ok());
    CHECK((*third)->port() == port);
  }
}

TEST_CASE("malformed addresses fail with INVALID_ARGUMENT") {
  for (const char* address :
       {"localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "[::1", "127.0.0.1:-1"}) {
    INFO(address);
    auto metrics = ServerMetrics::Start(MetricsOptions{.address = address});
    REQUIRE_FALSE(metrics.ok());
    CHECK(metrics.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("starting and at once destroying the endpoint does not hang") {
  // On a thread of its own, so that a hang fails here within 30 s (not at ctest's 600 s timeout).
  auto started = std::make_shared<std::promise<int>>();
  std::future<int> result = started->get_future();
  std::thread([started] {
    int ok = 0;
    for (int i = 0; i < 20; ++i)
      ok += ServerMetrics::Start(MetricsOptions{.address = "127.0.0.1:0"}).ok();
    started->set_value(ok);
  }).detach();
  REQUIRE(result.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  CHECK(result.get() == 20);
}

// A plain TCP client of the metrics endpoint that sends what a test tells it to.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  }
  ~RawClient() { close(fd_); }
  // False once the server has closed the connection (the send fails).
  bool Send(const std::string& text) {
    return send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  // Whether the server closes the connection within `timeout` (reads and drops any answer).
  bool ClosedWithin(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buffer[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd readable{fd_, POLLIN, 0};
      if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) continue;
      if (recv(fd_, buffer, sizeof(buffer), 0) <= 0) return true;  // closed or reset
    }
  }

 private:
  int fd_ = -1;
};

std::unique_ptr<ServerMetrics> StartWithLimits(const HttpLimits& limits) {
  MetricsOptions options{"127.0.0.1:0"};
  options.http = limits;
  auto started = ServerMetrics::Start(options);
  REQUIRE(started.ok());
  return *std::move(started);
}

TEST_CASE("slow clients hold a worker until the deadline only; scrapes are still answered") {
  HttpLimits limits;
  limits.max_threads = 2;
  limits.deadline = 1000ms;
  std::unique_ptr<ServerMetrics> metrics = StartWithLimits(limits);

  // Slowloris: as many connections as workers, each sending its request a byte every 100 ms.
  // The listener accepts connections in the order they completed and the workers take them in
  // the order accepted, so these two hold both workers before the scrape below can have one; a
  // worker's deadline starts when it takes a connection, after `connecting`.
  const auto connecting = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<RawClient>> slow;
  for (size_t i = 0; i < limits.max_threads; ++i) {
    slow.push_back(std::make_unique<RawClient>(metrics->port()));
  }
  struct Trickle {
    ~Trickle() {
      stop = true;
      thread.join();
    }
    std::atomic<bool> stop{false};
    std::thread thread;
  } trickle;
  trickle.thread = std::thread([&] {
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: ";
    for (size_t i = 0; !trickle.stop; ++i) {
      for (auto& client : slow) client->Send(std::string(1, request[i % request.size()]));
      std::this_thread::sleep_for(100ms);
    }
  });

  const auto start = std::chrono::steady_clock::now();
  httplib::Client client("127.0.0.1", metrics->port());
  client.set_read_timeout(10, 0);
  auto response = client.Get("/metrics");
  const auto answered = std::chrono::steady_clock::now();
  REQUIRE(response);
  CHECK(response->status == 200);
  // It waited for a worker that a slow client held until its deadline (a free worker would
  // have answered at once) ...
  CHECK(answered - connecting >= limits.deadline);
  // ... and no longer: not for the slow clients to finish.
  CHECK(answered - start < limits.deadline + 500ms);
  for (auto& client : slow) CHECK(client->ClosedWithin(1000ms));
}

TEST_CASE("a connection that finds the queue full is closed at once") {
  HttpLimits limits;
  limits.max_threads = 1;
  limits.queue = 1;
  limits.deadline = 3000ms;
  std::unique_ptr<ServerMetrics> metrics = StartWithLimits(limits);
  RawClient served(metrics->port());  // taken by the worker, sends nothing
  std::this_thread::sleep_for(100ms);
  RawClient queued(metrics->port());  // waits for the worker
  std::this_thread::sleep_for(100ms);
  RawClient shed(metrics->port());
  CHECK(shed.ClosedWithin(1000ms));
  CHECK_FALSE(queued.ClosedWithin(100ms));
}

TEST_CASE("a request larger than max_request_bytes is cut off before the deadline") {
  HttpLimits limits;
  limits.max_request_bytes = 4096;
  limits.deadline = 5000ms;
  std::unique_ptr<ServerMetrics> metrics = StartWithLimits(limits);
  RawClient client(metrics->port());
  const auto start = std::chrono::steady_clock::now();
  client.Send("GET /metrics HTTP/1.1\r\nHost: x\r\n");
  // Endless headers: the server would store every one.
  for (int i = 0; i < 1000 && client.Send("X-Header: " + std::string(90, 'a') + "\r\n"); ++i) {
  }
  CHECK(client.ClosedWithin(2000ms));
  CHECK(std::chrono::steady_clock::now() - start < 2500ms);
}

}  // namespace
}  // namespace model_server::server::metrics
