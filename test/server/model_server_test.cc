// The transport with a fake model: the real server on a free port, real gRPC clients.

#include "server/model_server.h"

#include <grpcpp/grpcpp.h>
#include <sched.h>

#include <catch2/catch.hpp>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "protocol/seed_json.h"
#include "protos/health.grpc.pb.h"
#include "protos/model_interface.grpc.pb.h"
#include "test/fake_handler.h"
#include "test/server/test_server.h"
#include "test/wait.h"

namespace model_server::server {
namespace {

using namespace std::chrono_literals;
using testing::Load;
using testing::Payload;
using testing::Reply;
using testing::StandardHealth;
using testing::TestServer;
using testing_support::FakeHandler;
using testing_support::kPoison;
using testing_support::WaitFor;

// Restricts the calling thread (and the threads it starts) to one of its CPUs while it lives,
// as `taskset -c N` would: the server then plans for one CPU.
class OneCpu {
 public:
  OneCpu() {
    REQUIRE(sched_getaffinity(0, sizeof(saved_), &saved_) == 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &saved_)) {
        CPU_SET(cpu, &one);
        break;
      }
    }
    REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
  }
  ~OneCpu() { sched_setaffinity(0, sizeof(saved_), &saved_); }

 private:
  cpu_set_t saved_;
};

TEST_CASE("codec threads: one per CPU; on one CPU one for the replies only", "[server]") {
  ServerOptions options;
  options.codec_threads = 3;
  CHECK(PlanCodec(options).threads == 3);
  CHECK(PlanCodec(options).decode_there);
  options.codec_threads = -1;
  CHECK(PlanCodec(options).threads == 0);
  CHECK_FALSE(PlanCodec(options).decode_there);
  options.codec_threads = 0;
  {
    const OneCpu one_cpu;
    CHECK(PlanCodec(options).threads == 1);
    CHECK_FALSE(PlanCodec(options).decode_there);
  }
  cpu_set_t cpus;
  REQUIRE(sched_getaffinity(0, sizeof(cpus), &cpus) == 0);
  if (CPU_COUNT(&cpus) > 1) {
    CHECK(PlanCodec(options).threads == CPU_COUNT(&cpus));
    CHECK(PlanCodec(options).decode_there);
  }
}

TEST_CASE("EvaluateModel answers with the seed's JSON", "[server]") {
  TestServer server;
  const Reply reply = server.Evaluate(Payload({1, 2}, {2, 0.5}));
  REQUIRE(reply.status.ok());
  CHECK(reply.body == R"({"prediction": {"y_1": [2.5, 4.5]}})");
}

TEST_CASE("metrics count requests by code, batches and queue time", "[server]") {
  TestServer server;
  REQUIRE(server.Evaluate(Payload({1, 2}, {2, 0.5})).status.ok());
  REQUIRE(server.Evaluate(Payload({3}, {2, 0.5})).status.ok());
  CHECK_FALSE(server.Evaluate("not json").status.ok());
  // A batch is recorded once its calls are answered: wait for the second.
  REQUIRE(WaitFor([&] { return server.server().metrics().batches() == 2; }));
  const std::string text = server.server().metrics().Render();
  CHECK_THAT(text,
             Catch::Contains(R"(model_server_requests_total{method="EvaluateModel",code="OK"} 2)"));
  CHECK_THAT(
      text,
      Catch::Contains(
          R"(model_server_requests_total{method="EvaluateModel",code="INVALID_ARGUMENT"} 1)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_batch_rows_sum{model="default"} 3)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_batch_requests_count{model="default"} 2)"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_queue_time_seconds_count{model="default"} 2)"));
  CHECK_THAT(text, Catch::Contains("model_server_inflight_requests 0"));
  CHECK_THAT(text, Catch::Contains(R"(model_server_queued_requests{model="default"} 0)"));
}

TEST_CASE("both health services say SERVING", "[server]") {
  TestServer server;
  grpc::ClientContext context;
  HCReply reply;
  REQUIRE(server.stub().HealthCheck(&context, google::protobuf::Empty(), &reply).ok());
  CHECK(reply.status() == "SERVING");
  for (const std::string service : {"", "modelservice"}) {
    grpc::Status status;
    CHECK(StandardHealth(server.channel(), service, &status) ==
          grpc::health::v1::HealthCheckResponse::SERVING);
    CHECK(status.ok());
  }
  grpc::Status status;
  StandardHealth(server.channel(), "no-such-service", &status);
  CHECK(status.error_code() == grpc::StatusCode::NOT_FOUND);
}

TEST_CASE("a bad request gets INVALID_ARGUMENT and the server keeps serving", "[server]") {
  TestServer server;
  const Reply bad = server.Evaluate("{\"inputs\": {\"x_1\": [1]}}");
  CHECK(bad.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(bad.status.error_message(), Catch::Contains("\"x_2\""));
  CHECK(server.Evaluate(Payload({1}, {1, 0})).status.ok());
}

TEST_CASE("a message over max_message_bytes is refused with RESOURCE_EXHAUSTED", "[server]") {
  ServerOptions options;
  options.max_message_bytes = 1000;
  TestServer server(options);
  const Reply reply = server.Evaluate(Payload(std::vector<double>(500, 1), {1, 0}));
  CHECK(reply.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK(server.Evaluate(Payload({1}, {1, 0})).status.ok());
}

TEST_CASE("64 concurrent requests with different parameters share forward passes", "[server]") {
  ServerOptions options;
  // With the codec pool (the default), without it (decode and encode where calls arrive and
  // where batches run), and the default on one CPU (decode where calls arrive, replies on the
  // pool).
  const auto [codec_threads, one_cpu] =
      GENERATE(std::pair{0, false}, std::pair{2, false}, std::pair{-1, false}, std::pair{0, true});
  options.codec_threads = codec_threads;
  std::optional<OneCpu> pinned;
  if (one_cpu) pinned.emplace();
  TestServer server(options);
  server.model().Hold(true);
  std::future<Reply> first = server.EvaluateAsync(Payload({1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(1));
  std::vector<std::future<Reply>> replies;
  for (int i = 0; i < 63; ++i) {
    replies.push_back(server.EvaluateAsync(Payload({double(i), double(i + 1)}, {double(i), 1})));
  }
  // All 63 queue behind the held forward.
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 63; }));
  server.model().Hold(false);
  CHECK(first.get().status.ok());
  for (int i = 0; i < 63; ++i) {
    const Reply reply = replies[i].get();
    REQUIRE(reply.status.ok());
    // y_1 = p0 * x_1 + p1 with p = (i, 1).
    CHECK(reply.body ==
          absl::StrCat(R"({"prediction": {"y_1": [)", i * i + 1, ", ", i * (i + 1) + 1, "]}}"));
  }
  // The first request alone, then the 63 (2 rows each) that queued behind it in one forward.
  CHECK(server.model().batch_rows() == std::vector<int64_t>{1, 126});
  CHECK(server.server().metrics().batched_requests() == 64);
}

TEST_CASE("a full queue answers RESOURCE_EXHAUSTED at once", "[server]") {
  ServerOptions options;
  options.batching.max_batch_rows = 4;
  options.batching.max_queue_rows = 4;
  TestServer server(options);
  server.model().Hold(true);
  std::future<Reply> running = server.EvaluateAsync(Payload({1, 1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(1));
  std::future<Reply> queued_1 = server.EvaluateAsync(Payload({1, 1}, {1, 0}));
  std::future<Reply> queued_2 = server.EvaluateAsync(Payload({1, 1}, {1, 0}));
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 2; }));  // 4 rows of 4
  const auto start = std::chrono::steady_clock::now();
  const Reply refused = server.Evaluate(Payload({1}, {1, 0}));
  CHECK(refused.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(refused.status.error_message(), Catch::Contains("queue is full"));
  CHECK(std::chrono::steady_clock::now() - start < 5s);  // not a timeout
  server.model().Hold(false);
  CHECK(running.get().status.ok());
  CHECK(queued_1.get().status.ok());
  CHECK(queued_2.get().status.ok());
}

TEST_CASE("requests whose deadline passes or that are cancelled while queued are never computed",
          "[server]") {
  TestServer server;
  server.model().Hold(true);
  std::future<Reply> running = server.EvaluateAsync(Payload({1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(1));
  // 7 rows: a batch size no other request here has.
  const Reply expired = server.Evaluate(Payload(std::vector<double>(7, 1), {1, 0}), 200ms);
  CHECK(expired.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);

  grpc::ClientContext cancelled_context;
  inRequest request;
  request.set_inp_dict_bytes(Payload(std::vector<double>(5, 1), {1, 0}));
  outCalc response;
  std::future<grpc::Status> cancelled_status = std::async(std::launch::async, [&] {
    return server.stub().EvaluateModel(&cancelled_context, request, &response);
  });
  // Both queued behind the held forward: the expired one is dropped only as it leaves the queue.
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 2; }));
  cancelled_context.TryCancel();
  CHECK(cancelled_status.get().error_code() == grpc::StatusCode::CANCELLED);
  // The server has seen both calls end once it has counted them. The expired one counts as
  // DEADLINE_EXCEEDED, or as CANCELLED when the client's own deadline timer reset the stream just
  // before the server's deadline (a little later: it runs from the call's arrival) passed.
  const auto ended = [&server](grpc::StatusCode code) {
    return server.server().metrics().requests(metrics::Method::kEvaluateModel, code);
  };
  REQUIRE(WaitFor([&] {
    return ended(grpc::StatusCode::CANCELLED) + ended(grpc::StatusCode::DEADLINE_EXCEEDED) == 2;
  }));
  CHECK(ended(grpc::StatusCode::CANCELLED) >= 1);

  server.model().Hold(false);
  CHECK(running.get().status.ok());
  CHECK(server.Evaluate(Payload({1, 2, 3}, {1, 0})).status.ok());
  CHECK(server.model().batch_rows() == std::vector<int64_t>{1, 3});
}

TEST_CASE("a request that breaks its batch fails alone; its batch-mates are answered", "[server]") {
  TestServer server;
  server.model().Hold(true);
  std::future<Reply> first = server.EvaluateAsync(Payload({1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(1));
  std::future<Reply> good_1 = server.EvaluateAsync(Payload({1}, {3, 0}));
  std::future<Reply> poison = server.EvaluateAsync(Payload({kPoison}, {1, 0}));
  std::future<Reply> good_2 = server.EvaluateAsync(Payload({2}, {3, 0}));
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 3; }));
  server.model().Hold(false);
  CHECK(first.get().status.ok());
  CHECK(good_1.get().body == R"({"prediction": {"y_1": [3]}})");
  const Reply failed = poison.get();
  CHECK(failed.status.error_code() == grpc::StatusCode::INTERNAL);
  CHECK_THAT(failed.status.error_message(), Catch::Contains("poison row"));
  CHECK(good_2.get().body == R"({"prediction": {"y_1": [6]}})");
}

TEST_CASE("a model that fails every call leaves the server up and answering errors", "[server]") {
  TestServer server;
  server.model().FailEveryCall();
  for (int i = 0; i < 3; ++i) {
    const Reply reply = server.Evaluate(Payload({1}, {1, 0}));
    CHECK(reply.status.error_code() == grpc::StatusCode::INTERNAL);
  }
  grpc::ClientContext context;
  HCReply health;
  CHECK(server.stub().HealthCheck(&context, google::protobuf::Empty(), &health).ok());
}

// Runs the server's Shutdown on a thread of its own. Joins it on destruction, releasing the
// model first, so a test that stops early (a failed REQUIRE) neither hangs nor aborts.
class ShutdownThread {
 public:
  explicit ShutdownThread(TestServer& server)
      : server_(server), thread_([&server] { server.server().Shutdown(); }) {}
  ~ShutdownThread() { Join(); }
  void Join() {
    if (!thread_.joinable()) return;
    server_.model().Hold(false);
    thread_.join();
  }

 private:
  TestServer& server_;
  std::thread thread_;
};

// The serving status both health services and ModelService.HealthCheck report, or "" when one
// fails or they disagree.
std::string ReportedHealth(TestServer& server) {
  std::string reported;
  for (const std::string service : {"", "modelservice"}) {
    grpc::Status status;
    const auto health = StandardHealth(server.channel(), service, &status);
    if (!status.ok()) return "";
    const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(health);
    if (!reported.empty() && name != reported) return "";
    reported = name;
  }
  grpc::ClientContext context;
  HCReply reply;
  if (!server.stub().HealthCheck(&context, google::protobuf::Empty(), &reply).ok()) return "";
  return reply.status() == reported ? reported : "";
}

TEST_CASE("shutdown with requests in flight finishes every accepted call", "[server]") {
  TestServer server;
  server.model().Hold(true);
  std::vector<std::future<Reply>> replies;
  for (int i = 0; i < 8; ++i) replies.push_back(server.EvaluateAsync(Payload({double(i)}, {1, 0})));
  REQUIRE(server.model().WaitForForwards(1));
  // All 8 accepted: in the held forward pass (1 row each) or queued behind it.
  REQUIRE(WaitFor([&] {
    return server.model().batch_rows()[0] +
               static_cast<int64_t>(server.server().QueuedRequests()) ==
           8;
  }));
  ShutdownThread shutdown(server);
  // Draining: health says NOT_SERVING, and a call that arrives now is refused with UNAVAILABLE
  // (retryable) and a retry pushback, never dropped (CANCELLED).
  REQUIRE(WaitFor([&] { return ReportedHealth(server) == "NOT_SERVING"; }));
  grpc::ClientContext context;
  inRequest request;
  request.set_inp_dict_bytes(Payload({1}, {1, 0}));
  outCalc response;
  const grpc::Status refused = server.stub().EvaluateModel(&context, request, &response);
  CHECK(refused.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(refused.error_message() == "server is shutting down");
  const auto pushback = context.GetServerTrailingMetadata().find("grpc-retry-pushback-ms");
  REQUIRE(pushback != context.GetServerTrailingMetadata().end());
  CHECK(std::string(pushback->second.data(), pushback->second.size()) == "1000");
  server.model().Hold(false);
  for (auto& reply : replies) CHECK(reply.get().status.ok());
  shutdown.Join();
  CHECK(server.model().cleaned_up());
}

TEST_CASE("during the drain grace period health says NOT_SERVING and calls are served",
          "[server]") {
  ServerOptions options;
  options.drain_grace = 2s;
  TestServer server(options);
  const auto start = std::chrono::steady_clock::now();
  ShutdownThread shutdown(server);
  REQUIRE(WaitFor([&] { return ReportedHealth(server) == "NOT_SERVING"; }));
  const Reply served = server.Evaluate(Payload({1, 2}, {2, 0.5}));
  const auto served_at = std::chrono::steady_clock::now() - start;
  CHECK(served.status.ok());
  CHECK(served.body == R"({"prediction": {"y_1": [2.5, 4.5]}})");
  CHECK(served_at < options.drain_grace);  // inside the grace period
  shutdown.Join();
  CHECK(std::chrono::steady_clock::now() - start >= options.drain_grace);
  CHECK(server.server().metrics().batched_requests() == 1);
}

TEST_CASE("a drain under a full queue answers every call; none is dropped (CANCELLED)",
          "[server]") {
  ServerOptions options;
  options.batching.max_batch_rows = 8;
  options.batching.max_queue_rows = 16;
  options.drain_timeout = 10s;
  TestServer server(options);
  // Clients whose gRPC retry policy would retry UNAVAILABLE after 10 ms: the server's retry
  // pushback must hold them off long enough for the drain to find a quiet moment.
  grpc::ChannelArguments args;
  args.SetServiceConfigJSON(R"({"methodConfig": [{"name": [{"service": "ModelService"}],
      "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})");
  const auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server.server().port()),
                                                 grpc::InsecureChannelCredentials(), args);
  std::mutex mu;
  std::map<std::string, int> outcomes;  // guarded by mu
  // 24 clients, each sending 4-row requests in a loop (the queue holds 16 rows: calls are
  // accepted, refused for a full queue, and arriving as the drain starts) until a call fails
  // for another reason than a full queue or a draining server: the server has gone.
  std::vector<std::thread> clients;
  for (int i = 0; i < 24; ++i) {
    clients.emplace_back([&] {
      auto stub = ModelService::NewStub(channel);
      inRequest request;
      request.set_inp_dict_bytes(Payload({1, 2, 3, 4}, {1, 0}));
      while (true) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + 20s);
        outCalc response;
        const grpc::Status status = stub->EvaluateModel(&context, request, &response);
        const bool refused_by_drain = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                                      status.error_message() == "server is shutting down";
        const std::string outcome =
            absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) +
            (refused_by_drain ? " (drain)" : "");
        std::lock_guard<std::mutex> lock(mu);
        ++outcomes[outcome];
        if (!status.ok() && status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED &&
            !refused_by_drain) {
          return;
        }
      }
    });
  }
  REQUIRE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return outcomes["OK"] >= 100 && outcomes["RESOURCE_EXHAUSTED"] >= 100;
  }));
  const auto start = std::chrono::steady_clock::now();
  server.server().Shutdown();
  const auto drain = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  for (std::thread& client : clients) client.join();
  std::string seen;
  for (const auto& [outcome, count] : outcomes) absl::StrAppend(&seen, outcome, ": ", count, "; ");
  INFO(seen);
  // The last call of each client found the server gone (UNAVAILABLE); every other call was
  // answered OK, RESOURCE_EXHAUSTED, or refused by the drain with UNAVAILABLE.
  CHECK(outcomes["UNAVAILABLE"] == 24);
  CHECK(outcomes["OK"] + outcomes["RESOURCE_EXHAUSTED"] + outcomes["UNAVAILABLE (drain)"] +
            outcomes["UNAVAILABLE"] ==
        std::accumulate(outcomes.begin(), outcomes.end(), 0,
                        [](int sum, const auto& entry) { return sum + entry.second; }));
  CHECK(outcomes["CANCELLED"] == 0);
  // Every computed request was answered OK, and the drain found its quiet moment.
  CHECK(server.server().metrics().batched_requests() == static_cast<uint64_t>(outcomes["OK"]));
  CHECK(drain.count() < options.drain_timeout.count() / 2);
}

TEST_CASE("a drain with clients that resend at once ends in bounded time; none is dropped",
          "[server]") {
  ServerOptions options;
  options.batching.max_batch_rows = 8;
  options.batching.max_queue_rows = 16;
  options.drain_timeout = 30s;
  TestServer server(options);
  // No retry policy, no back-off: each client sends its next call as soon as the last one is
  // answered, refusals included, so calls never stop arriving while the server drains.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  const auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server.server().port()),
                                                 grpc::InsecureChannelCredentials(), args);
  std::mutex mu;
  std::map<std::string, int> outcomes;  // guarded by mu
  std::vector<std::thread> clients;
  for (int i = 0; i < 24; ++i) {
    clients.emplace_back([&] {
      auto stub = ModelService::NewStub(channel);
      inRequest request;
      request.set_inp_dict_bytes(Payload({1, 2, 3, 4}, {1, 0}));
      while (true) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + 20s);
        outCalc response;
        const grpc::Status status = stub->EvaluateModel(&context, request, &response);
        const bool refused_by_drain = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                                      status.error_message() == "server is shutting down";
        const std::string outcome =
            absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) +
            (refused_by_drain ? " (drain)" : "");
        std::lock_guard<std::mutex> lock(mu);
        ++outcomes[outcome];
        // Until the server has gone: a failure other than a full queue or a drain refusal
        // (before the drain, any other failure ends the client too, and the test fails).
        if (!status.ok() && status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED &&
            !refused_by_drain) {
          return;
        }
      }
    });
  }
  REQUIRE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return outcomes["OK"] >= 100 && outcomes["RESOURCE_EXHAUSTED"] >= 100;
  }));
  const auto start = std::chrono::steady_clock::now();
  server.server().Shutdown();
  const auto drain = std::chrono::steady_clock::now() - start;
  for (std::thread& client : clients) client.join();
  std::string seen;
  for (const auto& [outcome, count] : outcomes) absl::StrAppend(&seen, outcome, ": ", count, "; ");
  INFO(seen);
  // The last call of each client found the server gone (UNAVAILABLE); every other call was
  // answered OK, RESOURCE_EXHAUSTED, or refused by the drain with UNAVAILABLE.
  CHECK(outcomes["UNAVAILABLE"] >= 24);
  CHECK(outcomes["OK"] + outcomes["RESOURCE_EXHAUSTED"] + outcomes["UNAVAILABLE (drain)"] +
            outcomes["UNAVAILABLE"] ==
        std::accumulate(outcomes.begin(), outcomes.end(), 0,
                        [](int sum, const auto& entry) { return sum + entry.second; }));
  CHECK(outcomes["CANCELLED"] == 0);
  CHECK(outcomes["UNAVAILABLE (drain)"] > 0);  // calls kept coming while the server drained
  // The server's own counts: every call it accepted reached its client with the answer the
  // server gave (nothing lost), and every refusal it sent reached its client as UNAVAILABLE.
  const metrics::ServerMetrics& metrics = server.server().metrics();
  const auto counted = [&](grpc::StatusCode code) {
    return static_cast<int>(metrics.requests(metrics::Method::kEvaluateModel, code));
  };
  CHECK(counted(grpc::StatusCode::OK) == outcomes["OK"]);
  CHECK(metrics.batched_requests() == static_cast<uint64_t>(outcomes["OK"]));
  CHECK(counted(grpc::StatusCode::RESOURCE_EXHAUSTED) == outcomes["RESOURCE_EXHAUSTED"]);
  CHECK(counted(grpc::StatusCode::CANCELLED) == 0);
  CHECK(counted(grpc::StatusCode::UNAVAILABLE) >= outcomes["UNAVAILABLE (drain)"]);
  CHECK(counted(grpc::StatusCode::UNAVAILABLE) <=
        outcomes["UNAVAILABLE (drain)"] + outcomes["UNAVAILABLE"]);
  // Bounded: the accepted calls take milliseconds here, and the server does not wait for the
  // clients to stop (the drain timeout is 30 s).
  CHECK(drain < 5s);
}

TEST_CASE("each model instance runs batches on its own thread", "[server]") {
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  instances.push_back(Load(std::make_unique<FakeHandler>()));
  instances.push_back(Load(std::make_unique<FakeHandler>()));
  const std::shared_ptr<testing_support::FakeModelControl> first =
      static_cast<FakeHandler&>(instances[0]->handler()).control();
  const std::shared_ptr<testing_support::FakeModelControl> second =
      static_cast<FakeHandler&>(instances[1]->handler()).control();
  first->Hold(true);
  second->Hold(true);
  ServerOptions options;
  options.address = "127.0.0.1:0";
  auto started = ModelServer::Start(options, std::move(instances));
  REQUIRE(started.ok());
  // Destroyed before the server: a failed REQUIRE must not leave a forward pass held.
  struct Release {
    ~Release() {
      first->Hold(false);
      second->Hold(false);
    }
    const std::shared_ptr<testing_support::FakeModelControl>& first;
    const std::shared_ptr<testing_support::FakeModelControl>& second;
  } release{first, second};
  auto stub = ModelService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*started)->port()), grpc::InsecureChannelCredentials()));
  auto evaluate = [&stub](float x) {
    return std::async(std::launch::async, [&stub, x] {
      grpc::ClientContext context;
      inRequest request;
      request.set_inp_dict_bytes(Payload({x}, {1, 0}));
      outCalc response;
      return stub->EvaluateModel(&context, request, &response);
    });
  };
  auto forwards_started = [&] { return first->batch_rows().size() + second->batch_rows().size(); };
  std::future<grpc::Status> a = evaluate(1);
  // a is in a forward pass on one instance, which is now held.
  REQUIRE(WaitFor([&] { return forwards_started() == 1; }));
  std::future<grpc::Status> b = evaluate(2);
  WaitFor([&] { return forwards_started() == 2; });
  const size_t concurrent_forwards = forwards_started();
  first->Hold(false);
  second->Hold(false);
  // b ran on the other instance while the first was still busy with a.
  CHECK(concurrent_forwards == 2);
  CHECK(first->batch_rows().size() == 1);
  CHECK(second->batch_rows().size() == 1);
  CHECK(a.get().ok());
  CHECK(b.get().ok());
}

// Sends calls to `server` one at a time until the first has run: a version runs calls on the
// receiving thread only once it has measured a forward pass (in a batch), and the calls after it
// find the server idle.
void Prime(TestServer& server) { REQUIRE(server.Evaluate(Payload({1}, {1, 0})).status.ok()); }

TEST_CASE("calls to an idle server run to completion on the thread that received them",
          "[server][idle]") {
  const bool idle_on = GENERATE(true, false);
  ServerOptions options;
  if (!idle_on) options.max_idle_forward = std::chrono::microseconds(0);
  TestServer server(options);
  Prime(server);  // a batch: no forward pass measured yet
  // Whether a call finds the server idle also depends on whether its completion-queue thread
  // waited for it (the machine's load decides): send until three ran idle (at most 100 calls),
  // or 20 calls with the idle path off.
  int64_t calls = 1;
  for (int i = 0; idle_on ? server.server().metrics().idle_requests() < 3 && i < 100 : i < 20;
       ++i, ++calls) {
    const Reply reply = server.Evaluate(Payload({double(i), 1}, {2, 0.5}));
    REQUIRE(reply.status.ok());
    CHECK(reply.body == absl::StrCat(R"({"prediction": {"y_1": [)", 2 * i + 0.5, ", 2.5]}}"));
  }
  const std::vector<std::thread::id> threads = server.model().forward_threads();
  REQUIRE(static_cast<int64_t>(threads.size()) == calls);
  // The first on the batch thread; the idle ones on the one completion-queue thread of this
  // connection; the others on the batch thread.
  std::set<std::thread::id> elsewhere;
  int64_t on_batch_thread = 0;
  for (const std::thread::id thread : threads) {
    if (thread == threads[0]) {
      ++on_batch_thread;
    } else {
      elsewhere.insert(thread);
    }
  }
  CHECK(on_batch_thread == calls - (idle_on ? 3 : 0));
  CHECK(elsewhere.size() == (idle_on ? 1u : 0u));
  // Counted as batches of one, as the batcher's are.
  CHECK(server.server().metrics().batched_requests() == calls);
  CHECK(server.server().metrics().batches() == calls);
  CHECK(server.server().metrics().idle_requests() == (idle_on ? 3 : 0));
  CHECK(server.server().metrics().requests(metrics::Method::kEvaluateModel, 0) == calls);
  CHECK(server.server().metrics().in_flight() == 0);
}

TEST_CASE("an idle call that breaks its forward pass fails alone", "[server][idle]") {
  TestServer server;
  Prime(server);
  // Until a poisoned call runs idle (see above: the machine's load decides which do).
  for (int i = 0; i < 100 && server.server().metrics().idle_requests() == 0; ++i) {
    const Reply poison = server.Evaluate(Payload({kPoison}, {1, 0}));
    CHECK(poison.status.error_code() == grpc::StatusCode::INTERNAL);
    CHECK_THAT(poison.status.error_message(), Catch::Contains("poison row"));
  }
  REQUIRE(server.server().metrics().idle_requests() == 1);
  const std::vector<std::thread::id> threads = server.model().forward_threads();
  CHECK(threads.back() != threads[0]);  // the last poisoned call ran where it arrived
  // The server goes on answering.
  CHECK(server.Evaluate(Payload({2}, {3, 0})).body == R"({"prediction": {"y_1": [6]}})");
}

TEST_CASE("a call that arrives while an idle call runs is batched; one forward per instance",
          "[server][idle]") {
  TestServer server;
  Prime(server);
  const std::thread::id batch_thread = server.model().forward_threads()[0];
  server.model().Hold(true);
  // Runs on its connection's completion-queue thread, which it holds there.
  std::future<Reply> idle = server.EvaluateAsync(Payload({1}, {1, 0}));
  REQUIRE(server.model().WaitForForwards(2));
  // Calls over connections of their own, until one reaches the other completion queue (the
  // held one takes none): it finds a call in flight, so it goes to the batcher.
  std::vector<std::future<grpc::Status>> others;
  std::vector<std::unique_ptr<ModelService::Stub>> stubs;
  for (int i = 0; i < 16 && server.server().metrics().in_flight() < 2; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    stubs.push_back(ModelService::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server.server().port()),
                                  grpc::InsecureChannelCredentials(), arguments)));
    others.push_back(std::async(std::launch::async, [stub = stubs.back().get()] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
      inRequest request;
      request.set_inp_dict_bytes(Payload({3}, {1, 0}));
      outCalc response;
      return stub->EvaluateModel(&context, request, &response);
    }));
    WaitFor([&] { return server.server().metrics().in_flight() >= 2; }, 200ms);
  }
  REQUIRE(server.server().metrics().in_flight() >= 2);
  // The batch thread has it (nothing queued) but waits for the instance the idle call holds.
  REQUIRE(WaitFor([&] { return server.server().QueuedRequests() == 0; }));
  std::this_thread::sleep_for(100ms);
  CHECK(server.model().batch_rows().size() == 2);
  server.model().Hold(false);
  CHECK(idle.get().body == R"({"prediction": {"y_1": [1]}})");
  for (auto& other : others) CHECK(other.get().ok());
  const std::vector<std::thread::id> threads = server.model().forward_threads();
  REQUIRE(threads.size() >= 3);
  CHECK(threads[1] != batch_thread);
  CHECK(threads[2] == batch_thread);
}

TEST_CASE("instances of different models are refused", "[server]") {
  class OtherModel final : public handlers::ModelHandler {
   public:
    absl::Status Initialize() override { return absl::OkStatus(); }
    const handlers::ModelSignature& signature() const override { return signature_; }
    handlers::InitializeTimes initialize_times() const override { return {}; }
    std::vector<char*> PrepareBatch(const std::vector<handlers::Dims>&) override { return {}; }
    absl::StatusOr<const std::vector<handlers::OutputTensor>*> Run() override {
      return absl::InternalError("unused");
    }
    void Cleanup() override {}

   private:
    handlers::ModelSignature signature_ = [] {
      handlers::SeedSignature seed;
      seed.num_inputs = 7;
      seed.num_outputs = 1;
      return handlers::SeedModelSignature(seed, 4096);
    }();
  };
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  instances.push_back(Load(std::make_unique<FakeHandler>()));
  instances.push_back(*handlers::LoadedModel::Load(std::make_unique<OtherModel>()));
  CHECK(ModelServer::Start({}, std::move(instances)).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a port in use is a startup error", "[server]") {
  TestServer first;
  ServerOptions options;
  options.address = absl::StrCat("127.0.0.1:", first.server().port());
  auto second = ModelServer::Start(options, Load(std::make_unique<FakeHandler>()));
  CHECK(second.status().code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace model_server::server
