#include "server/batched_call.h"

#include <string>

#include "server/cached_response.h"
#include "server/grpc_status.h"
#include "server/served_model.h"

namespace model_server::server {
namespace {

// The batcher's view of a call: the decoded request plus the way back to the client, and, for a
// model whose answers are cached, the key its answer goes under.
class CallTask final : public handlers::InferenceTask {
 public:
  // `cache_key` empty: the answer is not cached; else it goes into the model's cache, and
  // `lookup` is what looking it up took.
  CallTask(Routed& routed, BatchedCall* call, std::string cache_key,
           std::chrono::nanoseconds lookup)
      : InferenceTask(std::move(routed.request)),
        call_(call),
        metrics_(routed.model->metrics()),
        statistics_(routed.model->statistics()),
        enqueued_(std::chrono::steady_clock::now()),
        priority_(routed.priority),
        timeout_(routed.timeout),
        batches_(routed.model->signature().batches()),
        cache_(cache_key.empty() ? nullptr : routed.model->cache()),
        cache_owner_(routed.model->cache_owner()),
        cache_key_(std::move(cache_key)),
        lookup_(lookup) {}

  uint64_t priority() const override { return priority_; }
  std::chrono::microseconds timeout() const override { return timeout_; }

  absl::Status Dequeue(batching::TimePoint now) override {
    metrics_.RecordQueueTime(std::chrono::duration<double>(now - enqueued_).count());
    statistics_.RecordQueue(now - enqueued_);
    return call_->Liveness(now);
  }
  void Complete(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                int64_t task_row, int64_t rows) override {
    completed_ = task_row + rows == request().rows;
    if (cache_ != nullptr) {
      cached_.Add(outputs, batches_, request().rows, batch_row, task_row, rows);
      if (completed_) Cache();
    }
    call_->Complete(outputs, batch_row, task_row, rows, completed_);
    if (completed_) {
      statistics_.RecordSuccess(std::chrono::steady_clock::now() - call_->arrived(),
                                request().rows);
    }
  }
  void Fail(absl::Status status) override {
    completed_ = false;
    statistics_.RecordFailure(std::chrono::steady_clock::now() - call_->arrived());
    call_->Fail(status);
  }

  // The call, once the task has completed; null when it failed instead.
  BatchedCall* completed_call() const { return completed_ ? call_ : nullptr; }

 private:
  // Stores the answer in the cache; a cache miss in the statistics, charged the lookup and the
  // insertion (as Triton charges it).
  void Cache() {
    const auto start = std::chrono::steady_clock::now();
    cache_->Insert(std::move(cache_key_), std::make_shared<const std::string>(cached_.Finish()),
                   cache_owner_);
    statistics_.RecordCacheMiss(lookup_ + (std::chrono::steady_clock::now() - start));
    metrics_.RecordCacheMiss();
  }

  BatchedCall* const call_;  // alive until it is finished through this task
  // The model version's: it outlives its queued and running tasks.
  metrics::ModelMetrics& metrics_;
  InferenceStatistics& statistics_;
  const batching::TimePoint enqueued_;
  const uint64_t priority_;
  const std::chrono::microseconds timeout_;
  const bool batches_;
  batching::ResponseCache* const cache_;  // null: not cached
  const uint64_t cache_owner_;
  std::string cache_key_;
  const std::chrono::nanoseconds lookup_;
  CachedResponseWriter cached_;  // the answer being kept for the cache
  bool completed_ = false;
};

// The client's deadline on the steady clock, or nullopt when it set none.
std::optional<BatchedCall::TimePoint> SteadyDeadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto remaining = deadline - std::chrono::system_clock::now();
  if (remaining > std::chrono::hours(24 * 365)) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

}  // namespace

BatchedCall::BatchedCall(const CallContext& context, grpc::ServerCompletionQueue* cq,
                         metrics::Method method)
    : context_(context), cq_(cq), method_(method) {}

void BatchedCall::Start() {
  server_context_.AsyncNotifyWhenDone(&done_tag_);
  RequestCall();
}

void BatchedCall::Proceed(bool ok) {
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
  ListenAgain();
  arrived_ = std::chrono::steady_clock::now();
  context_.metrics->AddInFlight(1);
  admitted_ = context_.drain->Arrive();
  if (!admitted_) {
    // Draining: refused before any work, with a hint for gRPC retry policies to wait.
    server_context_.AddTrailingMetadata("grpc-retry-pushback-ms",
                                        std::to_string(kRetryPushback.count()));
    Fail(absl::UnavailableError("server is shutting down"));
    return;
  }
  deadline_ = SteadyDeadline(server_context_);
  if (context_.decode_pool == nullptr) {
    DecodeAndEnqueue();
    return;
  }
  state_ = State::kDecoding;
  context_.decode_pool->Submit(this);
}

void BatchedCall::Run() {
  if (state_ == State::kDecoding) {
    DecodeAndEnqueue();
  } else {
    Reply();
  }
}

void BatchedCall::DecodeAndEnqueue() {
  absl::StatusOr<Routed> routed = Decode();
  if (!routed.ok()) {
    Fail(routed.status());
    return;
  }
  ServedModel& model = *routed->model;
  std::string cache_key;
  std::chrono::nanoseconds lookup{0};
  if (batching::ResponseCache* cache = model.cache()) {
    const auto start = std::chrono::steady_clock::now();
    cache_key = ResponseCacheKey(model.name(), model.version(), model.cache_owner(),
                                 model.signature(), routed->request, routed->cache_parameters);
    std::shared_ptr<const std::string> cached = cache->Lookup(cache_key);
    lookup = std::chrono::steady_clock::now() - start;
    if (cached != nullptr) {
      ReplyFromCache(*routed, *cached, lookup);
      return;
    }
  }
  std::unique_ptr<handlers::InferenceTask> task =
      std::make_unique<CallTask>(*routed, this, std::move(cache_key), lookup);
  state_ = State::kQueued;
  if (absl::Status queued = model.Enqueue(task); !queued.ok()) Fail(queued);
  // `routed` lets go of the model version here: a version removed meanwhile is released once
  // its queue, this request included, has run.
}

void BatchedCall::ReplyFromCache(const Routed& routed, const std::string& cached,
                                 std::chrono::nanoseconds lookup) {
  absl::StatusOr<std::vector<handlers::OutputTensor>> outputs = ReadCachedResponse(cached);
  if (!outputs.ok()) {
    Fail(outputs.status());
    return;
  }
  ServedModel& model = *routed.model;
  KeepOutputs(*outputs, 0, 0, routed.request.rows);
  model_version_ = model.version();
  model.statistics().RecordCacheHit(std::chrono::steady_clock::now() - arrived_, lookup);
  model.metrics().RecordCacheHit();
  state_ = State::kReplying;
  Reply();
}

void BatchedCall::Complete(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                           int64_t task_row, int64_t rows, bool last) {
  KeepOutputs(outputs, batch_row, task_row, rows);
  if (last) state_ = State::kReplying;
}

void BatchedCall::ReplyAll(const std::vector<std::unique_ptr<handlers::InferenceTask>>& batch,
                           int64_t model_version, WorkPool* codec_pool) {
  std::vector<WorkPool::Item*> replies;
  replies.reserve(batch.size());
  for (const auto& task : batch) {
    BatchedCall* call = static_cast<const CallTask&>(*task).completed_call();
    if (call == nullptr) continue;
    call->model_version_ = model_version;
    if (codec_pool == nullptr) {
      call->Reply();
    } else {
      replies.push_back(call);
    }
  }
  if (codec_pool != nullptr) codec_pool->Submit(replies);
}

void BatchedCall::Reply() {
  EncodeReply(model_version_);
  RecordOutcome(grpc::StatusCode::OK);
  state_ = State::kFinished;
  SendReply(this);  // armed off the polling thread; Proceed runs on a polling thread
}

void BatchedCall::Fail(const absl::Status& status) {
  const grpc::Status grpc_status = ToGrpcStatus(status);
  RecordOutcome(grpc_status.error_code());
  state_ = State::kFinished;
  SendError(grpc_status, this);  // may be armed off the polling thread
}

void BatchedCall::RecordOutcome(grpc::StatusCode code) {
  if (outcome_recorded_.exchange(true, std::memory_order_acq_rel)) return;
  const double latency =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - arrived_).count();
  context_.metrics->RecordRequest(method_, code, latency);
  context_.metrics->AddInFlight(-1);
}

absl::Status BatchedCall::Liveness(TimePoint now) const {
  if (deadline_ && now >= *deadline_) {
    return absl::DeadlineExceededError("deadline passed while the request was queued");
  }
  if (cancelled_.load(std::memory_order_acquire)) {
    return absl::CancelledError("client cancelled the request while it was queued");
  }
  return absl::OkStatus();
}

void BatchedCall::DoneTag::Proceed(bool /*ok*/) {
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

void BatchedCall::Release() {
  if (tags_owed_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    context_.drain->Done(admitted_);
    delete this;
  }
}

}  // namespace model_server::server
