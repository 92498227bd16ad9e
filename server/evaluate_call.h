#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "batching/dynamic_batcher.h"
#include "handlers/inference_task.h"
#include "handlers/model_types.h"
#include "protos/model_interface.grpc.pb.h"
#include "server/completion_queue.h"
#include "server/drain_gate.h"
#include "server/metrics/metrics.h"
#include "server/work_pool.h"

namespace model_server::server {

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;

// What every EvaluateModel call needs; owned by the server and outlives all calls.
struct EvaluateContext {
  ModelService::AsyncService* service = nullptr;
  Batcher* batcher = nullptr;
  const handlers::ModelSignature* signature = nullptr;
  int64_t max_rows_per_request = 0;
  metrics::ServerMetrics* metrics = nullptr;
  // Where calls decode their requests and encode their replies; null: on the completion-queue
  // thread and the batch thread themselves.
  WorkPool* codec_pool = nullptr;
  // Admits calls until the server drains; every call that arrives is counted in it.
  DrainGate* drain = nullptr;
};

// One EvaluateModel call. When its request arrives on a completion-queue thread, a codec-pool
// thread decodes it and queues it for the batcher; the batch thread that runs it copies out its
// rows of the outputs, and a codec-pool thread encodes the reply and finishes the call (without
// a pool, the completion-queue thread decodes and the batch thread encodes). A bad request, a
// full queue or a draining server is answered at once. The call deletes itself once gRPC is done
// with it.
class EvaluateCall final : public Tag, public WorkPool::Item {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Arms one call waiting for the next request on `cq`.
  static void Listen(const EvaluateContext& context, grpc::ServerCompletionQueue* cq);

  // Replies to every call of a batch that ran (the others have been failed already): on the
  // codec pool, all submitted at once, else here. Batch thread, after BatchExecutor::Execute.
  static void ReplyAll(const std::vector<std::unique_ptr<handlers::InferenceTask>>& batch,
                       WorkPool* codec_pool);

  void Proceed(bool ok) override;
  // Codec pool: decodes the request, or encodes the reply, as the call's state says.
  void Run() override;

  // Called once, by the batch thread, through the call's task: keeps this call's rows of the
  // batch's outputs (`stride` floats apart, valid only during the call) for its reply.
  void KeepOutputs(const float* outputs, int64_t rows, int64_t stride);
  void Fail(const absl::Status& status);

  // DEADLINE_EXCEEDED or CANCELLED once the call is no longer worth computing. Any thread.
  absl::Status Liveness(TimePoint now) const;

 private:
  enum class State { kWaitingForRequest, kDecoding, kQueued, kReplying, kFinished };

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
  // Decodes the request and queues it for the batcher, or fails the call.
  void Decode();
  // Encodes the kept outputs and finishes the call with them.
  void Reply();
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
  std::vector<std::string> output_names_;  // the reply's columns, from the request
  std::vector<float> outputs_;             // [rows_, output_names_.size()] for the reply
  int64_t rows_ = 0;
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
