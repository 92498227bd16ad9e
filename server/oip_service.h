#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <vector>

#include "protos/grpc_predict_v2.grpc.pb.h"
#include "server/metrics/metrics.h"
#include "server/served_model.h"
#include "server/unary_call.h"

namespace model_server::server {

// The Open Inference Protocol's health and metadata RPCs (ServerLive, ServerReady, ModelReady,
// ServerMetadata, ModelMetadata), each answered at once on the completion-queue thread.
// ModelInfer is InferCall's.
class OipService {
 public:
  // All pointers outlive the service; `ready` is the server's readiness (true once its models
  // are warmed up, false from the start of a drain).
  OipService(inference::GRPCInferenceService::AsyncService* service,
             const std::vector<std::unique_ptr<ServedModel>>* models,
             const std::atomic<bool>* ready, metrics::ServerMetrics* metrics);

  // Arms `calls` calls of each RPC on `cq`.
  void Listen(grpc::ServerCompletionQueue* cq, int calls);

 private:
  template <typename Request, typename Response>
  using Methods = typename UnaryCall<Request, Response>::Methods;

  Methods<inference::ServerLiveRequest, inference::ServerLiveResponse> live_;
  Methods<inference::ServerReadyRequest, inference::ServerReadyResponse> ready_;
  Methods<inference::ModelReadyRequest, inference::ModelReadyResponse> model_ready_;
  Methods<inference::ServerMetadataRequest, inference::ServerMetadataResponse> server_metadata_;
  Methods<inference::ModelMetadataRequest, inference::ModelMetadataResponse> model_metadata_;
};

}  // namespace model_server::server
