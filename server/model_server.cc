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

bool SameShape(const handlers::ModelSignature& a, const handlers::ModelSignature& b) {
  return a.num_inputs == b.num_inputs && a.num_outputs == b.num_outputs &&
         a.num_params == b.num_params;
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
  if (instances.empty()) return absl::InvalidArgumentError("no model instance to serve");
  for (const auto& instance : instances) {
    if (!SameShape(instance->signature(), instances[0]->signature())) {
      return absl::InvalidArgumentError("model instances differ in their signatures");
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
  if (options.codec_threads < -1) {
    return absl::InvalidArgumentError("codec_threads must be -1 (none), 0 (one per CPU) or more");
  }
  std::unique_ptr<ModelServer> server(new ModelServer(options, std::move(instances)));
  if (absl::Status built = server->Build(); !built.ok()) return built;
  return server;
}

ModelServer::ModelServer(const ServerOptions& options,
                         std::vector<std::unique_ptr<handlers::LoadedModel>> instances)
    : options_(options), instances_(std::move(instances)) {
  for (auto& instance : instances_) {
    executors_.push_back(std::make_unique<handlers::BatchExecutor>(instance->handler()));
  }
}

absl::Status ModelServer::Build() {
  if (options_.codec_threads >= 0) {
    codec_pool_ = std::make_unique<WorkPool>(options_.codec_threads > 0 ? options_.codec_threads
                                                                        : platform::UsableCpus());
  }
  // Batches run only once calls arrive, after metrics_ is set below.
  absl::StatusOr<std::unique_ptr<Batcher>> batcher = Batcher::Create(
      options_.batching, instances_.size(),
      [this](size_t worker, std::vector<std::unique_ptr<handlers::InferenceTask>>& batch) {
        const auto start = std::chrono::steady_clock::now();
        const size_t requests = batch.size();
        size_t rows = 0;
        for (const auto& task : batch) rows += task->rows();
        const size_t forward_passes = executors_[worker]->Execute(batch);
        metrics_->RecordBatch(
            requests, rows, forward_passes,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        EvaluateCall::ReplyAll(batch, codec_pool_.get());
      });
  if (!batcher.ok()) return batcher.status();
  batcher_ = *std::move(batcher);

  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> metrics = metrics::ServerMetrics::Start(
      {.address = options_.metrics_address,
       .queued_requests = [batcher = batcher_.get()] { return batcher->NumEnqueuedTasks(); }});
  if (!metrics.ok()) return metrics.status();
  metrics_ = *std::move(metrics);
  handlers::InitializeTimes startup;
  for (const auto& instance : instances_) {
    startup.load_seconds += instance->handler().initialize_times().load_seconds;
    startup.warmup_seconds += instance->handler().initialize_times().warmup_seconds;
  }
  metrics_->SetModelLoadSeconds(startup.load_seconds);
  metrics_->SetWarmupSeconds(startup.warmup_seconds);
  evaluate_context_ = EvaluateContext{
      &service_, batcher_.get(), &instances_[0]->signature(),
      // A request the queue can never hold is refused as such.
      std::min<int64_t>(options_.max_rows_per_request, options_.batching.max_queue_rows),
      metrics_.get(), codec_pool_.get(), &drain_gate_};
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
    for (int i = 0; i < kCallsArmedPerQueue; ++i) EvaluateCall::Listen(evaluate_context_, cq.get());
    for (int i = 0; i < kHealthCallsPerQueue; ++i) {
      UnaryCall<google::protobuf::Empty, HCReply>::Listen(health_methods_, cq.get());
    }
    pollers_.emplace_back([queue = cq.get()] { PollCompletionQueue(queue); });
  }
  SetServing(true);
  return absl::OkStatus();
}

void ModelServer::SetServing(bool serving) {
  serving_.store(serving);
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  health->SetServingStatus("modelservice", serving);
}

void ModelServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    SetServing(false);
    if (options_.drain_grace.count() > 0) {
      spdlog::info("drain: health NOT_SERVING; serving calls for a grace period of {} ms",
                   options_.drain_grace.count());
      std::this_thread::sleep_for(options_.drain_grace);
    }
    // New calls are refused (UNAVAILABLE) while accepted ones finish: the batcher and the
    // pollers keep running, so queued requests are computed and answered. gRPC's Shutdown would
    // drop calls that arrive after it starts (DrainGate says why), so it comes only once calls
    // have stopped, and then closes the connections at once instead of waiting for clients.
    const auto drain_deadline = std::chrono::steady_clock::now() + options_.drain_timeout;
    drain_gate_.Close();
    if (!drain_gate_.WaitForQuiet(kDrainQuietPeriod, drain_deadline)) {
      spdlog::warn("drain: timeout before calls stopped; cancelling the {} calls in flight",
                   drain_gate_.in_flight());
    }
    server_->Shutdown(std::chrono::system_clock::now());
    spdlog::info("drain: connections closed; {} calls refused while draining",
                 drain_gate_.refused());
    // Anything still queued after a drain timeout is computed or dropped (its call was
    // cancelled), and finished before the queues close: the batcher's last replies run on the
    // codec pool, which stops after them.
    batcher_->Shutdown();
    if (codec_pool_ != nullptr) codec_pool_->Shutdown();
    for (auto& cq : queues_) cq->Shutdown();
    for (std::thread& poller : pollers_) poller.join();
    executors_.clear();
    instances_.clear();  // LoadedModel's destructor runs Cleanup
  });
}

ModelServer::~ModelServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace model_server::server
