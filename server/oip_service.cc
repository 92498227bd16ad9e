#include "server/oip_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace model_server::server {
namespace {

using inference::GRPCInferenceService;

constexpr char kServerName[] = "model_server";
constexpr char kServerVersion[] = "1.0.0";
// The Triton extensions this server answers, by Triton's names for them.
constexpr const char* kExtensions[] = {"model_configuration", "model_repository", "statistics"};

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

OipService::OipService(GRPCInferenceService::AsyncService* service, const ModelRegistry* models,
                       ModelManager* manager, const std::atomic<bool>* ready,
                       metrics::ServerMetrics* metrics) {
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
    response->set_ready(ready->load() && models->Find(request.name(), request.version()).ok());
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
    for (const char* extension : kExtensions) response->add_extensions(extension);
    return counted(metrics::Method::kServerMetadata, grpc::Status::OK);
  };
  model_metadata_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                      void* tag) {
    service->RequestModelMetadata(context, request, responder, cq, cq, tag);
  };
  model_metadata_.answer = [counted, models](const inference::ModelMetadataRequest& request,
                                             inference::ModelMetadataResponse* response) {
    absl::StatusOr<std::shared_ptr<ServedModel>> model =
        models->Find(request.name(), request.version());
    if (!model.ok()) return counted(metrics::Method::kModelMetadata, ToGrpcStatus(model.status()));
    const handlers::ModelSignature& signature = (*model)->signature();
    response->set_name(request.name());
    for (const auto& version : models->Versions(request.name())) {
      response->add_versions(std::to_string(version->version()));
    }
    if (auto config = models->Config(request.name())) response->set_platform(config->platform());
    AddTensors(signature.inputs, signature.batches(), response->mutable_inputs());
    AddTensors(signature.outputs, signature.batches(), response->mutable_outputs());
    return counted(metrics::Method::kModelMetadata, grpc::Status::OK);
  };
  model_config_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                    void* tag) {
    service->RequestModelConfig(context, request, responder, cq, cq, tag);
  };
  model_config_.answer = [counted, models](const inference::ModelConfigRequest& request,
                                           inference::ModelConfigResponse* response) {
    absl::StatusOr<std::shared_ptr<ServedModel>> model =
        models->Find(request.name(), request.version());
    std::shared_ptr<const inference::ModelConfig> config = models->Config(request.name());
    if (!model.ok()) return counted(metrics::Method::kModelConfig, ToGrpcStatus(model.status()));
    if (config != nullptr) *response->mutable_config() = *config;
    return counted(metrics::Method::kModelConfig, grpc::Status::OK);
  };
  statistics_.request = [service](auto* context, auto* request, auto* responder, auto* cq,
                                  void* tag) {
    service->RequestModelStatistics(context, request, responder, cq, cq, tag);
  };
  statistics_.answer = [counted, models](const inference::ModelStatisticsRequest& request,
                                         inference::ModelStatisticsResponse* response) {
    std::vector<std::shared_ptr<ServedModel>> versions;
    if (request.name().empty()) {
      for (const std::string& name : models->Names()) {
        for (auto& version : models->Versions(name)) versions.push_back(std::move(version));
      }
    } else if (request.version().empty()) {
      versions = models->Versions(request.name());
      if (versions.empty()) {  // Find says why
        return counted(metrics::Method::kModelStatistics,
                       ToGrpcStatus(models->Find(request.name(), "").status()));
      }
    } else {
      absl::StatusOr<std::shared_ptr<ServedModel>> model =
          models->Find(request.name(), request.version());
      if (!model.ok()) {
        return counted(metrics::Method::kModelStatistics, ToGrpcStatus(model.status()));
      }
      versions.push_back(*std::move(model));
    }
    for (const auto& version : versions) {
      inference::ModelStatistics* statistics = response->add_model_stats();
      statistics->set_name(version->name());
      statistics->set_version(std::to_string(version->version()));
      version->statistics().Fill(statistics);
    }
    return counted(metrics::Method::kModelStatistics, grpc::Status::OK);
  };
  index_.request = [service](auto* context, auto* request, auto* responder, auto* cq, void* tag) {
    service->RequestRepositoryIndex(context, request, responder, cq, cq, tag);
  };
  index_.answer = [counted, manager](const inference::RepositoryIndexRequest& request,
                                     inference::RepositoryIndexResponse* response) {
    for (const IndexEntry& entry : manager->Index(request.ready())) {
      inference::RepositoryIndexResponse::ModelIndex* model = response->add_models();
      model->set_name(entry.name);
      model->set_version(entry.version);
      model->set_state(entry.state);
      model->set_reason(entry.reason);
    }
    return counted(metrics::Method::kRepositoryIndex, grpc::Status::OK);
  };
  // Triton's parameters of these two (a configuration or files to load with) are refused, not
  // ignored.
  const auto refuse_parameters = [](const char* rpc, size_t count) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat(rpc, " parameters are not supported (", count, " given)"));
  };
  load_.request = [service](auto* context, auto* request, auto* responder, auto* cq, void* tag) {
    service->RequestRepositoryModelLoad(context, request, responder, cq, cq, tag);
  };
  load_.start = [counted, manager, refuse_parameters](
                    const inference::RepositoryModelLoadRequest& request,
                    inference::RepositoryModelLoadResponse*,
                    DeferredCall<inference::RepositoryModelLoadRequest,
                                 inference::RepositoryModelLoadResponse>::Finish finish) {
    if (!request.parameters().empty()) {
      finish(counted(metrics::Method::kRepositoryModelLoad,
                     refuse_parameters("RepositoryModelLoad", request.parameters().size())));
      return;
    }
    manager->Load(request.model_name(), [counted, finish](absl::Status status) {
      finish(counted(metrics::Method::kRepositoryModelLoad, ToGrpcStatus(status)));
    });
  };
  unload_.request = [service](auto* context, auto* request, auto* responder, auto* cq, void* tag) {
    service->RequestRepositoryModelUnload(context, request, responder, cq, cq, tag);
  };
  unload_.start = [counted, manager, refuse_parameters](
                      const inference::RepositoryModelUnloadRequest& request,
                      inference::RepositoryModelUnloadResponse*,
                      DeferredCall<inference::RepositoryModelUnloadRequest,
                                   inference::RepositoryModelUnloadResponse>::Finish finish) {
    // unload_dependents (tritonclient always sends it) has nothing to act on: no model here
    // depends on another.
    const size_t others =
        request.parameters().size() - request.parameters().count("unload_dependents");
    if (others > 0) {
      finish(counted(metrics::Method::kRepositoryModelUnload,
                     refuse_parameters("RepositoryModelUnload", others)));
      return;
    }
    manager->Unload(request.model_name(), [counted, finish](absl::Status status) {
      finish(counted(metrics::Method::kRepositoryModelUnload, ToGrpcStatus(status)));
    });
  };
}

void OipService::Listen(grpc::ServerCompletionQueue* cq, int calls) {
  using inference::ModelConfigRequest, inference::ModelConfigResponse;
  for (int i = 0; i < calls; ++i) {
    UnaryCall<inference::ServerLiveRequest, inference::ServerLiveResponse>::Listen(live_, cq);
    UnaryCall<inference::ServerReadyRequest, inference::ServerReadyResponse>::Listen(ready_, cq);
    UnaryCall<inference::ModelReadyRequest, inference::ModelReadyResponse>::Listen(model_ready_,
                                                                                   cq);
    UnaryCall<inference::ServerMetadataRequest, inference::ServerMetadataResponse>::Listen(
        server_metadata_, cq);
    UnaryCall<inference::ModelMetadataRequest, inference::ModelMetadataResponse>::Listen(
        model_metadata_, cq);
    UnaryCall<ModelConfigRequest, ModelConfigResponse>::Listen(model_config_, cq);
    UnaryCall<inference::ModelStatisticsRequest, inference::ModelStatisticsResponse>::Listen(
        statistics_, cq);
    UnaryCall<inference::RepositoryIndexRequest, inference::RepositoryIndexResponse>::Listen(index_,
                                                                                             cq);
    DeferredCall<inference::RepositoryModelLoadRequest,
                 inference::RepositoryModelLoadResponse>::Listen(load_, cq);
    DeferredCall<inference::RepositoryModelUnloadRequest,
                 inference::RepositoryModelUnloadResponse>::Listen(unload_, cq);
  }
}

}  // namespace model_server::server
