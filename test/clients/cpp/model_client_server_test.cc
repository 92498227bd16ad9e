// ModelClient against in-process gRPC servers: one that answers with its x_1 column scaled by
// the first parameter (the request the client builds reaches a server intact, and the answer is
// read; the seed's retry policy acts), and the real ModelServer with the fake model (the
// non-finite values the server writes are read back).

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>

#include "clients/cpp/model_client.h"
#include "server/model_server.h"
#include "test/fake_handler.h"

namespace model_server::client {
namespace {

class ScalingService final : public ModelService::Service {
 public:
  // The first `count` calls are answered UNAVAILABLE, as a server that is starting or draining.
  void RefuseFirst(int count) { refuse_ = count; }
  int calls() const { return calls_; }

 private:
  grpc::Status EvaluateModel(grpc::ServerContext*, const inRequest* request,
                             outCalc* reply) override {
    if (calls_++ < refuse_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "not yet");
    handlers::SeedSignature seed;
    seed.num_inputs = 2;
    seed.num_outputs = 1;
    seed.num_params = 5;
    absl::StatusOr<protocol::SeedRequest> decoded = protocol::DecodeRequest(
        request->inp_dict_bytes(), handlers::SeedModelSignature(seed, 4096));
    if (!decoded.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string(decoded.status().message()));
    }
    const handlers::InferenceRequest& columns = decoded->request;
    const float* x = reinterpret_cast<const float*>(columns.inputs[0].data.data());
    const float* params = reinterpret_cast<const float*>(columns.inputs[1].data.data());
    std::vector<float> y(columns.rows);
    for (int64_t row = 0; row < columns.rows; ++row) y[row] = x[row * 2] * params[0];
    protocol::EncodeResponse(decoded->output_names, y.data(), columns.rows, 1,
                             reply->mutable_response_bytes());
    return grpc::Status::OK;
  }

  std::atomic<int> refuse_{0};
  std::atomic<int> calls_{0};
};

// A ScalingService on a free port; shut down on destruction.
class ScalingServer {
 public:
  ScalingServer() {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~ScalingServer() { server_->Shutdown(); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  ScalingService& service() { return service_; }

 private:
  ScalingService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_CASE("ModelClient evaluates through a real gRPC server", "[client]") {
  ScalingServer server;
  std::shared_ptr<grpc::Channel> channel = MakeChannel(server.target());
  REQUIRE(WaitForServing(channel).ok());
  ModelClient client(channel);

  const absl::StatusOr<Columns> outputs =
      client.Evaluate({{"x_1", {1, 2, 3}}, {"x_2", {0, 0, 0}}}, {2, 0, 0, 0, 0}, {"y_1"});
  REQUIRE(outputs.ok());
  REQUIRE(outputs->size() == 1);
  CHECK(outputs->front().first == "y_1");
  CHECK(outputs->front().second == std::vector<double>{2, 4, 6});

  // The server's INVALID_ARGUMENT comes back as absl's, not retried.
  const int calls = server.service().calls();
  const absl::StatusOr<Columns> refused = client.Evaluate({{"x_9", {1}}}, {1}, {});
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(server.service().calls() == calls + 1);
}

TEST_CASE("gRPC applies the seed's retry policy: UNAVAILABLE is retried after about 1 s",
          "[client]") {
  ScalingServer server;
  server.service().RefuseFirst(1);
  const Columns inputs = {{"x_1", {1}}, {"x_2", {0}}};
  const std::vector<double> params = {3, 0, 0, 0, 0};
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<Columns> outputs =
      ModelClient(MakeChannel(server.target())).Evaluate(inputs, params, {"y_1"});
  const auto waited = std::chrono::steady_clock::now() - start;
  REQUIRE(outputs.ok());
  CHECK(outputs->front().second == std::vector<double>{3});
  CHECK(server.service().calls() == 2);
  // initialBackoff 1 s; gRPC draws each back-off within +-20 % of it.
  CHECK(waited >= std::chrono::milliseconds(800));

  // Without the policy the same refusal reaches the caller.
  server.service().RefuseFirst(3);
  const absl::StatusOr<Columns> plain =
      ModelClient(MakeChannel(server.target(), {.seed_retry_policy = false}))
          .Evaluate(inputs, params, {"y_1"});
  CHECK(plain.status().code() == absl::StatusCode::kUnavailable);
  CHECK(server.service().calls() == 3);
}

TEST_CASE("ModelClient reads the NaN and infinities the real server writes", "[client]") {
  server::ServerOptions options;
  options.address = "127.0.0.1:0";
  options.metrics_address = "";
  absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> model =
      handlers::LoadedModel::Load(std::make_unique<testing_support::FakeHandler>());
  REQUIRE(model.ok());
  absl::StatusOr<std::unique_ptr<server::ModelServer>> started =
      server::ModelServer::Start(options, *std::move(model));
  REQUIRE(started.ok());
  ModelClient client(MakeChannel("127.0.0.1:" + std::to_string((*started)->port())));
  // The fake model: y_1 = p0 * (x_1 + x_2 + x_3) + p1, y_2 = x_1. 1e39 is beyond float range,
  // so the server's float input is infinite: y_1 is inf, -inf, inf - inf = NaN, and a finite
  // value; the server writes Infinity, -Infinity and NaN, as Python's json does.
  const absl::StatusOr<Columns> outputs = client.Evaluate(
      {{"x_1", {1e39, -1e39, 1e39, 1.5}}, {"x_2", {0, 0, -1e39, 0}}, {"x_3", {0, 0, 0, 0}}}, {1, 0},
      {"y_1", "y_2"});
  REQUIRE(outputs.ok());
  REQUIRE(outputs->size() == 2);
  const std::vector<double>& y_1 = (*outputs)[0].second;
  const std::vector<double>& y_2 = (*outputs)[1].second;
  REQUIRE(y_1.size() == 4);
  CHECK((std::isinf(y_1[0]) && y_1[0] > 0));
  CHECK((std::isinf(y_1[1]) && y_1[1] < 0));
  CHECK(std::isnan(y_1[2]));
  CHECK(y_1[3] == 1.5);
  REQUIRE(y_2.size() == 4);
  CHECK((std::isinf(y_2[0]) && y_2[0] > 0));
  CHECK((std::isinf(y_2[1]) && y_2[1] < 0));
  CHECK((std::isinf(y_2[2]) && y_2[2] > 0));
  CHECK(y_2[3] == 1.5);
}

}  // namespace
}  // namespace model_server::client
