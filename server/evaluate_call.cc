#include "server/evaluate_call.h"

#include <algorithm>
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
    call_->KeepOutputs(outputs, request().rows, stride);
    completed_ = true;
  }
  void Fail(absl::Status status) override { call_->Fail(status); }

  // The call, once the task has completed; null when it failed instead.
  EvaluateCall* completed_call() const { return completed_ ? call_ : nullptr; }

 private:
  EvaluateCall* const call_;  // alive until it is finished through this task
  metrics::ServerMetrics& metrics_;
  const batching::TimePoint enqueued_;
  bool completed_ = false;
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
  if (context_.codec_pool == nullptr) {
    Decode();
    return;
  }
  state_ = State::kDecoding;
  context_.codec_pool->Submit(this);
}

void EvaluateCall::Run() {
  if (state_ == State::kDecoding) {
    Decode();
  } else {
    Reply();
  }
}

void EvaluateCall::Decode() {
  absl::StatusOr<handlers::InferenceRequest> decoded = protocol::DecodeRequest(
      request_.inp_dict_bytes(), *context_.signature, context_.max_rows_per_request);
  if (!decoded.ok()) {
    Fail(decoded.status());
    return;
  }
  output_names_ = std::move(decoded->output_names);
  std::unique_ptr<handlers::InferenceTask> task =
      std::make_unique<CallTask>(*std::move(decoded), this, *context_.metrics);
  state_ = State::kQueued;
  if (absl::Status queued = context_.batcher->Enqueue(task); !queued.ok()) Fail(queued);
}

void EvaluateCall::KeepOutputs(const float* outputs, int64_t rows, int64_t stride) {
  const size_t columns = output_names_.size();
  rows_ = rows;
  outputs_.resize(rows * columns);
  float* to = outputs_.data();
  if (static_cast<int64_t>(columns) == stride) {
    std::copy_n(outputs, rows * stride, to);
  } else {
    for (int64_t row = 0; row < rows; ++row, outputs += stride) {
      for (size_t column = 0; column < columns; ++column) *to++ = outputs[column];
    }
  }
  state_ = State::kReplying;
}

void EvaluateCall::ReplyAll(const std::vector<std::unique_ptr<handlers::InferenceTask>>& batch,
                            WorkPool* codec_pool) {
  std::vector<WorkPool::Item*> replies;
  replies.reserve(batch.size());
  for (const auto& task : batch) {
    EvaluateCall* call = static_cast<const CallTask&>(*task).completed_call();
    if (call == nullptr) continue;
    if (codec_pool == nullptr) {
      call->Reply();
    } else {
      replies.push_back(call);
    }
  }
  if (codec_pool != nullptr) codec_pool->Submit(replies);
}

void EvaluateCall::Reply() {
  protocol::EncodeResponse(output_names_, outputs_.data(), rows_,
                           static_cast<int64_t>(output_names_.size()),
                           reply_.mutable_response_bytes());
  RecordOutcome(grpc::StatusCode::OK);
  state_ = State::kFinished;
  TagHandedOff(this);  // armed off the polling thread; Proceed runs on a polling thread
  responder_.Finish(reply_, grpc::Status::OK, this);
}

void EvaluateCall::Fail(const absl::Status& status) {
  const grpc::Status grpc_status = ToGrpcStatus(status);
  RecordOutcome(grpc_status.error_code());
  state_ = State::kFinished;
  TagHandedOff(this);  // may be armed off the polling thread; Proceed runs on a polling thread
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
