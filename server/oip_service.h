#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <vector>

#include "protos/grpc_predict_v2.grpc.pb.h"
#include "server/deferred_call.h"
#include "server/metrics/metrics.h"
#include "server/model_manager.h"
#include "server/model_registry.h"
#include "server/unary_call.h"

namespace model_server::server {

// The Open Inference Protocol's health and metadata RPCs (ServerLive, ServerReady, ModelReady,
// ServerMetadata, ModelMetadata) and Triton's extensions (ModelConfig, ModelStatistics,
// RepositoryIndex, answered at once on the completion-queue thread; RepositoryModelLoad and
// RepositoryModelUnload, answered once the model manager has done them). ModelInfer is
// InferCall's.
class OipService {
 public:
  // All pointers outlive the service; `ready` is the server's readiness (true once its startup
  // models are warmed up, false from the start of a drain).
  OipService(inference::GRPCInferenceService::AsyncService* service, const ModelRegistry* models,
             ModelManager* manager, const std::atomic<bool>* ready,
             metrics::ServerMetrics* metrics);

  // Arms `calls` calls of each RPC on `cq`.
  void Listen(grpc::ServerCompletionQueue* cq, int calls);

 private:
  template <typename Request, typename Response>
  using Methods = typename UnaryCall<Request, Response>::Methods;
  template <typename Request, typename Response>
  using Deferred = typename DeferredCall<Request, Response>::Methods;

  Methods<inference::ServerLiveRequest, inference::ServerLiveResponse> live_;
  Methods<inference::ServerReadyRequest, inference::ServerReadyResponse> ready_;
  Methods<inference::ModelReadyRequest, inference::ModelReadyResponse> model_ready_;
  Methods<inference::ServerMetadataRequest, inference::ServerMetadataResponse> server_metadata_;
  Methods<inference::ModelMetadataRequest, inference::ModelMetadataResponse> model_metadata_;
  Methods<inference::ModelConfigRequest, inference::ModelConfigResponse> model_config_;
  Methods<inference::ModelStatisticsRequest, inference::ModelStatisticsResponse> statistics_;
  Methods<inference::RepositoryIndexRequest, inference::RepositoryIndexResponse> index_;
  Deferred<inference::RepositoryModelLoadRequest, inference::RepositoryModelLoadResponse> load_;
  Deferred<inference::RepositoryModelUnloadRequest, inference::RepositoryModelUnloadResponse>
      unload_;
};

}  // namespace model_server::server
