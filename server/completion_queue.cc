#include "server/completion_queue.h"

#include <utility>

#include "server/tsan_annotations.h"

namespace model_server::server {
namespace {

// Set when this thread waits for an event; cleared by the call that takes it (TakeIdle).
thread_local bool waited = false;

}  // namespace

void PollCompletionQueue(grpc::CompletionQueue* cq) {
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
    TagReceived(tag);
    static_cast<Tag*>(tag)->Proceed(ok);
  }
}

void PollCompletionQueueNotingIdle(grpc::CompletionQueue* cq) {
  void* tag;
  bool ok;
  // A deadline in the past: AsyncNext returns an event that is ready, or TIMEOUT at once.
  const gpr_timespec now = gpr_time_0(GPR_CLOCK_MONOTONIC);
  while (true) {
    const grpc::CompletionQueue::NextStatus status = cq->AsyncNext(&tag, &ok, now);
    if (status == grpc::CompletionQueue::SHUTDOWN) return;
    if (status == grpc::CompletionQueue::TIMEOUT) {
      // Nothing ready: this thread waits for the next event.
      if (!cq->Next(&tag, &ok)) return;
      waited = true;
    }
    TagReceived(tag);
    static_cast<Tag*>(tag)->Proceed(ok);
  }
}

bool TakeIdle() { return std::exchange(waited, false); }

}  // namespace model_server::server
