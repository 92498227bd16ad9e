// The real server with the TorchScript demo model, real gRPC clients, answers checked against
// the model run in-process.

// torch (through glog) defines CHECK; include it first and give the name to Catch.
#include <torch/cuda.h>
#include <torch/script.h>
#undef CHECK
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <future>
#include <random>

#include "absl/strings/str_cat.h"
#include "handlers/torch/demo_model.h"
#include "handlers/torch/torch_handler.h"
#include "protocol/seed_json.h"
#include "protos/health.grpc.pb.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/model_server.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

constexpr int kRows = 50;

struct Case {
  std::vector<float> x;       // [kRows, 3]
  std::vector<float> params;  // [5]
};

std::string Payload(const Case& c) {
  protocol::Columns columns;
  for (int column = 0; column < 3; ++column) {
    std::vector<double> values;
    for (int row = 0; row < kRows; ++row) values.push_back(c.x[row * 3 + column]);
    columns.emplace_back(absl::StrCat("x_", column + 1), std::move(values));
  }
  return protocol::EncodeRequest(columns, std::vector<double>(c.params.begin(), c.params.end()),
                                 {"y_1"});
}

TEST_CASE("64 concurrent requests with different tunables match the model run in-process",
          "[torch][server]") {
  handlers::TorchHandlerOptions handler_options;
  handler_options.device = "cpu";
  auto loaded = handlers::LoadedModel::Load(handlers::MakeTorchHandler(handler_options));
  REQUIRE(loaded.ok());
  ServerOptions options;
  options.address = "127.0.0.1:0";
  auto started = ModelServer::Start(options, *std::move(loaded));
  REQUIRE(started.ok());
  std::unique_ptr<ModelServer> model_server = *std::move(started);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", model_server->port()),
                                     grpc::InsecureChannelCredentials());

  for (const std::string service : {"", "modelservice"}) {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    REQUIRE(health->Check(&context, request, &response).ok());
    CHECK(response.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  }

  std::mt19937 random(42);
  std::uniform_real_distribution<float> uniform(-2, 2);
  std::vector<Case> cases(64);
  for (Case& c : cases) {
    for (int i = 0; i < kRows * 3; ++i) c.x.push_back(uniform(random));
    for (int i = 0; i < 5; ++i) c.params.push_back(uniform(random));
  }
  cases[0].params = {1, 0, -1, 2, 0};  // integers

  std::vector<std::future<std::pair<grpc::Status, std::string>>> replies;
  for (const Case& c : cases) {
    replies.push_back(std::async(std::launch::async, [&channel, payload = Payload(c)] {
      auto stub = ModelService::NewStub(channel);
      grpc::ClientContext context;
      inRequest request;
      request.set_inp_dict_bytes(payload);
      outCalc response;
      grpc::Status status = stub->EvaluateModel(&context, request, &response);
      return std::make_pair(status, response.response_bytes());
    }));
  }

  torch::jit::Module reference = handlers::MakeDemoModel(32);
  for (size_t i = 0; i < cases.size(); ++i) {
    auto [status, body] = replies[i].get();
    REQUIRE(status.ok());
    const torch::Tensor x = torch::tensor(cases[i].x).reshape({kRows, 3});
    const torch::Tensor p = torch::tensor(cases[i].params).reshape({1, 5}).expand({kRows, 5});
    const torch::Tensor expected = reference.forward({x, p}).toTensor().reshape({kRows});
    const absl::StatusOr<protocol::Columns> prediction = protocol::DecodeResponse(body);
    REQUIRE(prediction.ok());
    const std::vector<double>& served = prediction->at(0).second;
    REQUIRE(served.size() == static_cast<size_t>(kRows));
    for (int row = 0; row < kRows; ++row) {
      CHECK(served[row] == Approx(expected[row].item<float>()).margin(1e-5));
    }
  }
  // Batches are recorded once their calls are answered.
  CHECK(testing_support::WaitFor([&] { return model_server->metrics().batched_requests() == 64; }));
  model_server->Shutdown();
}

TEST_CASE("a request larger than a batch runs in pieces the warm-up covered, answered as one forward",
          "[torch][server]") {
  handlers::TorchHandlerOptions handler_options;
  handler_options.device = "cpu";
  auto loaded = handlers::LoadedModel::Load(handlers::MakeTorchHandler(handler_options));
  REQUIRE(loaded.ok());
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.batching.max_batch_rows = 8;  // the model itself takes 4096
  auto started = ModelServer::Start(options, *std::move(loaded));
  REQUIRE(started.ok());
  std::unique_ptr<ModelServer> model_server = *std::move(started);
  auto stub = ModelService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", model_server->port()), grpc::InsecureChannelCredentials()));

  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(-2, 2);
  Case c;
  for (int i = 0; i < kRows * 3; ++i) c.x.push_back(uniform(random));
  for (int i = 0; i < 5; ++i) c.params.push_back(uniform(random));
  grpc::ClientContext context;
  inRequest request;
  request.set_inp_dict_bytes(Payload(c));
  outCalc response;
  REQUIRE(stub->EvaluateModel(&context, request, &response).ok());

  // The unsplit forward of all 50 rows, in-process.
  torch::jit::Module reference = handlers::MakeDemoModel(32);
  const torch::Tensor x = torch::tensor(c.x).reshape({kRows, 3});
  const torch::Tensor p = torch::tensor(c.params).reshape({1, 5}).expand({kRows, 5});
  const torch::Tensor expected = reference.forward({x, p}).toTensor().reshape({kRows});
  const absl::StatusOr<protocol::Columns> prediction =
      protocol::DecodeResponse(response.response_bytes());
  REQUIRE(prediction.ok());
  const std::vector<double>& served = prediction->at(0).second;
  REQUIRE(served.size() == static_cast<size_t>(kRows));
  for (int row = 0; row < kRows; ++row) {
    CHECK(served[row] == Approx(expected[row].item<float>()).margin(1e-5));
  }
  // 50 rows in forwards of at most 8: 6 of 8 and one of 2.
  CHECK(testing_support::WaitFor([&] { return model_server->metrics().batches() == 1; }));
  CHECK(model_server->metrics().forward_passes() == 7);
  model_server->Shutdown();
}

}  // namespace
}  // namespace model_server::server
