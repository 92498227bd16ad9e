#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "batching/batch_queue.h"
#include "handlers/batch_executor.h"
#include "handlers/model_handler.h"
#include "server/drain_gate.h"
#include "server/evaluate_call.h"
#include "server/metrics/metrics.h"
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

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see ModelServer::port).
  std::string address = "0.0.0.0:13000";
  // Completion queues, each polled by its own thread; 0 means one per CPU this process may use.
  int cq_threads = 0;
  // Threads that decode requests and encode replies, whichever connection or batch they belong
  // to; 0 means one per CPU this process may use; -1 none: each completion-queue thread decodes
  // the requests it receives and the batch thread encodes the replies.
  int codec_threads = 0;
  // Largest request or response message, in bytes; larger ones fail with RESOURCE_EXHAUSTED.
  int max_message_bytes = 4 * 1024 * 1024;
  // Rows one request may carry (at most max_queue_rows); larger requests get INVALID_ARGUMENT.
  int64_t max_rows_per_request = 65536;
  // HTTP/2 streams (concurrent calls) one connection may open; more wait in the client.
  int max_concurrent_streams = 256;
  // Memory gRPC may use for its buffers and calls (ResourceQuota); beyond it gRPC sheds load.
  size_t grpc_memory_bytes = 256 * 1024 * 1024;
  // host:port of the Prometheus endpoint (GET /metrics); empty serves none.
  std::string metrics_address;
  // TLS settings; plaintext by default.
  TlsOptions tls;
  // How requests are coalesced into forward passes.
  batching::BatchingOptions batching;
  // How long Shutdown keeps serving normally after health turns NOT_SERVING, so that load
  // balancers that check health move traffic away before calls are refused.
  std::chrono::milliseconds drain_grace{0};
  // How long Shutdown, after the grace period, lets accepted calls finish before cancelling them.
  std::chrono::milliseconds drain_timeout{30000};
};

// The gRPC front end: ModelService (EvaluateModel, HealthCheck) and grpc.health.v1.Health on
// completion queues, feeding one dynamic batcher whose batch threads each run one loaded model
// instance.
class ModelServer {
 public:
  // Serves `instances` (at least one, all of the same model), each on its own batch thread;
  // takes ownership and releases them (LoadedModel's Cleanup) once shut down. Health says
  // SERVING once this returns OK. Errors: INVALID_ARGUMENT for bad options or instances,
  // UNAVAILABLE when the address cannot be bound (e.g. the port is in use).
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(
      const ServerOptions& options, std::vector<std::unique_ptr<handlers::LoadedModel>> instances);
  // One instance.
  static absl::StatusOr<std::unique_ptr<ModelServer>> Start(
      const ServerOptions& options, std::unique_ptr<handlers::LoadedModel> instance);

  ~ModelServer();

  // The port the server listens on.
  int port() const { return port_; }

  // Drains, then stops: health turns NOT_SERVING; calls are still served for drain_grace; then
  // new calls are refused (UNAVAILABLE) while accepted calls finish, and once calls have stopped
  // arriving gRPC's Shutdown closes the connections (all within drain_timeout of the grace's
  // end); then threads stop and the instances are released. Blocks until done. Idempotent; any
  // thread.
  void Shutdown();

  // Requests waiting in the batcher's queue (not those being computed). Any thread.
  size_t QueuedRequests() const { return batcher_->NumEnqueuedTasks(); }
  const metrics::ServerMetrics& metrics() const { return *metrics_; }

 private:
  ModelServer(const ServerOptions& options,
              std::vector<std::unique_ptr<handlers::LoadedModel>> instances);
  absl::Status Build();
  void SetServing(bool serving);

  const ServerOptions options_;
  std::unique_ptr<metrics::ServerMetrics> metrics_;  // outlives everything that records
  std::vector<std::unique_ptr<handlers::LoadedModel>> instances_;
  std::vector<std::unique_ptr<handlers::BatchExecutor>> executors_;  // one per instance
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<WorkPool> codec_pool_;  // null without codec threads
  ModelService::AsyncService service_;
  DrainGate drain_gate_;
  EvaluateContext evaluate_context_;
  UnaryCall<google::protobuf::Empty, HCReply>::Methods health_methods_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::thread> pollers_;
  int port_ = 0;
  std::atomic<bool> serving_{false};
  std::once_flag shutdown_once_;
};

}  // namespace model_server::server
