#include "server/completion_queue.h"

#include "server/tsan_annotations.h"

namespace model_server::server {

void PollCompletionQueue(grpc::CompletionQueue* cq) {
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
    TagReceived(tag);
    static_cast<Tag*>(tag)->Proceed(ok);
  }
}

}  // namespace model_server::server
