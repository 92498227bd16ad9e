// Several models in one server, with fake models told apart by their offsets: ModelService
// serves the first, ModelInfer routes by model_name, each model batches on its own, metrics carry
// a model label, and bad model lists are refused.

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <future>
#include <string>
#include <vector>

#include "protocol/oip.h"
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

ModelSpec Model(const std::string& name, float offset,
                std::shared_ptr<FakeModelControl>* control = nullptr) {
  auto handler = std::make_unique<FakeHandler>(offset);
  if (control != nullptr) *control = handler->control();
  ModelSpec spec;
  spec.name = name;
  spec.instances.push_back(Load(std::move(handler)));
  return spec;
}

class TwoModels {
 public:
  TwoModels() {
    std::vector<ModelSpec> models;
    models.push_back(Model("a", 100, &a_));
    models.push_back(Model("b", 200, &b_));
    ServerOptions options;
    options.address = "127.0.0.1:0";
    auto started = ModelServer::Start(options, std::move(models));
    REQUIRE(started.ok());
    server_ = *std::move(started);
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    seed_ = ModelService::NewStub(channel);
    oip_ = inference::GRPCInferenceService::NewStub(channel);
  }
  ~TwoModels() {
    a_->Hold(false);
    b_->Hold(false);
  }

  // y_1 of x_1 = 1 (params 1, 0) from the first model, over ModelService, or the error. Any
  // thread (no Catch assertion here).
  std::string Evaluate() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inRequest request;
    request.set_inp_dict_bytes(Payload({1}, {1, 0}));
    outCalc response;
    const grpc::Status status = seed_->EvaluateModel(&context, request, &response);
    return status.ok() ? response.response_bytes() : "error: " + status.error_message();
  }

  // y of x = (1, 0, 0) from `model`, over the Open Inference Protocol.
  grpc::Status Infer(const std::string& model, std::vector<float>* y) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inference::ModelInferResponse response;
    const grpc::Status status = oip_->ModelInfer(
        &context, oip::EncodeInferRequest(model, {{"x", {1, 3}, {1, 0, 0}}}, true), &response);
    if (status.ok()) *y = oip::DecodeOutput(response)->values;
    return status;
  }

  ModelServer& server() { return *server_; }
  FakeModelControl& a() { return *a_; }
  FakeModelControl& b() { return *b_; }

 private:
  std::shared_ptr<FakeModelControl> a_, b_;
  std::unique_ptr<ModelServer> server_;
  std::unique_ptr<ModelService::Stub> seed_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip_;
};

TEST_CASE("ModelService serves the first model; ModelInfer routes by model_name", "[models]") {
  TwoModels server;
  CHECK(server.Evaluate() == R"({"prediction": {"y_1": [101]}})");
  std::vector<float> y;
  REQUIRE(server.Infer("a", &y).ok());
  CHECK(y == std::vector<float>{101, 1});
  REQUIRE(server.Infer("b", &y).ok());
  CHECK(y == std::vector<float>{201, 1});
  const grpc::Status unknown = server.Infer("default", &y);
  CHECK(unknown.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(unknown.error_message() == R"(unknown model "default"; this server serves "a", "b")");
  CHECK(server.a().batch_rows() == std::vector<int64_t>{1, 1});
  CHECK(server.b().batch_rows() == std::vector<int64_t>{1});
}

TEST_CASE("each model batches on its own: a held model does not hold the other", "[models]") {
  TwoModels server;
  server.a().Hold(true);
  std::future<std::string> held = std::async(std::launch::async, [&] { return server.Evaluate(); });
  REQUIRE(server.a().WaitForForwards(1));
  std::vector<float> y;
  CHECK(server.Infer("b", &y).ok());  // answered while model a is busy
  CHECK(y == std::vector<float>{201, 1});
  server.a().Hold(false);
  CHECK(held.get() == R"({"prediction": {"y_1": [101]}})");
}

TEST_CASE("metrics carry each model's series under its label", "[models]") {
  TwoModels server;
  server.Evaluate();
  server.Evaluate();
  std::vector<float> y;
  REQUIRE(server.Infer("b", &y).ok());
  REQUIRE(WaitFor([&] { return server.server().metrics().batches() == 3; }));
  const std::string text = server.server().metrics().Render();
  CHECK_THAT(text, Catch::Contains(R"(model_server_batch_requests_count{model="a"} 2)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_batch_requests_count{model="b"} 1)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_queue_time_seconds_count{model="b"} 1)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_forward_passes_total{model="a"} 2)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_model_version{model="a"} 1)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_queued_requests{model="b"} 0)"));
  CHECK(server.server().metrics().batched_requests() == 3);
}

TEST_CASE("model lists that cannot be served are refused", "[models]") {
  std::vector<ModelSpec> twice;
  twice.push_back(Model("a", 0));
  twice.push_back(Model("a", 1));
  auto started = ModelServer::Start({}, std::move(twice));
  CHECK(started.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(started.status().message() == R"(model name "a" is given twice)");

  std::vector<ModelSpec> bad_name;
  bad_name.push_back(Model("a/b", 0));
  started = ModelServer::Start({}, std::move(bad_name));
  CHECK(started.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(started.status().message()), Catch::Contains(R"(model name "a/b")"));

  CHECK(ModelServer::Start({}, std::vector<ModelSpec>{}).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

// A model whose signature differs from FakeHandler's: a swap to it is refused.
class FourInputs final : public handlers::ModelHandler {
 public:
  absl::Status Initialize() override { return absl::OkStatus(); }
  const handlers::ModelSignature& signature() const override { return signature_; }
  handlers::InitializeTimes initialize_times() const override { return {}; }
  std::vector<char*> PrepareBatch(const std::vector<handlers::Dims>&) override { return {}; }
  absl::StatusOr<const std::vector<handlers::OutputTensor>*> Run() override {
    return absl::InternalError("never run");
  }
  void Cleanup() override {}

 private:
  handlers::ModelSignature signature_ = [] {
    handlers::SeedSignature seed;
    seed.num_inputs = 4;
    seed.num_outputs = 2;
    seed.num_params = 2;
    seed.default_params = {1, 0};
    return handlers::SeedModelSignature(seed, 4096);
  }();
};

TEST_CASE(
    "a swap runs new batches on the new version and releases the old one after its last "
    "batch; failed swaps leave the serving version",
    "[swap]") {
  // Each load makes the next version (two instances, two batch threads); the file is never read.
  struct Versions {
    int loads = 0;
    std::vector<std::shared_ptr<FakeModelControl>> controls;  // [version 1 a, b, version 2 a, ...]
  };
  auto versions = std::make_shared<Versions>();
  const auto make = [versions](float offset) {
    Instances instances;
    for (int i = 0; i < 2; ++i) {
      auto handler = std::make_unique<FakeHandler>(offset);
      versions->controls.push_back(handler->control());
      instances.push_back(Load(std::move(handler)));
    }
    return instances;
  };
  ModelSpec spec;
  spec.name = "m";
  spec.instances = make(100);
  spec.source.path = "/dev/null";
  spec.source.load = [versions, make]() -> absl::StatusOr<Instances> {
    switch (++versions->loads) {
      case 1:
        return make(200);
      case 2:
        return absl::InvalidArgumentError("cannot load TorchScript model: broken");
      case 3: {
        Instances other;
        for (int i = 0; i < 2; ++i) {
          other.push_back(*handlers::LoadedModel::Load(std::make_unique<FourInputs>()));
        }
        return other;
      }
      default:
        return make(300);
    }
  };
  std::vector<ModelSpec> models;
  models.push_back(std::move(spec));
  ServerOptions options;
  options.address = "127.0.0.1:0";
  auto started = ModelServer::Start(options, std::move(models));
  REQUIRE(started.ok());
  ModelServer& server = **started;
  const auto v1 = versions->controls;  // a held forward must not outlive a failed REQUIRE
  struct Release {
    ~Release() {
      for (const auto& control : held) control->Hold(false);
    }
    std::vector<std::shared_ptr<FakeModelControl>> held;
  } release{v1};
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.port()),
                                     grpc::InsecureChannelCredentials());
  auto oip_stub = inference::GRPCInferenceService::NewStub(channel);
  // y_1 of x = (1, 0, 0) and the version that computed it, or the error.
  const auto infer = [&oip_stub]() -> std::pair<std::string, float> {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    inference::ModelInferResponse response;
    const grpc::Status status = oip_stub->ModelInfer(
        &context, oip::EncodeInferRequest("m", {{"x", {1, 3}, {1, 0, 0}}}, true), &response);
    if (!status.ok()) return {"error: " + status.error_message(), 0};
    return {response.model_version(), oip::DecodeOutput(response)->values[0]};
  };
  const auto metric = [&server](const std::string& series) {
    return server.metrics().Render().find(series + "\n") != std::string::npos;
  };

  // Version 1 holds a batch on one batch thread while the swap happens.
  for (const auto& control : v1) control->Hold(true);
  std::future<std::pair<std::string, float>> held = std::async(std::launch::async, infer);
  REQUIRE(WaitFor([&] { return v1[0]->batch_rows().size() + v1[1]->batch_rows().size() == 1; }));
  server.ReloadModels();
  REQUIRE(WaitFor([&] { return metric(R"(model_server_model_version{model="m"} 2)"); }));
  // New batches run on version 2, on the other batch thread, while version 1 is still busy.
  CHECK(infer() == std::pair<std::string, float>{"2", 201});
  CHECK(metric(R"(model_server_model_versions_loaded{model="m"} 2)"));
  CHECK_FALSE(v1[0]->cleaned_up());
  CHECK_FALSE(v1[1]->cleaned_up());
  for (const auto& control : v1) control->Hold(false);
  CHECK(held.get() == std::pair<std::string, float>{"1", 101});  // its batch ran on version 1
  // Version 1 goes once its last batch is done.
  CHECK(WaitFor([&] { return v1[0]->cleaned_up() && v1[1]->cleaned_up(); }));
  CHECK(WaitFor([&] { return metric(R"(model_server_model_versions_loaded{model="m"} 1)"); }));
  CHECK(metric(R"(model_server_model_reloads_total{model="m",result="ok"} 1)"));

  // A version that does not load, then one of another signature: refused, version 2 serves on.
  server.ReloadModels();
  REQUIRE(WaitFor(
      [&] { return metric(R"(model_server_model_reloads_total{model="m",result="failed"} 1)"); }));
  CHECK(infer() == std::pair<std::string, float>{"2", 201});
  server.ReloadModels();
  REQUIRE(WaitFor(
      [&] { return metric(R"(model_server_model_reloads_total{model="m",result="failed"} 2)"); }));
  CHECK(infer() == std::pair<std::string, float>{"2", 201});
  CHECK(metric(R"(model_server_model_version{model="m"} 2)"));

  server.ReloadModels();
  REQUIRE(WaitFor([&] { return metric(R"(model_server_model_version{model="m"} 3)"); }));
  CHECK(infer() == std::pair<std::string, float>{"3", 301});
  const auto v2 = std::vector<std::shared_ptr<FakeModelControl>>(versions->controls.begin() + 2,
                                                                 versions->controls.begin() + 4);
  CHECK(WaitFor([&] { return v2[0]->cleaned_up() && v2[1]->cleaned_up(); }));
  CHECK_FALSE(versions->controls[4]->cleaned_up());  // version 3 serves
}

}  // namespace
}  // namespace model_server::server
