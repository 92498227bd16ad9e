#include "server/evaluate_call.h"

#include <algorithm>
#include <string>

#include "protocol/seed_json.h"
#include "server/served_model.h"

namespace model_server::server {

void EvaluateCall::Listen(const CallContext& context, const Methods& methods,
                          grpc::ServerCompletionQueue* cq) {
  (new EvaluateCall(context, methods, cq))->Start();
}

EvaluateCall::EvaluateCall(const CallContext& context, const Methods& methods,
                           grpc::ServerCompletionQueue* cq)
    : BatchedCallOf(context, cq, metrics::Method::kEvaluateModel), methods_(methods) {}

void EvaluateCall::RequestCall() {
  methods_.service->RequestEvaluateModel(&server_context_, &request_, &responder_, cq_, cq_,
                                         static_cast<Tag*>(this));
}

void EvaluateCall::ListenAgain() { Listen(context_, methods_, cq_); }

absl::StatusOr<Routed> EvaluateCall::Decode() {
  absl::StatusOr<handlers::InferenceRequest> decoded = protocol::DecodeRequest(
      request_.inp_dict_bytes(), methods_.model->signature(), context_.max_rows_per_request);
  if (!decoded.ok()) return decoded.status();
  output_names_ = std::move(decoded->output_names);
  return Routed{*std::move(decoded), methods_.model};
}

void EvaluateCall::KeepOutputs(const float* outputs, int64_t rows, int64_t stride) {
  const size_t columns = output_names_.size();
  rows_ = rows;
  outputs_.resize(rows * columns);
  float* to = outputs_.data();
  if (static_cast<int64_t>(columns) == stride) {
    std::copy_n(outputs, rows * stride, to);
  } else {
    for (int64_t row = 0; row < rows; ++row, outputs += stride) {
      for (size_t column = 0; column < columns; ++column) *to++ = outputs[column];
    }
  }
}

void EvaluateCall::EncodeReply(int64_t /*model_version*/) {
  protocol::EncodeResponse(output_names_, outputs_.data(), rows_,
                           static_cast<int64_t>(output_names_.size()),
                           reply_.mutable_response_bytes());
}

}  // namespace model_server::server
