#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/inference_task.h"
#include "handlers/model_handler.h"
#include "handlers/model_types.h"
#include "server/completion_queue.h"
#include "server/drain_gate.h"
#include "server/metrics/metrics.h"
#include "server/tsan_annotations.h"
#include "server/work_pool.h"

namespace model_server::server {

class ServedModel;

// What every batched call needs; owned by the server and outlives all calls.
struct CallContext {
  metrics::ServerMetrics* metrics = nullptr;
  // Where calls decode their requests; null: on the completion-queue thread that received them.
  // (Replies go where their model sends them: ServedModel.)
  WorkPool* decode_pool = nullptr;
  // Admits calls until the server drains; every call that arrives is counted in it.
  DrainGate* drain = nullptr;
};

// A request decoded for one model version: the request, where it waits (its priority, 0: the
// model's default level, and its own queue timeout, 0: none, as batching::BatchTask takes them;
// the seed's calls ask for neither) and what a response cache key holds of its parameters beyond
// its inputs (protocol::oip::DecodedInfer::cache_parameters).
struct DecodedCall {
  handlers::InferenceRequest request;
  uint64_t priority = 0;
  std::chrono::microseconds timeout{0};
  std::string cache_parameters;
};

// The life of a unary call whose request is computed in a batch, whatever its wire protocol:
// route → decode → enqueue → keep its rows of the outputs → reply. When the request arrives on a
// completion-queue thread, a codec-pool thread decodes it and queues it for its model's
// batcher; the batch thread that runs it copies out the call's rows of the outputs, and a
// codec-pool thread encodes the reply and finishes the call (without a pool, the
// completion-queue thread decodes and the batch thread encodes). A request whose answer is in the
// model's response cache is answered by the thread that decoded it, with no queueing or forward.
//
// Run to completion when idle: a call that arrives while no other call is in flight, on a
// completion-queue thread that had nothing else to do, whose model version is idle (see
// ServedModel::ClaimIdle), is decoded, computed, encoded and finished right there, with no
// hand-off; the moment calls overlap they take the path above. A bad request, a full queue or a
// draining server is answered at once. The call deletes itself once gRPC is done with it.
//
// A protocol derives from BatchedCallOf<Request, Reply> below and supplies the hooks.
class BatchedCall : public Tag, public WorkPool::Item {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // Replies to every call of a batch that ran on `model_version` (the others have been failed
  // already): on the codec pool, all submitted at once, else here. Batch thread, after
  // BatchExecutor::Execute.
  static void ReplyAll(const std::vector<std::unique_ptr<handlers::InferenceTask>>& batch,
                       int64_t model_version, WorkPool* codec_pool);

  void Proceed(bool ok) final;
  // Codec pool: decodes the request, or encodes the reply, as the call's state says.
  void Run() final;

  // Called by the batch thread, through the call's task (see InferenceTask::Complete): keeps
  // this call's rows [task_row, task_row + rows), rows [batch_row, ...) of the batch's `outputs`
  // (valid only during the call), for its reply; `last` once it has all its rows.
  void Complete(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                int64_t task_row, int64_t rows, bool last);
  void Fail(const absl::Status& status);

  // DEADLINE_EXCEEDED or CANCELLED once the call is no longer worth computing. Any thread.
  absl::Status Liveness(TimePoint now) const;
  // When the request arrived.
  TimePoint arrived() const { return arrived_; }

 protected:
  BatchedCall(const CallContext& context, grpc::ServerCompletionQueue* cq, metrics::Method method);
  ~BatchedCall() override = default;

  // Asks gRPC for this call's request (once, from Start).
  virtual void RequestCall() = 0;
  // Arms a new call of the same kind on the same queue, to take the next request.
  virtual void ListenAgain() = 0;
  // The model version that computes the request (found in the registry); errors are answered
  // as they are.
  virtual absl::StatusOr<std::shared_ptr<ServedModel>> Route() = 0;
  // Decodes the request for `model` (on the thread that decodes); errors are answered as they are.
  virtual absl::StatusOr<DecodedCall> Decode(const ServedModel& model) = 0;
  // Copies this call's rows of the outputs (see Complete); batch thread.
  virtual void KeepOutputs(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                           int64_t task_row, int64_t rows) = 0;
  // Encodes the kept outputs into the reply, which ran on `model_version`; codec thread (or the
  // batch thread, or the completion-queue thread for a call run to completion there).
  virtual void EncodeReply(int64_t model_version) = 0;
  // responder.Finish(reply, OK, tag) and responder.FinishWithError(status, tag), possibly off
  // the polling thread: each tells TSan first (TagHandedOff), after this virtual call has read
  // the call's vptr, which the polling thread's delete rewrites.
  virtual void SendReply(Tag* tag) = 0;
  virtual void SendError(const grpc::Status& status, Tag* tag) = 0;

  // Arms the done tag and requests the call; once, right after construction.
  void Start();

  const CallContext& context_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext server_context_;

 private:
  // Where the call is; each step below moves it on (SetState checks the move in debug and
  // sanitizer builds). Written by the completion-queue thread (arrival, and every step of a call
  // run there), a codec thread (decoding, replying) and a batch thread (outputs kept).
  enum class State : uint8_t {
    kWaitingForRequest,  // armed; no request yet
    kDecoding,           // handed to the codec pool to decode
    kQueued,             // its task is queued, or running in a batch or on its own
    kReplying,           // all its outputs are kept (or read from the response cache); the
                         // reply is to be encoded
    kFinished,           // Finish or FinishWithError is armed; the finish tag ends it
  };

  // Fires when the call ends for any reason, client cancellation included.
  class DoneTag final : public Tag {
   public:
    explicit DoneTag(BatchedCall* call) : call_(call) {}
    void Proceed(bool ok) override;

   private:
    BatchedCall* const call_;
  };

  // Moves the call to `to`; in debug and sanitizer builds, aborts on a move the life above does
  // not allow (a call finished twice, a reply before its outputs, ...).
  void SetState(State to);
  // Debug and sanitizer builds: aborts unless the call is in `expected`.
  void ExpectState(State expected) const;
  // Tries to run the call to completion on this (completion-queue) thread: returns false, with
  // nothing done but the route kept in model_, when the model version is not idle; true once
  // the call has been answered (from the response cache too) or queued.
  bool RunIdle();
  // Routes (unless RunIdle did), decodes the request and answers it from the response cache, or
  // queues it for its model's batcher, or fails the call.
  void DecodeAndEnqueue();
  // Looks `decoded` up in model_'s response cache. A hit answers the call (and lets model_ go):
  // true. Otherwise false, with the key its answer goes under in `key` (empty: not cached) and
  // what the lookup took in `lookup`.
  bool AnsweredFromCache(const DecodedCall& decoded, std::string& key,
                         std::chrono::nanoseconds& lookup);
  // Queues `task` for model_'s batcher (or fails the call), then lets model_ go.
  void Enqueue(std::unique_ptr<handlers::InferenceTask> task);
  // Encodes the kept outputs and finishes the call with them.
  void Reply();
  // Counts the call's outcome, once: whichever of the finishing thread (just before Finish) and
  // the done tag (the client cancelled, or its deadline passed) comes first.
  void RecordOutcome(grpc::StatusCode code);
  // Drops one of the two tags (finish, done) still owed; the last one tells the drain gate and
  // deletes the call.
  void Release();

  const metrics::Method method_;
  DoneTag done_tag_{this};
  std::atomic<State> state_{State::kWaitingForRequest};
  // The model version the request goes to, from Route until the request is queued or has run.
  std::shared_ptr<ServedModel> model_;
  int64_t model_version_ = 0;  // set before the reply
  TimePoint arrived_;
  std::optional<TimePoint> deadline_;  // set on arrival; nullopt when the client set none
  bool admitted_ = false;              // by the drain gate, on arrival
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> outcome_recorded_{false};
  std::atomic<int> tags_owed_{2};
};

// A BatchedCall with its request, reply and responder for one RPC's message types.
template <typename RequestMessage, typename ReplyMessage>
class BatchedCallOf : public BatchedCall {
 protected:
  BatchedCallOf(const CallContext& context, grpc::ServerCompletionQueue* cq, metrics::Method method)
      : BatchedCall(context, cq, method), responder_(&server_context_) {}

  void SendReply(Tag* tag) final {
    TagHandedOff(tag);
    responder_.Finish(reply_, grpc::Status::OK, tag);
  }
  void SendError(const grpc::Status& status, Tag* tag) final {
    TagHandedOff(tag);
    responder_.FinishWithError(status, tag);
  }

  RequestMessage request_;
  ReplyMessage reply_;
  grpc::ServerAsyncResponseWriter<ReplyMessage> responder_;
};

}  // namespace model_server::server
