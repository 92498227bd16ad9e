#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "dynamic_batcher.h"
#include "inference_task.h"
#include "metrics.h"
#include "model_handler.h"
#include "model_interface.grpc.pb.h"

namespace server {

// Every completion-queue tag is a Tag; the queue's polling thread calls Proceed with the
// event's ok flag.
class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

using Batcher = batching::DynamicBatcher<handlers::InferenceTask>;

// What every EvaluateModel call needs; owned by the server and outlives all calls.
struct EvaluateContext {
  ModelService::AsyncService* service = nullptr;
  Batcher* batcher = nullptr;
  const handlers::ModelSignature* signature = nullptr;
  int64_t max_rows_per_request = 0;
  metrics::ServerMetrics* metrics = nullptr;
};

// One EvaluateModel call. It decodes its request on the completion-queue thread that received
// it, queues it for the batcher, and is finished by the batch thread that ran it (or at once,
// on a bad request or a full queue). It deletes itself once gRPC is done with it.
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
  // Counts the call's outcome; called once, just before its Finish is armed.
  void RecordOutcome(grpc::StatusCode code);
  // Drops one of the two tags (finish, done) still owed; the last one deletes the call.
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
  std::atomic<int> tags_owed_{2};
};

// A unary call answered at once on the completion-queue thread (health checks), parameterised
// by how to request the method and how to answer it.
template <typename Request, typename Response>
class UnaryCall final : public Tag {
 public:
  using Responder = grpc::ServerAsyncResponseWriter<Response>;
  using RequestMethod = std::function<void(grpc::ServerContext*, Request*, Responder*,
                                           grpc::ServerCompletionQueue*, void* tag)>;
  using Answer = std::function<grpc::Status(const Request&, Response*)>;
  struct Methods {
    RequestMethod request;
    Answer answer;
  };

  // Arms one call waiting for the next request on `cq`; `methods` outlives every call.
  static void Listen(const Methods& methods, grpc::ServerCompletionQueue* cq) {
    auto* call = new UnaryCall(methods, cq);
    methods.request(&call->server_context_, &call->request_, &call->responder_, cq, call);
  }

  void Proceed(bool ok) override {
    if (state_ == State::kFinished || !ok) {  // finished, or the server is shutting down
      delete this;
      return;
    }
    Listen(methods_, cq_);
    Response response;
    const grpc::Status status = methods_.answer(request_, &response);
    state_ = State::kFinished;
    responder_.Finish(response, status, this);
  }

 private:
  enum class State { kWaitingForRequest, kFinished };

  UnaryCall(const Methods& methods, grpc::ServerCompletionQueue* cq)
      : methods_(methods), cq_(cq), responder_(&server_context_) {}

  const Methods& methods_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext server_context_;
  Request request_;
  Responder responder_;
  State state_ = State::kWaitingForRequest;
};

}  // namespace server
