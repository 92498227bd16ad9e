#pragma once

// The real server with fake models on a free port, and real gRPC clients of its services: what
// the transport tests share.

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "protocol/seed_json.h"
#include "protos/grpc_predict_v2.grpc.pb.h"
#include "protos/health.grpc.pb.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/model_server.h"
#include "test/fake_handler.h"

namespace model_server::server::testing {

struct Reply {
  grpc::Status status;
  std::string body;
};

// A request for rows x_1 = values, x_2 = x_3 = 0, with tunable parameters `params`.
inline std::string Payload(const std::vector<double>& x_1, const std::vector<double>& params) {
  const std::vector<double> zeros(x_1.size(), 0.0);
  return protocol::EncodeRequest({{"x_1", x_1}, {"x_2", zeros}, {"x_3", zeros}}, params, {"y_1"});
}

inline std::unique_ptr<handlers::LoadedModel> Load(
    std::unique_ptr<testing_support::FakeHandler> handler) {
  absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> loaded =
      handlers::LoadedModel::Load(std::move(handler));
  REQUIRE(loaded.ok());
  return *std::move(loaded);
}

class TestServer {
 public:
  explicit TestServer(ServerOptions options = {}) {
    options.address = "127.0.0.1:0";
    options.cq_threads = 2;
    auto handler = std::make_unique<testing_support::FakeHandler>();
    model_ = handler->control();
    auto started = ModelServer::Start(options, Load(std::move(handler)));
    REQUIRE(started.ok());
    server_ = *std::move(started);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = ModelService::NewStub(channel_);
    oip_ = inference::GRPCInferenceService::NewStub(channel_);
  }

  Reply Evaluate(const std::string& payload,
                 std::chrono::milliseconds deadline = std::chrono::milliseconds(20000)) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    inRequest request;
    request.set_inp_dict_bytes(payload);
    outCalc response;
    grpc::Status status = stub_->EvaluateModel(&context, request, &response);
    return {status, response.response_bytes()};
  }

  std::future<Reply> EvaluateAsync(std::string payload) {
    return std::async(std::launch::async, [this, payload] { return Evaluate(payload); });
  }

  // A blocking ModelInfer.
  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return oip_->ModelInfer(&context, request, response);
  }

  // A test that stops early (a failed REQUIRE) must not leave the model held: the server's
  // shutdown would wait for that forward pass forever.
  ~TestServer() { model_->Hold(false); }

  testing_support::FakeModelControl& model() { return *model_; }
  ModelServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  ModelService::Stub& stub() { return *stub_; }
  inference::GRPCInferenceService::Stub& oip() { return *oip_; }

 private:
  std::shared_ptr<testing_support::FakeModelControl> model_;
  std::unique_ptr<ModelServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ModelService::Stub> stub_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> oip_;
};

inline grpc::health::v1::HealthCheckResponse::ServingStatus StandardHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
    grpc::Status* status) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  *status = health->Check(&context, request, &response);
  return response.status();
}

}  // namespace model_server::server::testing
