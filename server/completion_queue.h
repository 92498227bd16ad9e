#pragma once

#include <grpcpp/grpcpp.h>

namespace model_server::server {

// Calls armed per completion queue and method, so that bursts of arrivals need not wait for a
// replacement call to be armed.
inline constexpr int kCallsArmedPerQueue = 16;

// Every completion-queue tag is a Tag; the queue's polling thread calls Proceed with the
// event's ok flag.
class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

// Runs each event of `cq` on the calling thread (Proceed on its Tag) until the queue has been
// shut down and drained.
void PollCompletionQueue(grpc::CompletionQueue* cq);

// As PollCompletionQueue, and notes each time the thread waits for an event because none is
// ready (see TakeIdle): a first look for what is ready, then a blocking wait when nothing is.
// Costs one non-blocking poll each time the queue runs empty.
void PollCompletionQueueNotingIdle(grpc::CompletionQueue* cq);

// For a call that has just arrived, within a Proceed called by PollCompletionQueueNotingIdle:
// whether this thread has waited for events since the last call that took this note — false
// when it has gone from one arrival to the next without waiting, so that more calls may be
// queued behind this one. Takes the note (the next arrival gets false unless the thread waits
// in between). Other events (a call's finish, its done tag) neither take nor set it. False on
// any other thread.
bool TakeIdle();

}  // namespace model_server::server
