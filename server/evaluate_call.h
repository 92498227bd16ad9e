#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "batching/dynamic_batcher.h"
#include "handlers/inference_task.h"
#include "handlers/model_types.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/completion_queue.h"
#include "server/drain_gate.h"
#include "server/metrics/metrics.h"

namespace model_server::server {

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;

// What every EvaluateModel call needs; owned by the server and outlives all calls.
struct EvaluateContext {
  ModelService::AsyncService* service = nullptr;
  Batcher* batcher = nullptr;
  const handlers::ModelSignature* signature = nullptr;
  int64_t max_rows_per_request = 0;
  metrics::ServerMetrics* metrics = nullptr;
  // Admits calls until the server drains; every call that arrives is counted in it.
  DrainGate* drain = nullptr;
};

// One EvaluateModel call. It decodes its request on the completion-queue thread that received
// it, queues it for the batcher, and is finished by the batch thread that ran it (or at once,
// on a bad request, a full queue or a draining server). It deletes itself once gRPC is done with
// it.
class EvaluateCall final : public Tag {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Arms one call waiting for the next request on `cq`.
  static void Listen(const EvaluateContext& context, grpc::ServerCompletionQueue* cq);

  void Proceed(bool ok) override;

  // Called once, by the batch thread, through the call's task.
  void Reply(const handlers::InferenceRequest& request, const float* outputs, int64_t stride);
  void Fail(const absl::Status& status);

  // DEADLINE_EXCEEDED or CANCELLED once the call is no longer worth computing. Any thread.
  absl::Status Liveness(TimePoint now) const;

 private:
  enum class State { kWaitingForRequest, kQueued, kFinished };

  // Fires when the call ends for any reason, client cancellation included.
  class DoneTag final : public Tag {
   public:
    explicit DoneTag(EvaluateCall* call) : call_(call) {}
    void Proceed(bool ok) override;

   private:
    EvaluateCall* const call_;
  };

  EvaluateCall(const EvaluateContext& context, grpc::ServerCompletionQueue* cq);
  void Start();
  // Counts the call's outcome, once: whichever of the finishing thread (just before Finish) and
  // the done tag (the client cancelled, or its deadline passed) comes first.
  void RecordOutcome(grpc::StatusCode code);
  // Drops one of the two tags (finish, done) still owed; the last one tells the drain gate and
  // deletes the call.
  void Release();

  const EvaluateContext& context_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext server_context_;
  inRequest request_;
  outCalc reply_;
  grpc::ServerAsyncResponseWriter<outCalc> responder_;
  DoneTag done_tag_{this};
  State state_ = State::kWaitingForRequest;
  TimePoint arrived_;
  std::optional<TimePoint> deadline_;  // set on arrival; nullopt when the client set none
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> outcome_recorded_{false};
  std::atomic<int> tags_owed_{2};
};

}  // namespace model_server::server
