// ModelClient against an in-process gRPC server that answers with its x_1 column scaled by the
// first parameter: the request the client builds reaches a server intact, and the answer is read.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <catch2/catch.hpp>

#include "clients/cpp/model_client.h"

namespace model_server::client {
namespace {

class ScalingService final : public ModelService::Service {
  grpc::Status EvaluateModel(grpc::ServerContext*, const inRequest* request,
                             outCalc* reply) override {
    handlers::ModelSignature signature;
    signature.num_inputs = 2;
    signature.num_outputs = 1;
    signature.num_params = 5;
    absl::StatusOr<handlers::InferenceRequest> decoded =
        protocol::DecodeRequest(request->inp_dict_bytes(), signature);
    if (!decoded.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string(decoded.status().message()));
    }
    std::vector<float> y(decoded->rows);
    for (int64_t row = 0; row < decoded->rows; ++row) {
      y[row] = decoded->inputs[row * 2] * decoded->params[0];
    }
    protocol::EncodeResponse(decoded->output_names, y.data(), decoded->rows, 1,
                             reply->mutable_response_bytes());
    return grpc::Status::OK;
  }
};

TEST_CASE("ModelClient evaluates through a real gRPC server", "[client]") {
  ScalingService service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  const std::string target = "127.0.0.1:" + std::to_string(port);

  std::shared_ptr<grpc::Channel> channel = MakeChannel(target);
  REQUIRE(WaitForServing(channel).ok());
  ModelClient client(channel);

  const absl::StatusOr<Columns> outputs =
      client.Evaluate({{"x_1", {1, 2, 3}}, {"x_2", {0, 0, 0}}}, {2, 0, 0, 0, 0}, {"y_1"});
  REQUIRE(outputs.ok());
  REQUIRE(outputs->size() == 1);
  CHECK(outputs->front().first == "y_1");
  CHECK(outputs->front().second == std::vector<double>{2, 4, 6});

  // The server's INVALID_ARGUMENT comes back as absl's, not retried.
  const absl::StatusOr<Columns> refused = client.Evaluate({{"x_9", {1}}}, {1}, {});
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);

  server->Shutdown();
}

}  // namespace
}  // namespace model_server::client
