#pragma once

// The C++ client for the seed's ModelService: channels with the seed's retry semantics, a wait
// for the server's health, and Evaluate, which sends the seed's JSON (protocol/seed_json.h) and
// reads the answer. Installed with `cmake --install`; find_package(model_client) gives the
// target model_server::model_client (see clients/cpp/README.md).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "protocol/seed_json.h"
#include "protos/model_interface.grpc.pb.h"

namespace model_server::client {

using protocol::Columns;

// The seed's client retry policy as a gRPC service config: every ModelService method and
// grpc.health.v1.Health waits for the channel to be ready and retries UNAVAILABLE up to
// 5 attempts, backing off 1 s, 2 s, 4 s, ... up to 30 s.
extern const char kSeedServiceConfig[];

struct ChannelOptions {
  // Applies kSeedServiceConfig; off gives a plain channel whose failures surface at once (what a
  // load generator wants in order to count errors).
  bool seed_retry_policy = true;
  // Channels that differ only here open distinct HTTP/2 connections to the same target.
  int connection_index = 0;
  // Largest request or response message, in bytes.
  int max_message_bytes = 64 * 1024 * 1024;
};

// An insecure channel to `target` (host:port). Never fails; connection errors show on calls.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target,
                                           const ChannelOptions& options = {});

// Waits until grpc.health.v1.Health reports SERVING for the server's overall health (""),
// trying 5 times with the seed's backoff (1 s, 2 s, 4 s, 8 s between attempts). Returns the
// last failure: UNAVAILABLE (no server), or FAILED_PRECONDITION when it answers NOT_SERVING.
absl::Status WaitForServing(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds attempt_timeout = std::chrono::seconds(5));

// A blocking client for one channel. Thread-safe.
class ModelClient {
 public:
  explicit ModelClient(std::shared_ptr<grpc::Channel> channel);

  // Sends the seed's JSON for `inputs` and `params` and returns the predicted columns named in
  // `output_names` (all of them, in the server's order, when empty). Errors: the RPC's status
  // (absl and gRPC codes coincide), or INVALID_ARGUMENT for a malformed response.
  absl::StatusOr<Columns> Evaluate(const Columns& inputs, const std::vector<double>& params,
                                   const std::vector<std::string>& output_names = {},
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  std::unique_ptr<ModelService::Stub> stub_;
};

// The absl equivalent of a gRPC status.
absl::Status ToAbslStatus(const grpc::Status& status);

}  // namespace model_server::client
