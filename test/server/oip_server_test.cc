// The Open Inference Protocol through the real server with a fake model: health, metadata,
// ModelInfer in both data forms, bad requests, readiness during a drain, and ModelInfer and
// EvaluateModel requests sharing batches.

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "protocol/oip.h"
#include "server/oip_service.h"
#include "test/server/test_server.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

using testing::Payload;
using testing::Reply;
using testing::TestServer;
using testing_support::WaitFor;
namespace oip = protocol::oip;

// The fake model: y = [p0 * (x_1 + x_2 + x_3) + p1, x_1] per row; default params (1, 0).
inference::ModelInferRequest Request(std::vector<float> x, std::vector<oip::Fp32Tensor> more = {},
                                     bool raw = true) {
  std::vector<oip::Fp32Tensor> inputs{{"x", {static_cast<int64_t>(x.size() / 3), 3}, x}};
  for (auto& tensor : more) inputs.push_back(std::move(tensor));
  return oip::EncodeInferRequest(kDefaultModelName, inputs, raw);
}

std::vector<float> Y(const inference::ModelInferResponse& response) {
  absl::StatusOr<oip::Fp32Tensor> y = oip::DecodeOutput(response);
  REQUIRE(y.ok());
  REQUIRE(y->shape == std::vector<int64_t>{static_cast<int64_t>(y->values.size() / 2), 2});
  return y->values;
}

TEST_CASE("OIP health and metadata describe the model", "[oip]") {
  TestServer server;
  inference::GRPCInferenceService::Stub& oip = server.oip();
  {
    grpc::ClientContext context;
    inference::ServerLiveResponse live;
    REQUIRE(oip.ServerLive(&context, {}, &live).ok());
    CHECK(live.live());
  }
  {
    grpc::ClientContext context;
    inference::ServerReadyResponse ready;
    REQUIRE(oip.ServerReady(&context, {}, &ready).ok());
    CHECK(ready.ready());
  }
  const auto model_ready = [&oip](const std::string& name, const std::string& version) {
    grpc::ClientContext context;
    inference::ModelReadyRequest request;
    request.set_name(name);
    request.set_version(version);
    inference::ModelReadyResponse response;
    REQUIRE(oip.ModelReady(&context, request, &response).ok());
    return response.ready();
  };
  CHECK(model_ready("default", ""));
  CHECK(model_ready("default", "1"));
  CHECK_FALSE(model_ready("default", "2"));
  CHECK_FALSE(model_ready("other", ""));
  {
    grpc::ClientContext context;
    inference::ServerMetadataResponse metadata;
    REQUIRE(oip.ServerMetadata(&context, {}, &metadata).ok());
    CHECK(metadata.name() == "model_server");
  }
  grpc::ClientContext context;
  inference::ModelMetadataRequest request;
  request.set_name("default");
  inference::ModelMetadataResponse metadata;
  REQUIRE(oip.ModelMetadata(&context, request, &metadata).ok());
  CHECK(metadata.name() == "default");
  CHECK(std::vector<std::string>(metadata.versions().begin(), metadata.versions().end()) ==
        std::vector<std::string>{"1"});
  CHECK(metadata.platform() == "pytorch_libtorch");  // Triton's name
  REQUIRE(metadata.inputs_size() == 2);
  CHECK(metadata.inputs(0).name() == "x");
  CHECK(metadata.inputs(0).datatype() == "FP32");
  CHECK(std::vector<int64_t>(metadata.inputs(0).shape().begin(),
                             metadata.inputs(0).shape().end()) == std::vector<int64_t>{-1, 3});
  CHECK(metadata.inputs(1).name() == "params");
  CHECK(std::vector<int64_t>(metadata.inputs(1).shape().begin(),
                             metadata.inputs(1).shape().end()) == std::vector<int64_t>{-1, 2});
  REQUIRE(metadata.outputs_size() == 1);
  CHECK(metadata.outputs(0).name() == "y");
  CHECK(std::vector<int64_t>(metadata.outputs(0).shape().begin(),
                             metadata.outputs(0).shape().end()) == std::vector<int64_t>{-1, 2});

  grpc::ClientContext unknown_context;
  request.set_name("other");
  const grpc::Status unknown = oip.ModelMetadata(&unknown_context, request, &metadata);
  CHECK(unknown.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(unknown.error_message(), Catch::Contains("unknown model \"other\""));
}

TEST_CASE("ModelInfer: raw tensors in, raw y out, a parameter vector per row", "[oip]") {
  TestServer server;
  inference::ModelInferRequest request =
      Request({1, 2, 3, 4, 5, 6}, {{"params", {2, 2}, {1, 0, 2, 1}}});
  request.set_id("call-7");
  inference::ModelInferResponse response;
  REQUIRE(server.Infer(request, &response).ok());
  CHECK(response.model_name() == "default");
  CHECK(response.model_version() == "1");
  CHECK(response.id() == "call-7");
  REQUIRE(response.outputs_size() == 1);
  CHECK(response.outputs(0).name() == "y");
  CHECK(response.outputs(0).datatype() == "FP32");
  CHECK(response.raw_output_contents_size() == 1);  // the default form
  CHECK(Y(response) == std::vector<float>{6, 1, 31, 4});
}

TEST_CASE("ModelInfer: typed tensors in, typed y out when asked, broadcast and default params",
          "[oip]") {
  TestServer server;
  inference::ModelInferRequest broadcast =
      Request({1, 2, 3, 4, 5, 6}, {{"params", {1, 2}, {2, 1}}}, /*raw=*/false);
  (*broadcast.mutable_parameters())["binary_data_output"].set_bool_param(false);
  inference::ModelInferResponse response;
  REQUIRE(server.Infer(broadcast, &response).ok());
  CHECK(response.raw_output_contents_size() == 0);
  CHECK(response.outputs(0).contents().fp32_contents_size() == 4);
  CHECK(Y(response) == std::vector<float>{13, 1, 31, 4});

  // Without params the model's default_params (1, 0) apply; the output asked for by name.
  inference::ModelInferRequest defaults = Request({1, 1, 1});
  auto* output = defaults.add_outputs();
  output->set_name("y");
  (*output->mutable_parameters())["binary_data"].set_bool_param(false);
  REQUIRE(server.Infer(defaults, &response).ok());
  CHECK(response.raw_output_contents_size() == 0);
  CHECK(Y(response) == std::vector<float>{3, 1});
}

TEST_CASE("bad ModelInfer requests get INVALID_ARGUMENT and the server keeps serving", "[oip]") {
  TestServer server;
  struct Case {
    inference::ModelInferRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({Request({1, 2, 3}), ""});
  cases.back().request.set_model_name("nope");
  cases.back().message = "unknown model \"nope\"";
  cases.push_back({Request({1, 2, 3}), "model \"default\" has no version \"9\""});
  cases.back().request.set_model_version("9");
  cases.push_back({Request({1, 2, 3}), "datatype \"FP64\""});
  cases.back().request.mutable_inputs(0)->set_datatype("FP64");
  cases.push_back({Request({1, 2, 3, 4}), "raw_input_contents of input \"x\" has 16 bytes"});
  cases.back().request.mutable_inputs(0)->set_shape(0, 1);
  for (Case& c : cases) {
    inference::ModelInferResponse response;
    const grpc::Status status = server.Infer(c.request, &response);
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains(c.message));
  }
  inference::ModelInferResponse response;
  CHECK(server.Infer(Request({1, 2, 3}), &response).ok());
  CHECK(server.model().batch_rows() == std::vector<int64_t>{1});  // no bad request was computed
}

TEST_CASE("ModelInfer and EvaluateModel requests share forward passes", "[oip]") {
  TestServer server;
  server.model().Hold(true);
  std::future<Reply> first = server.EvaluateAsync(Payload({1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(1));
  std::vector<std::future<Reply>> seed_replies;
  // Catch's assertions are for this thread only: the calls' threads return what they got.
  std::vector<std::future<std::pair<grpc::Status, inference::ModelInferResponse>>> oip_replies;
  for (int i = 0; i < 4; ++i) {
    seed_replies.push_back(server.EvaluateAsync(Payload({double(i)}, {2, double(i)})));
    oip_replies.push_back(std::async(std::launch::async, [&server, i] {
      // Two rows, each with its own parameters.
      const float x = static_cast<float>(i);
      std::pair<grpc::Status, inference::ModelInferResponse> reply;
      reply.first = server.Infer(Request({x, 0, 0, x, 1, 0}, {{"params", {2, 2}, {1, 0, 3, x}}}),
                                 &reply.second);
      return reply;
    }));
  }
  // All 8 queue behind the held forward pass, then run as one batch.
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 8; }));
  server.model().Hold(false);
  CHECK(first.get().status.ok());
  for (int i = 0; i < 4; ++i) {
    CHECK(seed_replies[i].get().body ==
          absl::StrCat(R"({"prediction": {"y_1": [)", 2 * i + i, "]}}"));
    const float x = static_cast<float>(i);
    const auto [status, response] = oip_replies[i].get();
    REQUIRE(status.ok());
    CHECK(Y(response) == std::vector<float>{x, x, 3 * (x + 1) + x, x});
  }
  CHECK(server.model().batch_rows() == std::vector<int64_t>{1, 12});
  const std::string text = server.server().metrics().Render();
  // The second batch carried all 8 requests: 4 seed (one row each) and 4 OIP (two rows each).
  CHECK_THAT(text,
             Catch::Contains(R"(model_server_batch_requests_bucket{model="default",le="4"} 1)"));
  CHECK_THAT(text,
             Catch::Contains(R"(model_server_batch_requests_bucket{model="default",le="8"} 2)"));
  CHECK_THAT(text,
             Catch::Contains(R"(model_server_requests_total{method="ModelInfer",code="OK"} 4)"));
}

TEST_CASE("OIP readiness follows the server's serving flag; liveness stays", "[oip]") {
  // OipService alone on a server of its own, so the flag can be turned while calls are answered
  // (ModelServer turns it false at the start of a drain, when gRPC refuses calls soon after).
  inference::GRPCInferenceService::AsyncService service;
  std::atomic<bool> serving{false};
  metrics::MetricsOptions metrics_options;
  metrics_options.address = "";
  auto metrics = metrics::ServerMetrics::Start(metrics_options);
  REQUIRE(metrics.ok());
  ModelRegistry models(metrics->get());
  auto catalog = MakeFileCatalog({});
  REQUIRE(catalog.ok());
  auto manager =
      ModelManager::Start(*std::move(catalog), &models, nullptr, metrics->get(), ManagerOptions());
  REQUIRE(manager.ok());
  OipService oip(&service, &models, manager->get(), &serving, metrics->get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::ServerCompletionQueue> cq = builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  oip.Listen(cq.get(), 1);
  std::thread poller([&cq] { PollCompletionQueue(cq.get()); });
  auto stub = inference::GRPCInferenceService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  const auto ask = [&stub] {
    grpc::ClientContext ready_context, live_context;
    inference::ServerReadyResponse ready;
    inference::ServerLiveResponse live;
    REQUIRE(stub->ServerReady(&ready_context, {}, &ready).ok());
    REQUIRE(stub->ServerLive(&live_context, {}, &live).ok());
    CHECK(live.live());
    return ready.ready();
  };
  CHECK_FALSE(ask());  // before warm-up
  serving = true;
  CHECK(ask());
  serving = false;  // a drain has started
  CHECK_FALSE(ask());
  server->Shutdown();
  cq->Shutdown();
  poller.join();
}

}  // namespace
}  // namespace model_server::server
