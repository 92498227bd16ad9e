#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "base/mutex.h"

namespace model_server::server {

struct SelfCheckOptions {
  // Time between two checks, and each check's deadline; zero turns the self-check off.
  std::chrono::milliseconds interval{5000};
  // Consecutive failed checks after which the server counts as unreachable (at least 1).
  int max_failures = 3;
  // Called once, on the self-check's thread, after the server has turned NOT_SERVING because
  // max_failures checks in a row failed; checks stop then. main uses it to drain and exit
  // non-zero so that the orchestrator restarts the server. Must not call ModelServer::Shutdown
  // (Shutdown joins the thread this runs on). Null: the log line and NOT_SERVING only.
  std::function<void()> on_failure;
};

// Where a self-check connects to reach a server listening on `address` (host:port, as given to
// the server) and bound to `port`: a wildcard host ("0.0.0.0", "[::]", empty) becomes
// 127.0.0.1; a unix: address is used as is.
std::string SelfCheckTarget(const std::string& address, int port);

// Checks that a server still accepts new connections. gRPC 1.51 stops accepting for good once
// accept4 fails (e.g. with EMFILE when file descriptors run out: CVE-2023-4785), while its open
// connections keep working, so nothing that reuses a connection notices. Each check opens a new
// channel with its own subchannel pool (so a new TCP connection, never a shared one) and calls
// ModelService.HealthCheck; any answer, NOT_SERVING included, is a success.
class SelfCheck {
 public:
  // One check on the calling thread: OK, or the failed call's status.
  static grpc::Status CheckOnce(const std::string& target,
                                const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                std::chrono::milliseconds deadline);

  // Checks `target` every options.interval on a thread of its own (the first check one interval
  // from now); after options.max_failures failures in a row calls `failed` with the last
  // failure's status, once, on that thread, and stops. options.on_failure is not called here.
  SelfCheck(const SelfCheckOptions& options, std::string target,
            std::shared_ptr<grpc::ChannelCredentials> credentials,
            std::function<void(const grpc::Status& last)> failed);

  // Stops checking (a check in progress is cancelled) and joins the thread. Not from `failed`.
  ~SelfCheck();

  SelfCheck(const SelfCheck&) = delete;
  SelfCheck& operator=(const SelfCheck&) = delete;

 private:
  void Run();
  grpc::Status Check();

  const std::chrono::milliseconds interval_;
  const int max_failures_;
  const std::string target_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const std::function<void(const grpc::Status&)> failed_;

  base::Mutex mutex_;
  base::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  grpc::ClientContext* in_progress_ ABSL_GUARDED_BY(mutex_) = nullptr;  // the check to cancel
  std::thread thread_;
};

}  // namespace model_server::server
