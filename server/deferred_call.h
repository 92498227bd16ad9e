#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>

#include "server/completion_queue.h"
#include "server/tsan_annotations.h"

namespace model_server::server {

// A unary call whose answer comes later, from any thread (RepositoryModelLoad and Unload, which
// wait for the model manager's thread), parameterised by how to request the method and how to
// start answering it. The completion-queue thread only starts the work.
template <typename Request, typename Response>
class DeferredCall final : public Tag {
 public:
  using Responder = grpc::ServerAsyncResponseWriter<Response>;
  using RequestMethod = std::function<void(grpc::ServerContext*, Request*, Responder*,
                                           grpc::ServerCompletionQueue*, void* tag)>;
  // Finishes the call with `status` (and the response when OK); called once, from any thread.
  using Finish = std::function<void(const grpc::Status& status)>;
  // Starts answering `request` into `response`, which stays valid until `finish` is called.
  using Start = std::function<void(const Request& request, Response* response, Finish finish)>;
  struct Methods {
    RequestMethod request;
    Start start;
  };

  // Arms one call waiting for the next request on `cq`; `methods` outlives every call.
  static void Listen(const Methods& methods, grpc::ServerCompletionQueue* cq) {
    auto* call = new DeferredCall(methods, cq);
    methods.request(&call->server_context_, &call->request_, &call->responder_, cq, call);
  }

  void Proceed(bool ok) override {
    if (finishing_ || !ok) {  // finished, or the server is shutting down
      delete this;
      return;
    }
    Listen(methods_, cq_);
    finishing_ = true;  // before the work starts: it may finish on another thread at once
    methods_.start(request_, &response_, [this](const grpc::Status& status) {
      TagHandedOff(this);
      responder_.Finish(response_, status, this);
    });
  }

 private:
  DeferredCall(const Methods& methods, grpc::ServerCompletionQueue* cq)
      : methods_(methods), cq_(cq), responder_(&server_context_) {}

  const Methods& methods_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext server_context_;
  Request request_;
  Response response_;
  Responder responder_;
  bool finishing_ = false;
};

}  // namespace model_server::server
