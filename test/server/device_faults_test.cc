// The server's side of the GPU path with a fake model: each batch thread warms its own instance
// up before SERVING, a lost device ends serving (every accepted call answered), a batch that
// runs out of memory is split and only the request that alone does not fit fails.

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/model_server.h"
#include "test/fake_handler.h"
#include "test/server/test_server.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

using testing::Load;
using testing::Payload;
using testing::Reply;
using testing::StandardHealth;
using testing::TestServer;
using testing_support::FakeHandler;
using testing_support::FakeModelControl;
using testing_support::WaitFor;

TEST_CASE("each batch thread warms its own instance up before the server says SERVING",
          "[server][gpu_path]") {
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  std::vector<std::shared_ptr<FakeModelControl>> controls;
  for (int i = 0; i < 3; ++i) {
    auto handler = std::make_unique<FakeHandler>();
    handler->control()->BindToThread();  // as a GPU instance is
    controls.push_back(handler->control());
    instances.push_back(Load(std::move(handler)));
  }
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.batching.max_batch_rows = 64;
  auto started = ModelServer::Start(options, std::move(instances));
  REQUIRE(started.ok());
  // Start has returned (health SERVING from here on): every warm-up is done.
  std::set<std::thread::id> warm_up_threads;
  for (const auto& control : controls) {
    const auto warm_up = control->warm_up();
    REQUIRE(warm_up.has_value());
    CHECK(warm_up->first != std::this_thread::get_id());  // not the loading thread
    CHECK(warm_up->second == 64);                         // the largest batch the executor runs
    warm_up_threads.insert(warm_up->first);
  }
  CHECK(warm_up_threads.size() == 3);  // one thread each

  // Every forward of an instance runs on the thread that warmed it up.
  auto stub = ModelService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*started)->port()), grpc::InsecureChannelCredentials()));
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 24; ++i) {
    calls.push_back(std::async(std::launch::async, [&stub, i] {
      grpc::ClientContext context;
      inRequest request;
      request.set_inp_dict_bytes(Payload({static_cast<double>(i)}, {1, 0}));
      outCalc response;
      return stub->EvaluateModel(&context, request, &response);
    }));
  }
  for (auto& call : calls) CHECK(call.get().ok());
  size_t forwards = 0;
  for (const auto& control : controls) {
    for (const std::thread::id thread : control->forward_threads()) {
      CHECK(thread == control->warm_up()->first);
      ++forwards;
    }
  }
  CHECK(forwards >= 1);
  (*started)->Shutdown();
}

TEST_CASE("a warm-up that fails is a load error naming the instance", "[server][gpu_path]") {
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  instances.push_back(Load(std::make_unique<FakeHandler>()));
  auto failing = std::make_unique<FakeHandler>();
  failing->control()->FailWarmUp(
      absl::ResourceExhaustedError("warm-up forward on 4096 rows failed: CUDA out of memory"));
  instances.push_back(Load(std::move(failing)));
  ServerOptions options;
  options.address = "127.0.0.1:0";
  const auto started = ModelServer::Start(options, std::move(instances));
  REQUIRE_FALSE(started.ok());
  // The model manager reports every failed model as INVALID_ARGUMENT, each with its reason.
  CHECK_THAT(std::string(started.status().message()),
             Catch::Contains("instance 1 warm-up: warm-up forward on 4096 rows failed"));
}

TEST_CASE("a lost device turns the server NOT_SERVING and fails, never drops, the calls after it",
          "[server][gpu_path]") {
  std::atomic<int> device_lost_calls{0};
  std::mutex mu;
  std::string fault_message;
  ServerOptions options;
  options.on_device_lost = [&](const absl::Status& fault) {
    ++device_lost_calls;
    std::lock_guard<std::mutex> lock(mu);
    fault_message = std::string(fault.message());
  };
  // Every call through the batcher, so that the calls below queue behind the held forward.
  options.max_idle_forward = std::chrono::microseconds(0);
  TestServer server(options);
  server.model().LoseDeviceAtForward(3);
  // Calls that finish before the fault are answered as always.
  const Reply first = server.Evaluate(Payload({1}, {2, 0.5}));
  const Reply second = server.Evaluate(Payload({2}, {2, 0.5}));
  CHECK(first.status.ok());
  CHECK(first.body == R"({"prediction": {"y_1": [2.5]}})");
  CHECK(second.status.ok());
  CHECK(testing_support::WaitFor([&] { return server.server().metrics().batches() == 2; }));

  // The third forward finds the device lost; calls queued behind it are answered too.
  server.model().Hold(true);
  std::vector<std::future<Reply>> calls;
  calls.push_back(server.EvaluateAsync(Payload({3}, {1, 0})));
  REQUIRE(server.model().WaitForForwards(3));
  for (int i = 0; i < 5; ++i) calls.push_back(server.EvaluateAsync(Payload({4.0 + i}, {1, 0})));
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 5; }));
  server.model().Hold(false);
  for (auto& call : calls) {
    const Reply reply = call.get();
    CHECK(reply.status.error_code() == grpc::StatusCode::UNAVAILABLE);
    CHECK_THAT(reply.status.error_message(), Catch::Contains("illegal memory access"));
  }
  // No forward after the fault: the queued calls failed without computing.
  CHECK(server.model().batch_rows().size() == 3);
  CHECK(device_lost_calls == 1);
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK_THAT(fault_message, Catch::Contains("illegal memory access"));
  }
  grpc::Status status;
  CHECK(StandardHealth(server.channel(), "", &status) ==
        grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  CHECK(status.ok());
  const std::string metrics = server.server().metrics().Render();
  CHECK_THAT(metrics,
             Catch::Contains(
                 R"(model_server_forward_faults_total{model="default",fault="device_lost"} 1)"));
  CHECK_THAT(metrics,
             Catch::Contains(
                 R"(model_server_requests_total{method="EvaluateModel",code="UNAVAILABLE"} 6)"));
  CHECK_THAT(metrics,
             Catch::Contains(R"(model_server_requests_total{method="EvaluateModel",code="OK"} 2)"));
  // The drain that follows (main's exit path) answers what is left and ends.
  server.server().Shutdown();
  CHECK(server.model().cleaned_up());
}

TEST_CASE(
    "a batch that runs out of memory is split; only the request that alone does not fit "
    "fails, with RESOURCE_EXHAUSTED naming its rows",
    "[server][gpu_path]") {
  ServerOptions options;
  options.max_rows_per_request = 1000;
  TestServer server(options);
  server.model().OutOfMemoryAbove(50);
  server.model().Hold(true);
  std::vector<std::future<Reply>> small;
  small.push_back(server.EvaluateAsync(Payload({0}, {1, 0})));
  REQUIRE(server.model().WaitForForwards(1));
  for (int i = 1; i < 8; ++i) small.push_back(server.EvaluateAsync(Payload({double(i)}, {1, 0})));
  std::future<Reply> large = server.EvaluateAsync(Payload(std::vector<double>(100, 1.0), {1, 0}));
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 8; }));
  server.model().Hold(false);
  for (int i = 0; i < 8; ++i) {
    const Reply reply = small[i].get();
    REQUIRE(reply.status.ok());
    CHECK(reply.body == absl::StrCat(R"({"prediction": {"y_1": [)", i, "]}}"));
  }
  const Reply failed = large.get();
  CHECK(failed.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(failed.status.error_message(),
             Catch::StartsWith("out of memory computing this request's 100 rows alone"));
  // 1 row alone; then the other 8 requests, 107 rows (out of memory), split in halves: the half
  // without the large request fits, the one with it is split again, down to it alone. The
  // queue's order (which half holds it) depends on when each client's call arrived.
  const std::vector<int64_t> rows = server.model().batch_rows();
  REQUIRE(rows.size() == 1 + 7);  // 2 * log2(8) + 1 for the batch of 8
  CHECK(rows[0] == 1);
  CHECK(rows[1] == 107);
  CHECK(std::count_if(rows.begin(), rows.end(), [](int64_t r) { return r > 50; }) == 4);
  CHECK((std::find(rows.begin(), rows.end(), 100) != rows.end()));
  CHECK(WaitFor([&] { return server.server().metrics().batches() == 2; }));
  const std::string metrics = server.server().metrics().Render();
  CHECK_THAT(metrics,
             Catch::Contains(
                 R"(model_server_forward_faults_total{model="default",fault="out_of_memory"} 4)"));
  grpc::Status status;
  CHECK(StandardHealth(server.channel(), "", &status) ==
        grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace model_server::server
