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

// A request decoded for one model version, which the call holds until the request is queued.
struct Routed {
  handlers::InferenceRequest request;
  std::shared_ptr<ServedModel> model;
  // Where it waits: its priority (0: the model's default level) and its own queue timeout (0:
  // none), as batching::BatchTask takes them. The seed's calls ask for neither.
  uint64_t priority = 0;
  std::chrono::microseconds timeout{0};
  // What a response cache key holds of the request's parameters beyond its inputs
  // (protocol::oip::DecodedInfer::cache_parameters).
  std::string cache_parameters;
};

// The life of a unary call whose request is computed in a batch, whatever its wire protocol:
// decode → enqueue → keep its rows of the outputs → reply. When the request arrives on a
// completion-queue thread, a codec-pool thread decodes it and queues it for its model's
// batcher; the batch thread that runs it copies out the call's rows of the outputs, and a
// codec-pool thread encodes the reply and finishes the call (without a pool, the
// completion-queue thread decodes and the batch thread encodes). A request whose answer is in the
// model's response cache is answered by the thread that decoded it. A bad request, a full
// queue or a draining server is answered at once. The call deletes itself once gRPC is done with
// it.
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
  // Decodes the request (on the thread that decodes) and picks the model that computes it;
  // errors are answered as they are.
  virtual absl::StatusOr<Routed> Decode() = 0;
  // Copies this call's rows of the outputs (see Complete); batch thread.
  virtual void KeepOutputs(const std::vector<handlers::OutputTensor>& outputs, int64_t batch_row,
                           int64_t task_row, int64_t rows) = 0;
  // Encodes the kept outputs into the reply, which ran on `model_version`; codec thread (or the
  // batch thread).
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
  enum class State { kWaitingForRequest, kDecoding, kQueued, kReplying, kFinished };

  // Fires when the call ends for any reason, client cancellation included.
  class DoneTag final : public Tag {
   public:
    explicit DoneTag(BatchedCall* call) : call_(call) {}
    void Proceed(bool ok) override;

   private:
    BatchedCall* const call_;
  };

  // Decodes the request and answers it from the response cache, or queues it for its model's
  // batcher, or fails the call.
  void DecodeAndEnqueue();
  // Answers the call from `cached`, its outputs in the response cache, without queueing it.
  void ReplyFromCache(const Routed& routed, const std::string& cached,
                      std::chrono::nanoseconds lookup);
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
  State state_ = State::kWaitingForRequest;
  int64_t model_version_ = 0;  // set by ReplyAll before the reply
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
