// Priorities, queue policies and the response cache through the real server, configured as a
// repository model's config.pbtxt configures them, with a fake model: the priority parameter
// reaches the batcher, a full level refuses at once, a REJECT timeout fails with Triton's status,
// the cache answers repeated requests of both protocols without a forward, and a swap or a
// missing server cache behave.

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "protocol/oip.h"
#include "repository/model_config.h"
#include "test/server/test_server.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

using testing::Load;
using testing::Payload;
using testing_support::FakeHandler;
using testing_support::FakeModelControl;
using testing_support::WaitFor;
namespace oip = protocol::oip;

// One model, "m", version 1, with `config` (config.pbtxt text); each load makes a new
// FakeHandler, whose control the test can reach.
class ConfigCatalog final : public ModelCatalog {
 public:
  explicit ConfigCatalog(const std::string& config) : config_(config) {}

  absl::StatusOr<std::vector<std::string>> Names() override {
    return std::vector<std::string>{"m"};
  }
  absl::StatusOr<repository::RepositoryModel> Read(const std::string& name, bool) override {
    absl::StatusOr<inference::ModelConfig> config =
        repository::ParseModelConfig(config_, "m/config.pbtxt");
    if (!config.ok()) return config.status();
    if (absl::Status valid = repository::ValidateModelConfig(*config, name); !valid.ok()) {
      return valid;
    }
    repository::RepositoryModel model;
    model.name = name;
    model.config = *std::move(config);
    model.config.set_name(name);
    model.versions.push_back({1, ""});
    model.has_config_file = true;
    return model;
  }
  absl::StatusOr<uint64_t> Fingerprint(const std::string&) override { return 1; }
  absl::StatusOr<Instances> Load(const repository::RepositoryModel&,
                                 const repository::VersionFile&) override {
    auto handler = std::make_unique<FakeHandler>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      controls_.push_back(handler->control());
    }
    Instances instances;
    instances.push_back(Load(std::move(handler)));
    return instances;
  }

  // The control of the `index`th instance loaded (0: the first).
  std::shared_ptr<FakeModelControl> control(size_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    return index < controls_.size() ? controls_[index] : nullptr;
  }
  size_t loads() {
    std::lock_guard<std::mutex> lock(mu_);
    return controls_.size();
  }

 private:
  static std::unique_ptr<handlers::LoadedModel> Load(std::unique_ptr<FakeHandler> handler) {
    return testing::Load(std::move(handler));
  }

  const std::string config_;
  std::mutex mu_;
  std::vector<std::shared_ptr<FakeModelControl>> controls_;
};

class ConfiguredServer {
 public:
  ConfiguredServer(const std::string& config, size_t cache_bytes = 0) {
    auto catalog = std::make_unique<ConfigCatalog>(config);
    catalog_ = catalog.get();
    ServerOptions options;
    options.address = "127.0.0.1:0";
    options.cq_threads = 2;
    options.response_cache_bytes = cache_bytes;
    // A lone call on an idle server runs on the receiving thread however slow the machine (the
    // fake model's forward passes are far below this bound; the bound is served_model_test's).
    options.max_idle_forward = std::chrono::microseconds(1000000);
    options.seed_model = "m";
    auto started = ModelServer::Start(options, std::move(catalog));
    INFO(started.status().ToString());
    REQUIRE(started.ok());
    server_ = *std::move(started);
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    seed_ = ModelService::NewStub(channel);
    oip_ = inference::GRPCInferenceService::NewStub(channel);
  }
  ~ConfiguredServer() {
    for (size_t i = 0; i < catalog_->loads(); ++i) catalog_->control(i)->Hold(false);
  }

  // x = (x_1, 0, 0) over the Open Inference Protocol, with `priority` (0: none) and whatever
  // `edit` adds; y, or the error.
  grpc::Status Infer(float x_1, uint64_t priority = 0, std::vector<float>* y = nullptr,
                     const std::function<void(inference::ModelInferRequest&)>& edit = nullptr) {
    inference::ModelInferRequest request = oip::EncodeInferRequest(
        "m", std::vector<oip::Fp32Tensor>{{"x", {1, 3}, {x_1, 0, 0}}}, true);
    if (priority > 0) (*request.mutable_parameters())["priority"].set_uint64_param(priority);
    if (edit) edit(request);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inference::ModelInferResponse response;
    const grpc::Status status = oip_->ModelInfer(&context, request, &response);
    if (status.ok() && y != nullptr) *y = oip::DecodeOutput(response)->values;
    return status;
  }
  std::future<grpc::Status> InferAsync(float x_1, uint64_t priority) {
    return std::async(std::launch::async, [=] { return Infer(x_1, priority); });
  }

  // The seed's EvaluateModel of x_1 = `x_1` with tunable parameters `params`.
  testing::Reply Evaluate(double x_1, const std::vector<double>& params) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inRequest request;
    request.set_inp_dict_bytes(Payload({x_1}, params));
    outCalc response;
    const grpc::Status status = seed_->EvaluateModel(&context, request, &response);
    return {status, response.response_bytes()};
  }

  inference::ModelStatistics Statistics() {
    grpc::ClientContext context;
    inference::ModelStatisticsRequest request;
    request.set_name("m");
    inference::ModelStatisticsResponse response;
    REQUIRE(oip_->ModelStatistics(&context, request, &response).ok());
    REQUIRE(response.model_stats_size() == 1);
    return response.model_stats(0);
  }

  ModelServer& server() { return *server_; }
  ConfigCatalog& catalog() { return *catalog_; }
  FakeModelControl& model(size_t index = 0) { return *catalog_->control(index); }

 private:
  ConfigCatalog* catalog_ = nullptr;
  std::unique_ptr<ModelServer> server_;
  std::unique_ptr<ModelService::Stub> seed_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip_;
};

// The value of the sample `series` in the server's metrics; -1 when there is none.
double Metric(ModelServer& server, const std::string& series) {
  const std::string text = "\n" + server.metrics().Render();
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

constexpr char kPriorities[] = R"pb(
  platform: "pytorch_libtorch"
  max_batch_size: 1
  dynamic_batching {
    priority_levels: 2
    default_priority_level: 2
    priority_queue_policy {
      key: 2
      value: { max_queue_size: 2 }
    }
    priority_queue_policy {
      key: 1
      value: { default_timeout_microseconds: 50000 timeout_action: REJECT }
    }
  }
)pb";

TEST_CASE("a priority outside the levels is refused, naming them", "[scheduling]") {
  ConfiguredServer server(kPriorities);
  const grpc::Status outside = server.Infer(1, 3);
  CHECK(outside.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(outside.error_message() ==
        "priority 3 is outside the model's priority levels 1..2 (1 is served first; 0 or none "
        "takes the default level 2)");
  CHECK(server.Infer(1, 1).ok());
  CHECK(server.Infer(1, 0).ok());  // the default level
}

// Sends `call` until one runs on the receiving thread (whether a call finds the server idle
// depends on when its completion-queue thread last waited, which a loaded machine moves); at most
// `tries` times. Whether one did.
bool UntilIdle(ConfiguredServer& server, const std::function<void()>& call, int tries = 20) {
  for (int i = 0; i < tries; ++i) {
    const uint64_t before = server.server().metrics().idle_requests();
    call();
    if (server.server().metrics().idle_requests() > before) return true;
  }
  return false;
}

TEST_CASE(
    "on an idle server a request of any level runs on the receiving thread; a priority outside "
    "the levels is still refused there",
    "[scheduling][idle]") {
  ConfiguredServer server(kPriorities);
  REQUIRE(server.Infer(1, 2).ok());  // a batch: no forward pass measured yet
  CHECK(UntilIdle(server, [&] { REQUIRE(server.Infer(1, 1).ok()); }));
  CHECK(UntilIdle(server, [&] { REQUIRE(server.Infer(1, 2).ok()); }));
  // Between idle runs, so that each finds the server idle as often as they do: never run, the
  // queue refuses it as it does when the server is busy.
  const size_t forwards = server.model().batch_rows().size();
  const uint64_t idle = server.server().metrics().idle_requests();
  int refused = 0;
  for (int i = 0; i < 10; ++i) {
    if (server.Infer(1, 3).error_code() == grpc::StatusCode::INVALID_ARGUMENT) ++refused;
    REQUIRE(server.Infer(1, 1).ok());
  }
  CHECK(refused == 10);
  CHECK(server.model().batch_rows().size() == forwards + 10);  // the level-1 calls only
  CHECK(server.server().metrics().idle_requests() > idle);     // which did run idle
}

TEST_CASE(
    "a full level refuses at once while another accepts; a REJECT timeout fails with "
    "UNAVAILABLE",
    "[scheduling]") {
  ConfiguredServer server(kPriorities);
  server.model().Hold(true);
  std::future<grpc::Status> running = server.InferAsync(1, 2);
  REQUIRE(server.model().WaitForForwards(1));  // the batch thread is busy with it
  std::future<grpc::Status> low_a = server.InferAsync(2, 2);
  std::future<grpc::Status> low_b = server.InferAsync(3, 0);  // the default level, 2
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 2; }));
  // Level 2 holds its max_queue_size: refused while the model is still held.
  const grpc::Status full = server.Infer(4, 2);
  CHECK(full.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(full.error_message() ==
        "exceeds maximum queue size: priority level 2 holds 2 of 2 requests; retry later");
  // Level 1 still accepts; its 50 ms timeout passes while the model is held: REJECT.
  std::future<grpc::Status> high = server.InferAsync(5, 1);
  const grpc::Status rejected = high.get();
  CHECK(rejected.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(rejected.error_message() ==
        "request timeout expired: it waited in the queue longer than its timeout");
  CHECK(server.model().batch_rows().size() == 1);  // nothing else ran meanwhile
  server.model().Hold(false);
  CHECK(running.get().ok());
  CHECK(low_a.get().ok());
  CHECK(low_b.get().ok());
  ModelServer& s = server.server();
  CHECK(
      Metric(
          s,
          R"(model_server_queue_rejections_total{model="m",priority="2",policy="max_queue_size"})") ==
      1);
  CHECK(Metric(s,
               R"(model_server_queue_rejections_total{model="m",priority="1",policy="timeout"})") ==
        1);
  CHECK(Metric(s, R"(model_server_queue_timeouts_total{model="m",priority="1",action="reject"})") ==
        1);
  CHECK(Metric(s, R"(model_server_queue_depth{model="m",priority="1"})") == 0);
  CHECK(Metric(s, R"(model_server_queue_depth{model="m",priority="2"})") == 0);
}

constexpr char kCached[] = R"pb(
  platform: "pytorch_libtorch"
  max_batch_size: 8
  dynamic_batching {}
  response_cache { enable: true }
)pb";

TEST_CASE("a repeated request is answered from the cache, without a forward, in both protocols",
          "[scheduling][cache]") {
  ConfiguredServer server(kCached, 1 << 20);
  std::vector<float> first, again;
  REQUIRE(server.Infer(1, 0, &first).ok());
  CHECK(server.model().batch_rows().size() == 1);
  REQUIRE(server.Infer(1, 0, &again).ok());
  CHECK(again == first);
  CHECK(server.model().batch_rows().size() == 1);  // no forward
  inference::ModelStatistics statistics = server.Statistics();
  CHECK(statistics.execution_count() == 1);
  CHECK(statistics.inference_count() == 1);  // a hit is not an inference (as in Triton)
  CHECK(statistics.inference_stats().success().count() == 2);
  CHECK(statistics.inference_stats().cache_hit().count() == 1);
  CHECK(statistics.inference_stats().cache_miss().count() == 1);

  // A timeout changes nothing of the answer: still a hit.
  REQUIRE(server
              .Infer(1, 0, &again,
                     [](auto& r) { (*r.mutable_parameters())["timeout"].set_int64_param(1000000); })
              .ok());
  CHECK(server.model().batch_rows().size() == 1);
  // One input byte differs: a miss.
  REQUIRE(server.Infer(2, 0, &again).ok());
  CHECK(server.model().batch_rows().size() == 2);
  CHECK(again != first);
  // One request parameter differs: a miss.
  REQUIRE(server
              .Infer(1, 0, &again,
                     [](auto& r) { (*r.mutable_parameters())["tag"].set_string_param("b"); })
              .ok());
  CHECK(server.model().batch_rows().size() == 3);
  CHECK(again == first);

  // The seed's protocol: a repeated call is a hit, other tunable parameters a miss.
  const testing::Reply seed = server.Evaluate(1, {2, 0});
  REQUIRE(seed.status.ok());
  const size_t forwards = server.model().batch_rows().size();
  const testing::Reply seed_again = server.Evaluate(1, {2, 0});
  REQUIRE(seed_again.status.ok());
  CHECK(seed_again.body == seed.body);
  CHECK(server.model().batch_rows().size() == forwards);
  const testing::Reply other = server.Evaluate(1, {3, 0});
  REQUIRE(other.status.ok());
  CHECK(other.body != seed.body);
  CHECK(server.model().batch_rows().size() == forwards + 1);

  statistics = server.Statistics();
  CHECK(statistics.inference_stats().cache_hit().count() == 3);
  CHECK(Metric(server.server(), R"(model_server_cache_hits_total{model="m"})") == 3);
  CHECK(Metric(server.server(), R"(model_server_cache_misses_total{model="m"})") ==
        statistics.inference_stats().cache_miss().count());
  CHECK(Metric(server.server(), "model_server_cache_entries") ==
        statistics.inference_stats().cache_miss().count());
  CHECK(Metric(server.server(), "model_server_cache_bytes") > 0);
  CHECK(Metric(server.server(), "model_server_cache_capacity_bytes") == 1 << 20);
}

TEST_CASE(
    "a request run on the receiving thread is cached; its repeat is a hit that takes no "
    "instance; the statistics count each once",
    "[scheduling][cache][idle]") {
  ConfiguredServer server(kCached, 1 << 20);
  REQUIRE(server.Infer(1).ok());  // a batch: no forward pass measured yet
  std::vector<float> first, again;
  float x_1 = 1;
  REQUIRE(UntilIdle(server, [&] { REQUIRE(server.Infer(++x_1, 0, &first).ok()); }));
  const size_t forwards = server.model().batch_rows().size();  // one per distinct request
  REQUIRE(forwards == static_cast<size_t>(x_1));
  const uint64_t idle = server.server().metrics().idle_requests();
  REQUIRE(server.Infer(x_1, 0, &again).ok());
  CHECK(again == first);
  CHECK(server.model().batch_rows().size() == forwards);  // no forward for the hit
  CHECK(server.server().metrics().idle_requests() == idle);
  CHECK(server.server().metrics().batches() == forwards);
  const inference::ModelStatistics statistics = server.Statistics();
  CHECK(statistics.execution_count() == forwards);
  CHECK(statistics.inference_count() == forwards);
  CHECK(statistics.inference_stats().success().count() == forwards + 1);
  CHECK(statistics.inference_stats().cache_hit().count() == 1);
  CHECK(statistics.inference_stats().cache_miss().count() == forwards);
  CHECK(Metric(server.server(), R"(model_server_cache_hits_total{model="m"})") == 1);
  CHECK(Metric(server.server(), R"(model_server_cache_misses_total{model="m"})") == forwards);
  CHECK(Metric(server.server(), "model_server_cache_entries") == forwards);
}

TEST_CASE("a swap empties the model's cache entries", "[scheduling][cache]") {
  ConfiguredServer server(kCached, 1 << 20);
  REQUIRE(server.Infer(1).ok());
  REQUIRE(server.Infer(1).ok());
  CHECK(server.model(0).batch_rows().size() == 1);
  server.server().ReloadModels();
  REQUIRE(WaitFor([&] { return server.catalog().loads() == 2 && server.model(0).cleaned_up(); }));
  CHECK(Metric(server.server(), "model_server_cache_entries") == 0);
  CHECK(Metric(server.server(), "model_server_cache_invalidations_total") == 1);
  REQUIRE(server.Infer(1).ok());
  CHECK(server.model(1).batch_rows().size() == 1);  // computed by the new version
  REQUIRE(server.Infer(1).ok());
  CHECK(server.model(1).batch_rows().size() == 1);  // and cached again
}

TEST_CASE("a model that enables the cache on a server without one is refused at load, by name",
          "[scheduling][cache]") {
  auto catalog = std::make_unique<ConfigCatalog>(kCached);
  ServerOptions options;
  options.address = "127.0.0.1:0";
  const auto started = ModelServer::Start(options, std::move(catalog));
  REQUIRE_FALSE(started.ok());
  CHECK_THAT(std::string(started.status().message()),
             Catch::Contains("model \"m\"") &&
                 Catch::Contains("config field response_cache.enable is set but the server has "
                                 "no response cache (start it with --cache-config "
                                 "local,size=BYTES)"));
}

}  // namespace
}  // namespace model_server::server
