#include "server/batched_call.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/cached_response.h"
#include "server/grpc_status.h"
#include "server/served_model.h"

// BatchedCall checks each move of its state in debug builds and in the sanitizer builds
// (scripts/sanitize.sh builds Release with -fsanitize=...), where the threads that move it are
// watched anyway.
#if !defined(NDEBUG) || defined(MODEL_SERVER_TSAN) || defined(__SANITIZE_ADDRESS__)
#define MODEL_SERVER_CHECK_CALL_STATES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define MODEL_SERVER_CHECK_CALL_STATES 1
#endif
#endif

namespace model_server::server {
namespace {

// Whether the last call that arrived on this (completion-queue) thread found no other call in
// flight.
thread_local bool last_arrival_alone = false;

// The batcher's view of a call: the decoded request plus the way back to the client, and, for a
// model whose answers are cached, the key its answer goes under.
class CallTask final : public handlers::InferenceTask {
 public:
  // `cache_key` empty: the answer is not cached; else it goes into the model's cache, and
  // `lookup` is what looking it up took.
  CallTask(DecodedCall& decoded, BatchedCall* call, ServedModel& model, std::string cache_key,
           std::chrono::nanoseconds lookup)
      : InferenceTask(std::move(decoded.request)),
        call_(call),
        metrics_(model.metrics()),
        statistics_(model.statistics()),
        enqueued_(std::chrono::steady_clock::now()),
        priority_(decoded.priority),
        timeout_(decoded.timeout),
        batches_(model.signature().batches()),
        cache_(cache_key.empty() ? nullptr : model.cache()),
        cache_owner_(model.cache_owner()),
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
  if (state_.load(std::memory_order_relaxed) == State::kFinished) {
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
  const bool alone = context_.metrics->AddInFlight(1) == 1;
  admitted_ = context_.drain->Arrive();
  if (!admitted_) {
    // Draining: refused before any work, with a hint for gRPC retry policies to wait.
    server_context_.AddTrailingMetadata("grpc-retry-pushback-ms",
                                        std::to_string(kRetryPushback.count()));
    Fail(absl::UnavailableError("server is shutting down"));
    return;
  }
  deadline_ = SteadyDeadline(server_context_);
  // Run to completion here only when nothing else is going on: no other call in flight, this
  // thread has waited for work since the last call arrived (else calls may be queued behind this
  // one, and would wait for all of it), and that call was alone too. The last keeps a closed
  // loop of several clients batching: their calls come in waves, whose first call finds the
  // server idle while the others are on their way.
  const bool waited = TakeIdle();
  const bool idle = waited && alone && last_arrival_alone;
  last_arrival_alone = alone;
  if (idle && RunIdle()) return;
  if (context_.decode_pool == nullptr) {
    DecodeAndEnqueue();
    return;
  }
  SetState(State::kDecoding);
  context_.decode_pool->Submit(this);
}

void BatchedCall::Run() {
  if (state_.load(std::memory_order_relaxed) == State::kDecoding) {
    DecodeAndEnqueue();
  } else {
    Reply();
  }
}

bool BatchedCall::RunIdle() {
  absl::StatusOr<std::shared_ptr<ServedModel>> model = Route();
  if (!model.ok()) {
    Fail(model.status());
    return true;
  }
  model_ = *std::move(model);
  if (!model_->MayRunIdle()) return false;
  absl::StatusOr<DecodedCall> request = Decode(*model_);
  if (!request.ok()) {
    model_.reset();
    Fail(request.status());
    return true;
  }
  // A cached answer needs no instance.
  std::string cache_key;
  std::chrono::nanoseconds lookup{0};
  if (AnsweredFromCache(*request, cache_key, lookup)) return true;
  const uint64_t priority = request->priority;
  std::unique_ptr<handlers::InferenceTask> task =
      std::make_unique<CallTask>(*request, this, *model_, std::move(cache_key), lookup);
  // Whatever its priority, a request that finds nothing queued waits behind nothing: it may run
  // here (its queue timeout never starts). Its answer is cached as a batch's is (CallTask).
  ServedModel::IdleClaim claim = model_->ClaimIdle(task->request().rows, priority);
  if (!claim) {
    // The version got busy, this request is larger than runs quickly, or its priority is one
    // the queue refuses: to the batcher, from here (it is decoded already).
    Enqueue(std::move(task));
    return true;
  }
  SetState(State::kQueued);
  model_->RunIdle(std::move(claim), task);
  BatchedCall* completed = static_cast<const CallTask&>(*task).completed_call();
  task.reset();
  model_version_ = model_->version();
  model_.reset();  // the version is not held while the reply is written
  // A failed task has answered the call already (its finish tag comes to this thread, after
  // this returns).
  if (completed != nullptr) Reply();
  return true;
}

void BatchedCall::DecodeAndEnqueue() {
  if (model_ == nullptr) {
    absl::StatusOr<std::shared_ptr<ServedModel>> model = Route();
    if (!model.ok()) {
      Fail(model.status());
      return;
    }
    model_ = *std::move(model);
  }
  absl::StatusOr<DecodedCall> request = Decode(*model_);
  if (!request.ok()) {
    model_.reset();
    Fail(request.status());
    return;
  }
  std::string cache_key;
  std::chrono::nanoseconds lookup{0};
  if (AnsweredFromCache(*request, cache_key, lookup)) return;
  Enqueue(std::make_unique<CallTask>(*request, this, *model_, std::move(cache_key), lookup));
}

void BatchedCall::Enqueue(std::unique_ptr<handlers::InferenceTask> task) {
  // Lets go of the model version before the call can be answered: a version removed meanwhile
  // is released once its queue, this request included, has run.
  const std::shared_ptr<ServedModel> model = std::move(model_);
  SetState(State::kQueued);
  if (absl::Status queued = model->Enqueue(task); !queued.ok()) Fail(queued);
}

bool BatchedCall::AnsweredFromCache(const DecodedCall& decoded, std::string& key,
                                    std::chrono::nanoseconds& lookup) {
  batching::ResponseCache* cache = model_->cache();
  if (cache == nullptr) return false;
  const auto start = std::chrono::steady_clock::now();
  key = ResponseCacheKey(model_->name(), model_->version(), model_->cache_owner(),
                         model_->signature(), decoded.request, decoded.cache_parameters);
  std::shared_ptr<const std::string> cached = cache->Lookup(key);
  lookup = std::chrono::steady_clock::now() - start;
  if (cached == nullptr) return false;
  absl::StatusOr<std::vector<handlers::OutputTensor>> outputs = ReadCachedResponse(*cached);
  if (!outputs.ok()) {
    model_.reset();
    Fail(outputs.status());
    return true;
  }
  KeepOutputs(*outputs, 0, 0, decoded.request.rows);
  model_version_ = model_->version();
  model_->statistics().RecordCacheHit(std::chrono::steady_clock::now() - arrived_, lookup);
  model_->metrics().RecordCacheHit();
  model_.reset();  // the version is not held while the reply is written
  SetState(State::kReplying);
  Reply();
  return true;
}

void BatchedCall::Complete(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                           int64_t task_row, int64_t rows, bool last) {
  KeepOutputs(outputs, batch_row, task_row, rows);
  if (last) SetState(State::kReplying);
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
  ExpectState(State::kReplying);
  EncodeReply(model_version_);
  RecordOutcome(grpc::StatusCode::OK);
  SetState(State::kFinished);
  SendReply(this);  // may be armed off the polling thread; Proceed runs on a polling thread
}

void BatchedCall::Fail(const absl::Status& status) {
  const grpc::Status grpc_status = ToGrpcStatus(status);
  RecordOutcome(grpc_status.error_code());
  SetState(State::kFinished);
  SendError(grpc_status, this);  // may be armed off the polling thread
}

#ifdef MODEL_SERVER_CHECK_CALL_STATES
namespace {

const char* StateName(int state) {
  static constexpr const char* kNames[] = {"waiting for its request", "decoding", "queued",
                                           "replying", "finished"};
  return state >= 0 && state < 5 ? kNames[state] : "unknown";
}

[[noreturn]] void BadState(const char* what, int from, int to) {
  std::fprintf(stderr, "BatchedCall: %s: %s -> %s\n", what, StateName(from), StateName(to));
  std::abort();
}

}  // namespace

void BatchedCall::SetState(State to) {
  const State from = state_.exchange(to, std::memory_order_relaxed);
  bool allowed = false;
  switch (from) {
    case State::kWaitingForRequest:  // to kReplying: answered from the response cache
      allowed = to == State::kDecoding || to == State::kQueued || to == State::kReplying ||
                to == State::kFinished;
      break;
    case State::kDecoding:  // to kReplying: answered from the response cache
      allowed = to == State::kQueued || to == State::kReplying || to == State::kFinished;
      break;
    case State::kQueued:
      allowed = to == State::kReplying || to == State::kFinished;
      break;
    case State::kReplying:
      allowed = to == State::kFinished;
      break;
    case State::kFinished:
      break;  // the end: nothing may follow
  }
  if (!allowed)
    BadState("a move its life does not allow", static_cast<int>(from), static_cast<int>(to));
}

void BatchedCall::ExpectState(State expected) const {
  const State now = state_.load(std::memory_order_relaxed);
  if (now != expected)
    BadState("in the wrong state", static_cast<int>(now), static_cast<int>(expected));
}
#else
void BatchedCall::SetState(State to) { state_.store(to, std::memory_order_relaxed); }
void BatchedCall::ExpectState(State /*expected*/) const {}
#endif

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
