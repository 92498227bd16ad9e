#include "server/model_server.h"

#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "platform/cpus.h"

namespace model_server::server {
namespace {

// Health checks are rare: a couple of armed calls per queue suffice.
constexpr int kHealthCallsPerQueue = 2;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  if (!file || contents.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " file ", path));
  }
  return contents.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const TlsOptions& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) {
    if (!tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError("a TLS client CA needs a TLS certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key");
  }
  absl::StatusOr<std::string> cert = ReadFile(tls.cert_file, "TLS certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(tls.key_file, "TLS key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(tls.client_ca_file, "TLS client CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(
    const ServerOptions& options, std::unique_ptr<handlers::LoadedModel> instance) {
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances;
  instances.push_back(std::move(instance));
  return Start(options, std::move(instances));
}

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(
    const ServerOptions& options, std::vector<std::unique_ptr<handlers::LoadedModel>> instances) {
  std::vector<ModelSpec> models(1);
  models[0].instances = std::move(instances);
  return Start(options, std::move(models));
}

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(const ServerOptions& options,
                                                                std::vector<ModelSpec> models) {
  if (models.empty()) return absl::InvalidArgumentError("no model to serve");
  for (size_t i = 0; i < models.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (models[i].name == models[j].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("model name \"", models[i].name, "\" is given twice"));
      }
    }
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  if (options.max_rows_per_request <= 0) {
    return absl::InvalidArgumentError("max_rows_per_request must be positive");
  }
  if (options.max_concurrent_streams <= 0) {
    return absl::InvalidArgumentError("max_concurrent_streams must be positive");
  }
  if (options.model_poll_interval.count() < 0) {
    return absl::InvalidArgumentError("model_poll_interval must not be negative");
  }
  if (options.codec_threads < -1) {
    return absl::InvalidArgumentError("codec_threads must be -1 (none), 0 (one per CPU) or more");
  }
  std::unique_ptr<ModelServer> server(new ModelServer(options));
  if (absl::Status built = server->Build(std::move(models)); !built.ok()) return built;
  return server;
}

ModelServer::ModelServer(const ServerOptions& options) : options_(options) {}

absl::Status ModelServer::Build(std::vector<ModelSpec> models) {
  if (options_.codec_threads >= 0) {
    codec_pool_ = std::make_unique<WorkPool>(options_.codec_threads > 0 ? options_.codec_threads
                                                                        : platform::UsableCpus());
  }
  metrics::MetricsOptions metrics_options;
  metrics_options.address = options_.metrics_address;
  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> metrics =
      metrics::ServerMetrics::Start(metrics_options);
  if (!metrics.ok()) return metrics.status();
  metrics_ = *std::move(metrics);
  for (ModelSpec& spec : models) {
    absl::StatusOr<std::unique_ptr<ServedModel>> model =
        ServedModel::Create(std::move(spec.name), std::move(spec.instances), std::move(spec.source),
                            options_.batching, codec_pool_.get(), metrics_.get());
    if (!model.ok()) return model.status();
    models_.push_back(*std::move(model));
  }

  call_context_ = CallContext{
      // A request the queue can never hold is refused as such.
      std::min<int64_t>(options_.max_rows_per_request, options_.batching.max_queue_rows),
      metrics_.get(), codec_pool_.get()};
  evaluate_methods_ = EvaluateCall::Methods{&service_, models_.front().get()};
  infer_methods_ = InferCall::Methods{&oip_service_, &models_};
  oip_ = std::make_unique<OipService>(&oip_service_, &models_, &serving_, metrics_.get());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeCredentials(options_.tls);
  if (!credentials.ok()) return credentials.status();
  health_methods_.request = [this](grpc::ServerContext* context, google::protobuf::Empty* request,
                                   grpc::ServerAsyncResponseWriter<HCReply>* responder,
                                   grpc::ServerCompletionQueue* cq, void* tag) {
    service_.RequestHealthCheck(context, request, responder, cq, cq, tag);
  };
  health_methods_.answer = [this](const google::protobuf::Empty&, HCReply* reply) {
    metrics_->RecordRequest(metrics::Method::kHealthCheck, grpc::StatusCode::OK, 0.0);
    reply->set_status(serving_.load() ? "SERVING" : "NOT_SERVING");
    return grpc::Status::OK;
  };

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.address, *credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  // gRPC binds with SO_REUSEPORT by default, which lets a second server share a port in use.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  grpc::ResourceQuota quota("model_server");
  quota.Resize(options_.grpc_memory_bytes);
  builder.SetResourceQuota(quota);
  builder.RegisterService(&service_);
  builder.RegisterService(&oip_service_);
  const int num_queues = options_.cq_threads > 0 ? options_.cq_threads : platform::UsableCpus();
  for (int i = 0; i < num_queues; ++i) queues_.push_back(builder.AddCompletionQueue());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    for (auto& cq : queues_) {
      cq->Shutdown();
      PollCompletionQueue(cq.get());
    }
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.address, " (address in use or invalid)"));
  }

  for (auto& cq : queues_) {
    for (int i = 0; i < kCallsArmedPerQueue; ++i) {
      EvaluateCall::Listen(call_context_, evaluate_methods_, cq.get());
      InferCall::Listen(call_context_, infer_methods_, cq.get());
    }
    for (int i = 0; i < kHealthCallsPerQueue; ++i) {
      UnaryCall<google::protobuf::Empty, HCReply>::Listen(health_methods_, cq.get());
    }
    oip_->Listen(cq.get(), kHealthCallsPerQueue);
    pollers_.emplace_back([queue = cq.get()] { PollCompletionQueue(queue); });
  }
  reloader_ = std::make_unique<ModelReloader>(&models_, options_.model_poll_interval);
  SetServing(true);
  return absl::OkStatus();
}

size_t ModelServer::QueuedRequests() const {
  size_t queued = 0;
  for (const auto& model : models_) queued += model->QueuedRequests();
  return queued;
}

void ModelServer::SetServing(bool serving) {
  serving_.store(serving);
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  health->SetServingStatus("modelservice", serving);
}

void ModelServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    reloader_->Stop();  // no swap while draining
    SetServing(false);
    // Refuses new calls at once and waits for accepted ones: the batcher and the pollers keep
    // running meanwhile, so queued requests are computed and answered.
    server_->Shutdown(std::chrono::system_clock::now() + options_.drain_timeout);
    // Anything still queued after a drain timeout is computed or dropped (its call was
    // cancelled), and finished before the queues close: the batcher's last replies run on the
    // codec pool, which stops after them.
    for (auto& model : models_) model->Shutdown();  // runs LoadedModel's Cleanup
    if (codec_pool_ != nullptr) codec_pool_->Shutdown();
    for (auto& cq : queues_) cq->Shutdown();
    for (std::thread& poller : pollers_) poller.join();
  });
}

ModelServer::~ModelServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace model_server::server
