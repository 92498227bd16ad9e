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

}  // namespace model_server::server
