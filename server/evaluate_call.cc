#include "server/evaluate_call.h"

#include <string>

#include "protocol/seed_json.h"
#include "server/grpc_status.h"
#include "server/tsan_annotations.h"

namespace model_server::server {
namespace {

// The batcher's view of a call: the decoded request plus the way back to the client.
class CallTask final : public handlers::InferenceTask {
 public:
  CallTask(handlers::InferenceRequest request, EvaluateCall* call, metrics::ServerMetrics& metrics)
      : InferenceTask(std::move(request)),
        call_(call),
        metrics_(metrics),
        enqueued_(std::chrono::steady_clock::now()) {}

  absl::Status Dequeue(batching::TimePoint now) override {
    metrics_.RecordQueueTime(std::chrono::duration<double>(now - enqueued_).count());
    return call_->Liveness(now);
  }
  void Complete(const float* outputs, int64_t stride) override {
    call_->Reply(request(), outputs, stride);
  }
  void Fail(absl::Status status) override { call_->Fail(status); }

 private:
  EvaluateCall* const call_;  // alive until it is finished through this task
  metrics::ServerMetrics& metrics_;
  const batching::TimePoint enqueued_;
};

// The client's deadline on the steady clock, or nullopt when it set none.
std::optional<EvaluateCall::TimePoint> SteadyDeadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto remaining = deadline - std::chrono::system_clock::now();
  if (remaining > std::chrono::hours(24 * 365)) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

}  // namespace

void EvaluateCall::Listen(const EvaluateContext& context, grpc::ServerCompletionQueue* cq) {
  (new EvaluateCall(context, cq))->Start();
}

EvaluateCall::EvaluateCall(const EvaluateContext& context, grpc::ServerCompletionQueue* cq)
    : context_(context), cq_(cq), responder_(&server_context_) {}

void EvaluateCall::Start() {
  server_context_.AsyncNotifyWhenDone(&done_tag_);
  context_.service->RequestEvaluateModel(&server_context_, &request_, &responder_, cq_, cq_, this);
}

void EvaluateCall::Proceed(bool ok) {
  if (state_ == State::kFinished) {
    Release();
    return;
  }
  // state_ == kWaitingForRequest: a request arrived, or (ok == false) the server shut down
  // before one did, in which case gRPC owes no done tag either.
  if (!ok) {
    delete this;
    return;
  }
  Listen(context_, cq_);
  arrived_ = std::chrono::steady_clock::now();
  context_.metrics->AddInFlight(1);
  if (!context_.drain->Arrive()) {
    // Draining: refused before any work, with a hint for gRPC retry policies to wait.
    server_context_.AddTrailingMetadata("grpc-retry-pushback-ms",
                                        std::to_string(kRetryPushback.count()));
    Fail(absl::UnavailableError("server is shutting down"));
    return;
  }
  deadline_ = SteadyDeadline(server_context_);
  absl::StatusOr<handlers::InferenceRequest> decoded = protocol::DecodeRequest(
      request_.inp_dict_bytes(), *context_.signature, context_.max_rows_per_request);
  if (!decoded.ok()) {
    Fail(decoded.status());
    return;
  }
  std::unique_ptr<handlers::InferenceTask> task =
      std::make_unique<CallTask>(*std::move(decoded), this, *context_.metrics);
  state_ = State::kQueued;
  if (absl::Status queued = context_.batcher->Enqueue(task); !queued.ok()) Fail(queued);
}

void EvaluateCall::Reply(const handlers::InferenceRequest& request, const float* outputs,
                         int64_t stride) {
  protocol::EncodeResponse(request.output_names, outputs, request.rows, stride,
                           reply_.mutable_response_bytes());
  RecordOutcome(grpc::StatusCode::OK);
  state_ = State::kFinished;
  TagHandedOff(this);  // armed on the batch thread; Proceed runs on a polling thread
  responder_.Finish(reply_, grpc::Status::OK, this);
}

void EvaluateCall::Fail(const absl::Status& status) {
  const grpc::Status grpc_status = ToGrpcStatus(status);
  RecordOutcome(grpc_status.error_code());
  state_ = State::kFinished;
  TagHandedOff(this);  // armed on the batch thread; Proceed runs on a polling thread
  responder_.FinishWithError(grpc_status, this);
}

void EvaluateCall::RecordOutcome(grpc::StatusCode code) {
  if (outcome_recorded_.exchange(true, std::memory_order_acq_rel)) return;
  const double latency =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived_).count();
  context_.metrics->RecordRequest(metrics::Method::kEvaluateModel, code, latency);
  context_.metrics->AddInFlight(-1);
}

absl::Status EvaluateCall::Liveness(TimePoint now) const {
  if (deadline_ && now >= *deadline_) {
    return absl::DeadlineExceededError("deadline passed while the request was queued");
  }
  if (cancelled_.load(std::memory_order_acquire)) {
    return absl::CancelledError("client cancelled the request while it was queued");
  }
  return absl::OkStatus();
}

void EvaluateCall::DoneTag::Proceed(bool /*ok*/) {
  if (call_->server_context_.IsCancelled()) {
    call_->cancelled_.store(true, std::memory_order_release);
    // The RPC is over for the client now, even if its task is still queued or running. gRPC's
    // own deadline, read now on the same clock, tells whether that is why.
    const bool expired = call_->server_context_.deadline() <= std::chrono::system_clock::now();
    call_->RecordOutcome(expired ? grpc::StatusCode::DEADLINE_EXCEEDED
                                 : grpc::StatusCode::CANCELLED);
  }
  call_->Release();
}

void EvaluateCall::Release() {
  if (tags_owed_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    context_.drain->Done();
    delete this;
  }
}

}  // namespace model_server::server
