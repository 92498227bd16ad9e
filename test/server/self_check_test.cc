// The self-check on its own (against sockets that stand for a dead listener) and inside the real
// server with a fake model.

#include "server/self_check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <future>

#include "absl/strings/str_cat.h"
#include "server/model_server.h"
#include "test/fake_handler.h"

namespace model_server::server {
namespace {

using namespace std::chrono_literals;

// A loopback TCP socket that listens and never accepts: what gRPC 1.51's listener is after
// accept4 failed once (CVE-2023-4785). The kernel still completes handshakes into the backlog,
// so a client connects and then hears nothing.
class DeafListener {
 public:
  DeafListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(fd_, 64) == 0);
    socklen_t length = sizeof(address);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~DeafListener() { close(fd_); }
  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::unique_ptr<ModelServer> StartServer(ServerOptions options) {
  options.address = "127.0.0.1:0";
  options.cq_threads = 1;
  auto loaded = handlers::LoadedModel::Load(std::make_unique<testing_support::FakeHandler>());
  REQUIRE(loaded.ok());
  auto started = ModelServer::Start(options, *std::move(loaded));
  REQUIRE(started.ok());
  return *std::move(started);
}

std::string HealthStatus(int port) {
  auto stub = ModelService::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 5s);
  HCReply reply;
  const grpc::Status status = stub->HealthCheck(&context, google::protobuf::Empty(), &reply);
  return status.ok() ? reply.status() : status.error_message();
}

TEST_CASE("the self-check targets loopback for wildcard addresses", "[self_check]") {
  CHECK(SelfCheckTarget("0.0.0.0:13000", 13000) == "127.0.0.1:13000");
  CHECK(SelfCheckTarget("[::]:0", 4711) == "127.0.0.1:4711");
  CHECK(SelfCheckTarget(":0", 4711) == "127.0.0.1:4711");
  CHECK(SelfCheckTarget("10.1.2.3:13000", 13000) == "10.1.2.3:13000");
  CHECK(SelfCheckTarget("[::1]:0", 4711) == "[::1]:4711");
  CHECK(SelfCheckTarget("localhost:0", 4711) == "localhost:4711");
  CHECK(SelfCheckTarget("unix:/tmp/model.sock", 0) == "unix:/tmp/model.sock");
}

TEST_CASE("a listener that accepts no more fails max_failures checks in a row", "[self_check]") {
  DeafListener deaf;
  SelfCheckOptions options;
  options.interval = 200ms;
  options.max_failures = 3;
  std::promise<grpc::Status> failed;
  std::atomic<int> calls{0};
  const auto start = std::chrono::steady_clock::now();
  SelfCheck check(options, deaf.target(), grpc::InsecureChannelCredentials(),
                  [&](const grpc::Status& last) {
                    if (calls.fetch_add(1) == 0) failed.set_value(last);
                  });
  std::future<grpc::Status> last = failed.get_future();
  REQUIRE(last.wait_for(10s) == std::future_status::ready);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  // Three waits and three checks that each run into their deadline.
  CHECK(elapsed >= 3 * 2 * options.interval - 50ms);
  CHECK(last.get().error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
  std::this_thread::sleep_for(3 * options.interval);
  CHECK(calls.load() == 1);  // once, then the checks stop
}

TEST_CASE("a refused connection fails a check at once", "[self_check]") {
  std::string target;
  {
    DeafListener closed;  // a port that was free a moment ago, and is closed again
    target = closed.target();
  }
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = SelfCheck::CheckOnce(target, grpc::InsecureChannelCredentials(), 5s);
  CHECK(status.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(std::chrono::steady_clock::now() - start < 4s);
}

TEST_CASE("a serving server passes its self-checks and stays SERVING", "[self_check]") {
  std::atomic<bool> failed{false};
  ServerOptions options;
  options.self_check.interval = 100ms;
  options.self_check.max_failures = 1;
  options.self_check.on_failure = [&] { failed = true; };
  std::unique_ptr<ModelServer> server = StartServer(options);
  CHECK(SelfCheck::CheckOnce(absl::StrCat("127.0.0.1:", server->port()),
                             grpc::InsecureChannelCredentials(), 5s)
            .ok());
  std::this_thread::sleep_for(1s);  // ten checks, each on a new connection
  CHECK_FALSE(failed.load());
  CHECK(HealthStatus(server->port()) == "SERVING");
  // Each check is a HealthCheck call: the startup check and about ten more.
  CHECK(server->metrics().requests(metrics::Method::kHealthCheck, 0) >= 5);

  // Once the server shuts down, new connections are refused: that is no failure.
  server->Shutdown();
  std::this_thread::sleep_for(500ms);
  CHECK_FALSE(failed.load());
}

}  // namespace
}  // namespace model_server::server
