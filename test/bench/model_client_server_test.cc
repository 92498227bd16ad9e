// ModelClient against an in-process gRPC server that answers with its x_1 column scaled by the
// first parameter: the request the client builds reaches a server intact, and the answer is read.

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <catch2/catch.hpp>

#include "model_client.h"
#include "simdjson.h"

namespace {

class ScalingService final : public ModelService::Service {
  grpc::Status EvaluateModel(grpc::ServerContext*, const inRequest* request,
                             outCalc* reply) override {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(request->inp_dict_bytes()).get(root) != simdjson::SUCCESS) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "not JSON");
    }
    simdjson::dom::array x;
    double scale;
    if (root["inputs"]["x_1"].get(x) != simdjson::SUCCESS ||
        root["analyticSettings"]["tunableParams"]["bias_weight_array"].at(0).get(scale) !=
            simdjson::SUCCESS) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no x_1 or parameters");
    }
    std::string json = "{\"prediction\": {\"y_1\": [";
    for (size_t i = 0; i < x.size(); ++i) {
      json += (i > 0 ? ", " : "") + std::to_string(double(x.at(i)) * scale);
    }
    reply->set_response_bytes(json + "]}}");
    return grpc::Status::OK;
  }
};

}  // namespace

TEST_CASE("ModelClient evaluates through a real gRPC server") {
  ScalingService service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  const std::string target = "127.0.0.1:" + std::to_string(port);

  std::shared_ptr<grpc::Channel> channel = model_client::MakeChannel(target);
  REQUIRE(model_client::WaitForServing(channel).ok());
  model_client::ModelClient client(channel);

  const absl::StatusOr<model_client::Columns> outputs =
      client.Evaluate({{"x_1", {1, 2, 3}}, {"x_2", {0, 0, 0}}}, {2, 0, 0, 0, 0}, {"y_1"});
  REQUIRE(outputs.ok());
  REQUIRE(outputs->size() == 1);
  CHECK(outputs->front().first == "y_1");
  CHECK(outputs->front().second == std::vector<double>{2, 4, 6});

  // The server's INVALID_ARGUMENT comes back as absl's, not retried.
  const absl::StatusOr<model_client::Columns> refused = client.Evaluate({{"x_9", {1}}}, {1}, {});
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);

  server->Shutdown();
}
