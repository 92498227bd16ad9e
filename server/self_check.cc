#include "server/self_check.h"

#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "protos/model_interface.grpc.pb.h"

namespace model_server::server {
namespace {

grpc::Status HealthCheck(const std::string& target,
                         const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                         grpc::ClientContext* context) {
  grpc::ChannelArguments args;
  // Channels share connections through gRPC's global subchannel pool; a local pool makes this
  // channel open its own, which is what must still be accepted.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::unique_ptr<ModelService::Stub> stub =
      ModelService::NewStub(grpc::CreateCustomChannel(target, credentials, args));
  HCReply reply;
  return stub->HealthCheck(context, google::protobuf::Empty(), &reply);
}

}  // namespace

std::string SelfCheckTarget(const std::string& address, int port) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return address;
  }
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
  // gRPC listens dual-stack on [::], so IPv4 loopback reaches either wildcard.
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "*") host = "127.0.0.1";
  return absl::StrCat(host, ":", port);
}

grpc::Status SelfCheck::CheckOnce(const std::string& target,
                                  const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                  std::chrono::milliseconds deadline) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  return HealthCheck(target, credentials, &context);
}

SelfCheck::SelfCheck(const SelfCheckOptions& options, std::string target,
                     std::shared_ptr<grpc::ChannelCredentials> credentials,
                     std::function<void(const grpc::Status& last)> failed)
    : interval_(options.interval),
      max_failures_(std::max(1, options.max_failures)),
      target_(std::move(target)),
      credentials_(std::move(credentials)),
      failed_(std::move(failed)),
      thread_([this] { Run(); }) {}

SelfCheck::~SelfCheck() {
  {
    base::MutexLock lock(mutex_);
    stopping_ = true;
    if (in_progress_ != nullptr) in_progress_->TryCancel();
  }
  wake_.SignalAll();
  thread_.join();
}

grpc::Status SelfCheck::Check() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + interval_);
  {
    base::MutexLock lock(mutex_);
    if (stopping_) return grpc::Status::CANCELLED;
    in_progress_ = &context;
  }
  grpc::Status status = HealthCheck(target_, credentials_, &context);
  base::MutexLock lock(mutex_);
  in_progress_ = nullptr;
  return status;
}

void SelfCheck::Run() {
  int failures = 0;
  for (;;) {
    {
      const auto next = std::chrono::steady_clock::now() + interval_;
      base::MutexLock lock(mutex_);
      while (!stopping_ && wake_.WaitUntil(mutex_, next)) {
      }
      if (stopping_) return;
    }
    const grpc::Status status = Check();
    if (status.ok()) {
      failures = 0;
      continue;
    }
    {
      base::MutexLock lock(mutex_);
      if (stopping_) return;  // cancelled by the destructor, not a failure of the server
    }
    ++failures;
    // gRPC's and absl's code numbers are the same.
    spdlog::warn("self-check: a new connection to {} failed ({} of {} in a row): {}: {}", target_,
                 failures, max_failures_,
                 absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                 status.error_message());
    if (failures >= max_failures_) {
      failed_(status);
      return;
    }
  }
}

}  // namespace model_server::server
