#include "server/oip_service.h"

#include <string>

#include "protocol/oip.h"
#include "server/grpc_status.h"

namespace model_server::server {
namespace {

using inference::GRPCInferenceService;
namespace oip = protocol::oip;

constexpr char kServerName[] = "model_server";
constexpr char kServerVersion[] = "1.0.0";
// KServe's platform name for TorchScript models.
constexpr char kPlatform[] = "pytorch_torchscript";

void AddTensors(
    const std::vector<handlers::TensorSpec>& specs, bool batches,
    google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>* tensors) {
  for (const handlers::TensorSpec& spec : specs) {
    inference::ModelMetadataResponse::TensorMetadata* tensor = tensors->Add();
    tensor->set_name(spec.name);
    tensor->set_datatype(handlers::WireName(spec.type));
    if (batches) tensor->add_shape(-1);  // rows: any number
    for (const int64_t size : spec.dims) tensor->add_shape(size);
  }
}

}  // namespace

OipService::OipService(GRPCInferenceService::AsyncService* service,
                       const std::vector<std::unique_ptr<ServedModel>>* models,
                       const std::atomic<bool>* ready, metrics::ServerMetrics* metrics) {
  // Each answer counts its call, always OK unless it says otherwise.
  const auto counted = [metrics](metrics::Method method, const grpc::Status& status) {
    metrics->RecordRequest(method, status.error_code(), 0.0);
    return status;
  };
  live_.request = [service](auto* context, auto* request, auto* responder, auto* cq, void* tag) {
    service->RequestServerLive(context, request, responder, cq, cq, tag);
  };
  // Live while the process answers at all, drains included: readiness is what turns away traffic.
  live_.answer = [counted](const inference::ServerLiveRequest&,
                           inference::ServerLiveResponse* response) {
    response->set_live(true);
    return counted(metrics::Method::kServerLive, grpc::Status::OK);
  };
  ready_.request = [service](auto* context, auto* request, auto* responder, auto* cq, void* tag) {
    service->RequestServerReady(context, request, responder, cq, cq, tag);
  };
  ready_.answer = [counted, ready](const inference::ServerReadyRequest&,
                                   inference::ServerReadyResponse* response) {
    response->set_ready(ready->load());
    return counted(metrics::Method::kServerReady, grpc::Status::OK);
  };
  model_ready_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                   void* tag) {
    service->RequestModelReady(context, request, responder, cq, cq, tag);
  };
  // An unknown model or version is not ready: the question has an answer, so no error.
  model_ready_.answer = [counted, ready, models](const inference::ModelReadyRequest& request,
                                                 inference::ModelReadyResponse* response) {
    response->set_ready(ready->load() &&
                        FindModel(*models, request.name(), request.version()).ok());
    return counted(metrics::Method::kModelReady, grpc::Status::OK);
  };
  server_metadata_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                       void* tag) {
    service->RequestServerMetadata(context, request, responder, cq, cq, tag);
  };
  server_metadata_.answer = [counted](const inference::ServerMetadataRequest&,
                                      inference::ServerMetadataResponse* response) {
    response->set_name(kServerName);
    response->set_version(kServerVersion);
    return counted(metrics::Method::kServerMetadata, grpc::Status::OK);
  };
  model_metadata_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                      void* tag) {
    service->RequestModelMetadata(context, request, responder, cq, cq, tag);
  };
  model_metadata_.answer = [counted, models](const inference::ModelMetadataRequest& request,
                                             inference::ModelMetadataResponse* response) {
    absl::StatusOr<ServedModel*> model = FindModel(*models, request.name(), request.version());
    if (!model.ok()) return counted(metrics::Method::kModelMetadata, ToGrpcStatus(model.status()));
    const handlers::ModelSignature& signature = (*model)->signature();
    response->set_name((*model)->name());
    response->add_versions(std::to_string((*model)->version()));
    response->set_platform(kPlatform);
    AddTensors(signature.inputs, signature.batches(), response->mutable_inputs());
    AddTensors(signature.outputs, signature.batches(), response->mutable_outputs());
    return counted(metrics::Method::kModelMetadata, grpc::Status::OK);
  };
}

void OipService::Listen(grpc::ServerCompletionQueue* cq, int calls) {
  for (int i = 0; i < calls; ++i) {
    UnaryCall<inference::ServerLiveRequest, inference::ServerLiveResponse>::Listen(live_, cq);
    UnaryCall<inference::ServerReadyRequest, inference::ServerReadyResponse>::Listen(ready_, cq);
    UnaryCall<inference::ModelReadyRequest, inference::ModelReadyResponse>::Listen(model_ready_,
                                                                                   cq);
    UnaryCall<inference::ServerMetadataRequest, inference::ServerMetadataResponse>::Listen(
        server_metadata_, cq);
    UnaryCall<inference::ModelMetadataRequest, inference::ModelMetadataResponse>::Listen(
        model_metadata_, cq);
  }
}

}  // namespace model_server::server
