#include "clients/cpp/model_client.h"

#include <thread>

#include "protos/health.grpc.pb.h"

namespace model_server::client {

const char kSeedServiceConfig[] = R"({
  "methodConfig": [{
    "name": [{"service": "ModelService"}, {"service": "grpc.health.v1.Health"}],
    "waitForReady": true,
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "1s",
      "maxBackoff": "30s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // Channels with different arguments never share a subchannel, hence a connection.
  args.SetInt("model_client.connection_index", options.connection_index);
  if (options.seed_retry_policy) {
    args.SetServiceConfigJSON(kSeedServiceConfig);
  } else {
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  }
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

absl::Status ToAbslStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds attempt_timeout) {
  constexpr int kAttempts = 5;
  auto stub = grpc::health::v1::Health::NewStub(channel);
  std::chrono::seconds backoff(1);
  absl::Status last;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + attempt_timeout);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = stub->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last = status.ok() ? absl::FailedPreconditionError("server health is not SERVING")
                       : ToAbslStatus(status);
    if (attempt < kAttempts) {
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::seconds(30));
    }
  }
  return last;
}

ModelClient::ModelClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(ModelService::NewStub(std::move(channel))) {}

absl::StatusOr<Columns> ModelClient::Evaluate(const Columns& inputs,
                                              const std::vector<double>& params,
                                              const std::vector<std::string>& output_names,
                                              std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  inRequest request;
  request.set_inp_dict_bytes(protocol::EncodeRequest(inputs, params, output_names));
  outCalc reply;
  const grpc::Status status = stub_->EvaluateModel(&context, request, &reply);
  if (!status.ok()) return ToAbslStatus(status);
  return protocol::DecodeResponse(reply.response_bytes());
}

}  // namespace model_server::client
