#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>

#include "server/completion_queue.h"

namespace model_server::server {

// A unary call answered at once on the completion-queue thread (health checks, the echo
// server), parameterised by how to request the method and how to answer it.
template <typename Request, typename Response>
class UnaryCall final : public Tag {
 public:
  using Responder = grpc::ServerAsyncResponseWriter<Response>;
  using RequestMethod = std::function<void(grpc::ServerContext*, Request*, Responder*,
                                           grpc::ServerCompletionQueue*, void* tag)>;
  using Answer = std::function<grpc::Status(const Request&, Response*)>;
  struct Methods {
    RequestMethod request;
    Answer answer;
  };

  // Arms one call waiting for the next request on `cq`; `methods` outlives every call.
  static void Listen(const Methods& methods, grpc::ServerCompletionQueue* cq) {
    auto* call = new UnaryCall(methods, cq);
    methods.request(&call->server_context_, &call->request_, &call->responder_, cq, call);
  }

  void Proceed(bool ok) override {
    if (state_ == State::kFinished || !ok) {  // finished, or the server is shutting down
      delete this;
      return;
    }
    Listen(methods_, cq_);
    const grpc::Status status = methods_.answer(request_, &response_);
    state_ = State::kFinished;
    responder_.Finish(response_, status, this);
  }

 private:
  enum class State { kWaitingForRequest, kFinished };

  UnaryCall(const Methods& methods, grpc::ServerCompletionQueue* cq)
      : methods_(methods), cq_(cq), responder_(&server_context_) {}

  const Methods& methods_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext server_context_;
  Request request_;
  Response response_;
  Responder responder_;
  State state_ = State::kWaitingForRequest;
};

}  // namespace model_server::server
