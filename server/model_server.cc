#include "server/model_server.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <set>
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

struct Credentials {
  std::shared_ptr<grpc::ServerCredentials> server;
  // The self-check's: plaintext, or TLS that does not verify the server (it is this process,
  // reached on loopback) and, under mTLS, presents the server's own certificate as the client's.
  std::shared_ptr<grpc::ChannelCredentials> self_check;
};

absl::StatusOr<Credentials> MakeCredentials(const TlsOptions& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) {
    if (!tls.client_ca_file.empty()) {
      return absl::InvalidArgumentError("a TLS client CA needs a TLS certificate and key");
    }
    return Credentials{grpc::InsecureServerCredentials(), grpc::InsecureChannelCredentials()};
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
  grpc::experimental::TlsChannelCredentialsOptions self_check;
  self_check.set_verify_server_certs(false);
  self_check.set_check_call_host(false);
  self_check.set_certificate_verifier(
      std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(tls.client_ca_file, "TLS client CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    self_check.set_certificate_provider(
        std::make_shared<grpc::experimental::StaticDataCertificateProvider>(
            std::vector<grpc::experimental::IdentityKeyCertPair>{{*key, *cert}}));
    self_check.watch_identity_key_cert_pairs();
  }
  return Credentials{grpc::SslServerCredentials(ssl),
                     grpc::experimental::TlsCredentials(self_check)};
}

void SetMilliseconds(grpc::ServerBuilder& builder, const char* name,
                     std::chrono::milliseconds value) {
  if (value.count() > 0) {
    builder.AddChannelArgument(name, static_cast<int>(std::min<int64_t>(value.count(), INT_MAX)));
  }
}

void AddConnectionBounds(const ConnectionOptions& connections, grpc::ServerBuilder& builder) {
  SetMilliseconds(builder, GRPC_ARG_MAX_CONNECTION_IDLE_MS, connections.max_idle);
  SetMilliseconds(builder, GRPC_ARG_MAX_CONNECTION_AGE_MS, connections.max_age);
  SetMilliseconds(builder, GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, connections.max_age_grace);
  SetMilliseconds(builder, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, connections.handshake_timeout);
  SetMilliseconds(builder, GRPC_ARG_KEEPALIVE_TIME_MS, connections.keepalive_time);
  SetMilliseconds(builder, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, connections.keepalive_timeout);
  SetMilliseconds(builder, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                  connections.min_ping_interval);
  // Without it, pings between calls count as strikes whatever their interval (gRPC allows one
  // per 2 h then), which would end idle clients that keep their connection alive politely.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, connections.max_ping_strikes);
}

// Sends the clients away once no accepted call is in flight: stops accepting connections, lets
// the kernel hand the clients the replies already written, and ends every connection, so that
// gRPC's Shutdown finds no client to drop a call of. Takes kFlushLimit + kEndLimit at most.
void EndConnections(const ServerSockets& sockets, const DrainGate& gate,
                    std::chrono::steady_clock::time_point refusing_since) {
  // gRPC writes a reply into the socket just after its call is done: the sockets' queues must
  // be empty after that (the clients' machines have every byte), or ending a connection could
  // cut a reply short.
  constexpr std::chrono::milliseconds kFlushSettle{20};
  constexpr std::chrono::milliseconds kFlushPoll{2};
  constexpr std::chrono::milliseconds kFlushLimit{1000};
  // For gRPC to see the ends and be done with the refused calls still on them (milliseconds).
  constexpr std::chrono::milliseconds kEndLimit{1000};
  const auto ms = [](std::chrono::steady_clock::duration duration) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(duration).count();
  };
  const auto started = std::chrono::steady_clock::now();
  spdlog::info(
      "drain: no accepted call in flight {} ms after the refusals began; new connections refused "
      "from now on",
      ms(started - refusing_since));
  const int listeners = sockets.StopListening();
  int64_t unacknowledged = 0;
  while (true) {
    std::this_thread::sleep_for(kFlushPoll);
    const auto waited = std::chrono::steady_clock::now() - started;
    if (waited < kFlushSettle) continue;
    unacknowledged = sockets.UnacknowledgedBytes();
    if (unacknowledged == 0 || waited >= kFlushLimit) break;
  }
  if (unacknowledged > 0) {
    spdlog::warn("drain: clients have not taken {} bytes after {} ms; ending the connections",
                 unacknowledged, kFlushLimit.count());
  }
  const auto flushed = std::chrono::steady_clock::now();
  const int connections = sockets.EndConnections();
  const bool done = gate.WaitForNone(std::chrono::steady_clock::now() + kEndLimit);
  spdlog::info(
      "drain: {} listeners stopped; {} connections ended {} ms later, once their replies were "
      "sent; {} calls left in flight {} ms after that",
      listeners, connections, ms(flushed - started), done ? 0 : gate.in_flight(),
      ms(std::chrono::steady_clock::now() - flushed));
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
  std::vector<FileModel> files;
  for (ModelSpec& spec : models) {
    if (spec.instances.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model ", spec.name, " has no instance to serve"));
    }
    // Version 1 is the instances given; later versions come from the source.
    auto first = std::make_shared<Instances>(std::move(spec.instances));
    files.push_back({spec.name, spec.source.path,
                     [first, load = std::move(spec.source.load)](
                         const repository::RepositoryModel&,
                         const repository::VersionFile&) -> absl::StatusOr<Instances> {
                       if (!first->empty()) return std::move(*first);
                       if (!load) return absl::FailedPreconditionError("the model has no file");
                       return load();
                     }});
  }
  ServerOptions file_options = options;
  if (file_options.seed_model.empty()) file_options.seed_model = files.front().name;
  absl::StatusOr<std::unique_ptr<ModelCatalog>> catalog = MakeFileCatalog(std::move(files));
  if (!catalog.ok()) return catalog.status();
  return Start(file_options, *std::move(catalog));
}

absl::StatusOr<std::unique_ptr<ModelServer>> ModelServer::Start(
    const ServerOptions& options, std::unique_ptr<ModelCatalog> catalog) {
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  if (options.max_rows_per_request <= 0) {
    return absl::InvalidArgumentError("max_rows_per_request must be positive");
  }
  if (options.max_concurrent_streams <= 0) {
    return absl::InvalidArgumentError("max_concurrent_streams must be positive");
  }
  if (options.models.poll_interval.count() < 0) {
    return absl::InvalidArgumentError("the repository poll interval must not be negative");
  }
  if (options.self_check.interval.count() < 0 || options.self_check.max_failures < 1) {
    return absl::InvalidArgumentError(
        "the self-check interval must not be negative and its failure count must be positive");
  }
  if (options.codec_threads < -1) {
    return absl::InvalidArgumentError("codec_threads must be -1 (none), 0 (one per CPU) or more");
  }
  if (absl::Status valid = batching::ValidateBatchingOptions(options.batching); !valid.ok()) {
    return valid;
  }
  std::unique_ptr<ModelServer> server(new ModelServer(options));
  if (absl::Status built = server->Build(std::move(catalog)); !built.ok()) return built;
  return server;
}

ModelServer::ModelServer(const ServerOptions& options) : options_(options) {}

CodecPlan PlanCodec(const ServerOptions& options) {
  if (options.codec_threads > 0) return {options.codec_threads, true};
  if (options.codec_threads < 0) return {0, false};
  const int cpus = platform::UsableCpus();
  return {cpus, cpus > 1};
}

absl::Status ModelServer::Build(std::unique_ptr<ModelCatalog> catalog) {
  const CodecPlan codec = PlanCodec(options_);
  if (codec.threads > 0) codec_pool_ = std::make_unique<WorkPool>(codec.threads);
  metrics::MetricsOptions metrics_options;
  metrics_options.address = options_.metrics_address;
  metrics_options.device_memory = options_.device_memory;
  absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> metrics =
      metrics::ServerMetrics::Start(metrics_options);
  if (!metrics.ok()) return metrics.status();
  metrics_ = *std::move(metrics);
  if (options_.response_cache_bytes > 0) {
    cache_ = std::make_unique<batching::ResponseCache>(options_.response_cache_bytes);
    metrics_->SetCacheSource([cache = cache_.get()] {
      const batching::ResponseCache::Stats stats = cache->stats();
      return metrics::CacheStats{stats.capacity_bytes, stats.bytes,     stats.entries,
                                 stats.insertions,     stats.evictions, stats.invalidations};
    });
  }
  models_ = std::make_unique<ModelRegistry>(metrics_.get());
  ManagerOptions manager_options = options_.models;
  manager_options.serving.batching = options_.batching;
  manager_options.serving.cache = cache_.get();
  manager_options.serving.max_idle_forward = options_.max_idle_forward;
  manager_options.serving.on_device_lost =
      [this](const std::string& model, const absl::Status& fault) { DeviceLost(model, fault); };
  // A request the queue can never hold is refused as such.
  manager_options.serving.max_rows_per_request =
      std::min<int64_t>(options_.max_rows_per_request, options_.batching.max_queue_rows);
  absl::StatusOr<std::unique_ptr<ModelManager>> manager = ModelManager::Start(
      std::move(catalog), models_.get(), codec_pool_.get(), metrics_.get(), manager_options);
  if (!manager.ok()) return manager.status();
  manager_ = *std::move(manager);

  std::string seed_model = options_.seed_model;
  if (seed_model.empty()) {
    const std::vector<IndexEntry> index = manager_->Index(/*ready_only=*/false);
    const bool has_default = std::any_of(index.begin(), index.end(), [](const IndexEntry& entry) {
      return entry.name == kDefaultModelName;
    });
    seed_model = has_default || index.empty() ? kDefaultModelName : index.front().name;
  }
  call_context_ =
      CallContext{metrics_.get(), codec.decode_there ? codec_pool_.get() : nullptr, &drain_gate_};
  evaluate_methods_ = EvaluateCall::Methods{&service_, models_.get(), seed_model};
  infer_methods_ = InferCall::Methods{&oip_service_, models_.get()};
  oip_ = std::make_unique<OipService>(&oip_service_, models_.get(), manager_.get(), &serving_,
                                      metrics_.get());
  absl::StatusOr<Credentials> credentials = MakeCredentials(options_.tls);
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
  builder.AddListeningPort(options_.address, credentials->server, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  // gRPC binds with SO_REUSEPORT by default, which lets a second server share a port in use.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  AddConnectionBounds(options_.connections, builder);
  grpc::ResourceQuota quota("model_server");
  quota.Resize(options_.grpc_memory_bytes);
  builder.SetResourceQuota(quota);
  builder.RegisterService(&service_);
  builder.RegisterService(&oip_service_);
  const int num_queues = options_.cq_threads > 0 ? options_.cq_threads : platform::UsableCpus();
  for (int i = 0; i < num_queues; ++i) queues_.push_back(builder.AddCompletionQueue());
  const std::set<ino_t> listening_before = ServerSockets::ListeningNow();
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    for (auto& cq : queues_) {
      cq->Shutdown();
      PollCompletionQueue(cq.get());
    }
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.address, " (address in use or invalid)"));
  }
  sockets_ = ServerSockets::Find(listening_before, port_);
  if (sockets_.listeners() == 0) {
    spdlog::warn(
        "drain: the listening socket is not in /proc/self/fd; a drain will wait for calls to stop "
        "arriving (up to the drain timeout) before it closes the connections");
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
    pollers_.emplace_back([queue = cq.get()] { PollCompletionQueueNotingIdle(queue); });
  }
  SetServing(true);
  if (options_.self_check.interval.count() > 0) StartSelfCheck(credentials->self_check);
  return absl::OkStatus();
}

size_t ModelServer::QueuedRequests() const { return models_->QueuedRequests(); }

void ModelServer::StartSelfCheck(std::shared_ptr<grpc::ChannelCredentials> credentials) {
  const std::string target = SelfCheckTarget(options_.address, port_);
  const grpc::Status first =
      SelfCheck::CheckOnce(target, credentials, options_.self_check.interval);
  if (!first.ok()) {
    // A check that cannot succeed on a healthy server would restart it for nothing.
    spdlog::warn(
        "self-check off: a new connection to {} failed at startup ({}); only probes that open a "
        "new connection each time can tell whether new connections are accepted",
        target, first.error_message());
    return;
  }
  spdlog::info("self-check: a new connection to {} every {} ms; {} failures in a row end serving",
               target, options_.self_check.interval.count(), options_.self_check.max_failures);
  self_check_ = std::make_unique<SelfCheck>(
      options_.self_check, target, std::move(credentials), [this](const grpc::Status& last) {
        spdlog::error(
            "self-check: new connections to {} failed {} times in a row (last: {}); the listener "
            "no longer accepts them (gRPC 1.51 stops accepting for good after accept4 fails, e.g. "
            "when file descriptors run out): health NOT_SERVING",
            SelfCheckTarget(options_.address, port_), options_.self_check.max_failures,
            last.error_message());
        SetServing(false);
        if (options_.self_check.on_failure) options_.self_check.on_failure();
      });
}

void ModelServer::DeviceLost(const std::string& model, const absl::Status& fault) {
  if (device_lost_.exchange(true)) return;
  spdlog::critical(
      "model {}: its device can compute nothing any more ({}): health NOT_SERVING; every "
      "request on that device fails with UNAVAILABLE from now on",
      model, std::string(fault.message()));
  // Requests come through the server, so it is running: server_ is set.
  SetServing(false);
  if (options_.on_device_lost) options_.on_device_lost(fault);
}

void ModelServer::SetServing(bool serving) {
  serving_.store(serving);
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus("", serving);
  health->SetServingStatus("modelservice", serving);
}

void ModelServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    manager_->Stop();     // no load, swap or unload while draining
    self_check_.reset();  // new calls are about to be refused: that is no failure
    SetServing(false);
    if (options_.drain_grace.count() > 0) {
      spdlog::info("drain: health NOT_SERVING; serving calls for a grace period of {} ms",
                   options_.drain_grace.count());
      std::this_thread::sleep_for(options_.drain_grace);
    }
    // New calls are refused (UNAVAILABLE) while accepted ones finish: the batcher and the
    // pollers keep running, so queued requests are computed and answered.
    const auto refusing_since = std::chrono::steady_clock::now();
    const auto drain_deadline = refusing_since + options_.drain_timeout;
    drain_gate_.Close();
    if (!drain_gate_.WaitForAdmitted(drain_deadline)) {
      spdlog::warn("drain: timeout with {} accepted calls in flight; closing the connections",
                   drain_gate_.admitted_in_flight());
    }
    // gRPC's Shutdown would drop calls that reach the server after it starts (DrainGate says
    // why), so the clients are sent away first, where they see UNAVAILABLE.
    if (sockets_.listeners() > 0) {
      EndConnections(sockets_, drain_gate_, refusing_since);
    } else if (!drain_gate_.WaitForQuiet(kDrainQuietPeriod, drain_deadline)) {
      spdlog::warn("drain: timeout before calls stopped; cancelling the {} calls in flight",
                   drain_gate_.in_flight());
    }
    server_->Shutdown(std::chrono::system_clock::now());
    spdlog::info(
        "drain: connections closed; {} calls refused while draining; {} calls accepted since "
        "start",
        drain_gate_.refused(), drain_gate_.admitted());
    // Anything still queued after a drain timeout is computed or dropped (its call was
    // cancelled), and finished before the queues close: the batcher's last replies run on the
    // codec pool, which stops after them.
    models_->ShutdownAll();  // runs LoadedModel's Cleanup
    if (codec_pool_ != nullptr) codec_pool_->Shutdown();
    for (auto& cq : queues_) cq->Shutdown();
    for (std::thread& poller : pollers_) poller.join();
  });
}

ModelServer::~ModelServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace model_server::server
