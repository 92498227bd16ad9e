#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/batch_queue.h"
#include "batching/response_cache.h"
#include "handlers/model_handler.h"
#include "protos/grpc_predict_v2.grpc.pb.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/batched_call.h"
#include "server/drain_gate.h"
#include "server/evaluate_call.h"
#include "server/infer_call.h"
#include "server/metrics/metrics.h"
#include "server/model_catalog.h"
#include "server/model_manager.h"
#include "server/model_registry.h"
#include "server/oip_service.h"
#include "server/self_check.h"
#include "server/served_model.h"
#include "server/server_sockets.h"
#include "server/unary_call.h"
#include "server/work_pool.h"

namespace model_server::server {

struct TlsOptions {
  // PEM certificate chain to serve TLS with; empty serves plaintext.
  std::string cert_file;
  // PEM private key of cert_file.
  std::string key_file;
  // PEM CA bundle; when set, clients must present a certificate signed by it (mTLS).
  std::string client_ca_file;
};

// Bounds on each client connection's life, from gRPC 1.51's channel arguments; zero leaves a
// bound at gRPC's own default (docs/SECURITY.md has the threats each one answers).
struct ConnectionOptions {
  // A connection with no call for this long gets a GOAWAY and closes (grpc.max_connection_idle_ms);
  // a client reconnects on its next call.
  std::chrono::milliseconds max_idle{std::chrono::minutes(5)};
  // A connection this old (gRPC adds +-10 % jitter) gets a GOAWAY (grpc.max_connection_age_ms):
  // clients reconnect, re-resolve and so reach new replicas, and no call, however slowly its
  // client sends it, holds a connection longer than max_age + max_age_grace.
  std::chrono::milliseconds max_age{std::chrono::minutes(5)};
  // Calls in progress at that GOAWAY get this long to finish before the connection is closed
  // (grpc.max_connection_age_grace_ms); longer than any legitimate call.
  std::chrono::milliseconds max_age_grace{std::chrono::seconds(30)};
  // A new connection must complete its handshake (TCP, TLS, the client's HTTP/2 preface and
  // SETTINGS) within this or is closed (grpc.server_handshake_timeout_ms; gRPC's own: 120 s).
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
  // The server pings a connection that has been quiet this long, and closes it when the ping is
  // not answered within keepalive_timeout: dead peers stop holding file descriptors
  // (grpc.keepalive_time_ms, grpc.keepalive_timeout_ms; gRPC's own: 2 h, 20 s).
  std::chrono::milliseconds keepalive_time{std::chrono::minutes(1)};
  std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(20)};
  // Client pings closer together than this (with no data in between, and also between calls)
  // are strikes; a connection with more than max_ping_strikes gets GOAWAY ENHANCE_YOUR_CALM
  // (grpc.http2.min_recv_ping_interval_without_data_ms, grpc.http2.max_ping_strikes,
  // grpc.keepalive_permit_without_calls): a ping flood ends after three pings.
  std::chrono::milliseconds min_ping_interval{std::chrono::minutes(1)};
  int max_ping_strikes = 2;
};

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see ModelServer::port).
  std::string address = "0.0.0.0:13000";
  // Completion queues, each polled by its own thread; 0 means one per CPU this process may use.
  int cq_threads = 0;
  // Threads that decode requests and encode replies, whichever connection or batch they belong
  // to; 0 means one per CPU this process may use, except where it may use one CPU only: there
  // one thread encodes the replies and each completion-queue thread decodes the requests it
  // receives (on one core a hand-off per request costs more than it spreads, one per batch
  // less: docs/BENCHMARKS.md); -1 none: each completion-queue thread decodes the requests it
  // receives and the batch thread encodes the replies.
  int codec_threads = 0;
  // Largest request or response message, in bytes; larger ones fail with RESOURCE_EXHAUSTED.
  int max_message_bytes = 4 * 1024 * 1024;
  // Rows one request may carry (at most max_queue_rows); larger requests get INVALID_ARGUMENT.
  int64_t max_rows_per_request = 65536;
  // HTTP/2 streams (concurrent calls) one connection may open; more wait in the client. Each
  // may hold a message of up to max_message_bytes, so a connection holds at most their product
  // (64 x 4 MiB = 256 MiB at the defaults; docs/SECURITY.md).
  int max_concurrent_streams = 64;
  // Memory gRPC may use for its buffers and calls (ResourceQuota); beyond it gRPC sheds load.
  size_t grpc_memory_bytes = 256 * 1024 * 1024;
  // host:port of the Prometheus endpoint (GET /metrics); empty serves none.
  std::string metrics_address;
  // TLS settings; plaintext by default.
  TlsOptions tls;
  // How requests are coalesced into forward passes.
  batching::BatchingOptions batching;
  // Bytes the response cache holds at most (Triton's --cache-config local,size=BYTES); 0: no
  // cache. Models opt in with response_cache { enable: true } in their configuration.
  size_t response_cache_bytes = 0;
  // A call that arrives while no other call is in flight, and finds its model version idle,
  // runs to completion on the completion-queue thread that received it (no hand-off to the
  // codec pool or the batch thread) when the version's forward pass is expected to take at most
  // this long (from its measured passes); zero: never, every call goes through the batcher.
  // Never for a model with a batching delay, or whose instances are ThreadBound (a GPU's).
  std::chrono::microseconds max_idle_forward{500};
  // How long Shutdown keeps serving normally after health turns NOT_SERVING, so that load
  // balancers that check health move traffic away before calls are refused.
  std::chrono::milliseconds drain_grace{0};
  // How long Shutdown, after the grace period, lets accepted calls finish before cancelling them.
  std::chrono::milliseconds drain_timeout{30000};
  // How models are loaded, reloaded and unloaded (Triton's model control modes); its serving
  // options are taken from `batching` and `max_rows_per_request` above.
  ManagerOptions models;
  // The model ModelService's EvaluateModel computes with (its latest version); empty: the model
  // named "default" when there is one, else the first by name.
  std::string seed_model;
  // Time and ping bounds on each client connection.
  ConnectionOptions connections;
  // Checks that new connections are still accepted (see SelfCheck); on by default.
  SelfCheckOptions self_check;
  // Called once, on the batch thread that found it, after a model instance's device was found
  // lost (a sticky CUDA error, handlers/fault.h) and the server turned NOT_SERVING: nothing on
  // that device computes any more, so main drains and exits with its own code for the
  // orchestrator to restart the server. Must not call Shutdown (it joins that thread). Null:
  // the log line and NOT_SERVING only.
  std::function<void(const absl::Status& fault)> on_device_lost;
  // Each GPU's memory, for the metrics (metrics::MetricsOptions::device_memory); null: none.
  std::function<std::vector<metrics::DeviceMemory>()> device_memory;
};

// Where the codec work runs, as ServerOptions::codec_threads asks, resolved.
struct CodecPlan {
  int threads = 0;            // codec threads; 0: none, the batch threads encode the replies
  bool decode_there = false;  // false: the completion-queue threads decode the requests
};
CodecPlan PlanCodec(const ServerOptions& options);

// The name of the model a server serves when it is given one without a name.
inline constexpr char kDefaultModelName[] = "default";

// Where a model's new versions come from.
struct ModelSource {
  // The model's file, polled for changes; empty: the model has no file (the built-in demo model)
  // and is never reloaded.
  std::string path;
  // Loads and warms up a new version from `path`: one instance per batch thread, as at startup.
  std::function<absl::StatusOr<Instances>()> load;
};

// One model to serve from loaded instances (one per batch thread, all alike) as its version 1,
// and where its new versions come from (nowhere by default).
struct ModelSpec {
  std::string name = kDefaultModelName;
  Instances instances;
  ModelSource source;
};

// The gRPC front end on completion queues, all on one port: the seed's ModelService
// (EvaluateModel, HealthCheck), the Open Inference Protocol's GRPCInferenceService and
// grpc.health.v1.Health. Each model has its own dynamic batcher, whose batch threads each run
// one loaded instance of it; EvaluateModel calls go to the first model, ModelInfer calls to the
// model they name, and both protocols' calls for one model share its batches.
class ModelServer {
 public:
  // Serves the models of `catalog`: those options.models names at startup are loaded (each
  // instance on its own batch thread) before this returns, and Health (and OIP readiness) says
  // SERVING once it returns OK. With options.self_check on, one check has run by then: if it
  // failed (e.g. under mTLS the client CA does not accept the server's own certificate), the
  // self-check stays off and a warning says why. Errors: INVALID_ARGUMENT for bad options, a
  // startup model's load error (with options.models.exit_on_error), UNAVAILABLE when the address
  // cannot be bound (e.g. the port is in use).
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(const ServerOptions& options,
                                                            std::unique_ptr<ModelCatalog> catalog);
  // Serves `models` (at least one; distinct names) from their instances; takes ownership and
  // releases them (LoadedModel's Cleanup) once replaced or shut down. Errors as above, and
  // INVALID_ARGUMENT for no model, a name given twice, a bad name, no instances, instances that
  // differ.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(const ServerOptions& options,
                                                            std::vector<ModelSpec> models);
  // The model "default" with these instances.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(
      const ServerOptions& options, std::vector<std::unique_ptr<handlers::LoadedModel>> instances);
  // The model "default" with one instance.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(
      const ServerOptions& options, std::unique_ptr<handlers::LoadedModel> instance);

  ~ModelServer();

  // The port the server listens on.
  int port() const { return port_; }

  // Drains, then stops: health turns NOT_SERVING; calls are still served for drain_grace; then
  // new calls are refused (UNAVAILABLE) while accepted calls finish (within drain_timeout of the
  // grace's end); then the server stops accepting connections, closes the open ones (within
  // about 2 s more, whatever clients do) and gRPC's Shutdown runs; then threads stop and the
  // instances are released. Blocks until done. Idempotent; any thread.
  void Shutdown();

  // Loads every serving model anew, as soon as the model manager is free (what SIGHUP does);
  // returns at once. A version that fails is logged and counted, and the old one serves on. Any
  // thread.
  void ReloadModels() { manager_->RequestReload(); }

  // Requests waiting in the batchers' queues (not those being computed). Any thread.
  size_t QueuedRequests() const;
  const metrics::ServerMetrics& metrics() const { return *metrics_; }

 private:
  explicit ModelServer(const ServerOptions& options);
  absl::Status Build(std::unique_ptr<ModelCatalog> catalog);
  void SetServing(bool serving);
  // A model instance's device is lost: NOT_SERVING and on_device_lost, once. Batch thread.
  void DeviceLost(const std::string& model, const absl::Status& fault);
  // Starts the self-check once a first check succeeds; logs why not otherwise.
  void StartSelfCheck(std::shared_ptr<grpc::ChannelCredentials> credentials);

  const ServerOptions options_;
  // Before the metrics, which read it, and the models, which fill it: it outlives both.
  std::unique_ptr<batching::ResponseCache> cache_;   // null without one
  std::unique_ptr<metrics::ServerMetrics> metrics_;  // outlives everything that records
  std::unique_ptr<WorkPool> codec_pool_;             // null without codec threads
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<ModelManager> manager_;  // after models_: stopped before them
  ModelService::AsyncService service_;
  inference::GRPCInferenceService::AsyncService oip_service_;
  DrainGate drain_gate_;
  CallContext call_context_;
  EvaluateCall::Methods evaluate_methods_;
  InferCall::Methods infer_methods_;
  std::unique_ptr<OipService> oip_;
  UnaryCall<google::protobuf::Empty, HCReply>::Methods health_methods_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::unique_ptr<grpc::Server> server_;
  ServerSockets sockets_;  // server_'s listeners, for the drain
  std::vector<std::thread> pollers_;
  std::unique_ptr<SelfCheck> self_check_;  // stopped as Shutdown starts
  int port_ = 0;
  std::atomic<bool> serving_{false};
  std::atomic<bool> device_lost_{false};
  std::once_flag shutdown_once_;
};

}  // namespace model_server::server
