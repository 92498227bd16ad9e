#include "server/infer_call.h"

#include <algorithm>
#include <string>

#include "protocol/oip.h"
#include "server/served_model.h"

namespace model_server::server {

void InferCall::Listen(const CallContext& context, const Methods& methods,
                       grpc::ServerCompletionQueue* cq) {
  (new InferCall(context, methods, cq))->Start();
}

InferCall::InferCall(const CallContext& context, const Methods& methods,
                     grpc::ServerCompletionQueue* cq)
    : BatchedCallOf(context, cq, metrics::Method::kModelInfer), methods_(methods) {}

void InferCall::RequestCall() {
  methods_.service->RequestModelInfer(&server_context_, &request_, &responder_, cq_, cq_,
                                      static_cast<Tag*>(this));
}

void InferCall::ListenAgain() { Listen(context_, methods_, cq_); }

absl::StatusOr<Routed> InferCall::Decode() {
  absl::StatusOr<ServedModel*> model =
      FindModel(*methods_.models, request_.model_name(), request_.model_version());
  if (!model.ok()) return model.status();
  absl::StatusOr<protocol::oip::DecodedInfer> decoded = protocol::oip::DecodeInferRequest(
      request_, (*model)->signature(), context_.max_rows_per_request);
  if (!decoded.ok()) return decoded.status();
  model_ = *model;
  raw_output_ = decoded->raw_output;
  return Routed{std::move(decoded->request), *model};
}

void InferCall::KeepOutputs(const float* outputs, int64_t rows, int64_t stride) {
  // Every column: the stride is the model's num_outputs.
  rows_ = rows;
  outputs_.assign(outputs, outputs + rows * stride);
}

void InferCall::EncodeReply(int64_t model_version) {
  const std::string version = std::to_string(model_version);
  protocol::oip::EncodeInferResponse({model_->name(), version, request_.id()}, outputs_.data(),
                                     rows_, model_->signature().num_outputs, raw_output_, &reply_);
}

}  // namespace model_server::server
