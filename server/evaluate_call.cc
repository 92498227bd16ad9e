#include "server/evaluate_call.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
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

absl::StatusOr<std::shared_ptr<ServedModel>> EvaluateCall::Route() {
  absl::StatusOr<std::shared_ptr<ServedModel>> model = methods_.models->Find(methods_.model, "");
  if (!model.ok()) {
    // The seed's clients call one model: its absence is the server's state, not their mistake.
    return absl::UnavailableError(model.status().message());
  }
  if (!(*model)->signature().seed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", methods_.model,
        " cannot be called through ModelService: its tensors do not map onto the seed's columns "
        "(call it through the Open Inference Protocol)"));
  }
  return model;
}

absl::StatusOr<DecodedCall> EvaluateCall::Decode(const ServedModel& model) {
  const handlers::ModelSignature& signature = model.signature();
  absl::StatusOr<protocol::SeedRequest> decoded =
      protocol::DecodeRequest(request_.inp_dict_bytes(), signature, model.max_rows_per_request());
  if (!decoded.ok()) return decoded.status();
  output_names_ = std::move(decoded->output_names);
  seed_output_ = signature.seed->output;
  rows_ = decoded->request.rows;
  outputs_.resize(rows_ * output_names_.size());
  // The default priority level and no timeout of its own: the seed's calls say nothing of them.
  DecodedCall call;
  call.request = std::move(decoded->request);
  return call;
}

void EvaluateCall::KeepOutputs(const std::vector<handlers::OutputTensor>& outputs,
                               int64_t batch_row, int64_t task_row, int64_t rows) {
  const handlers::OutputTensor& output = outputs[seed_output_];
  const int64_t stride = output.shape[1];
  const size_t columns = output_names_.size();
  const float* from = reinterpret_cast<const float*>(output.data) + batch_row * stride;
  float* to = outputs_.data() + task_row * columns;
  if (static_cast<int64_t>(columns) == stride) {
    std::copy_n(from, rows * stride, to);
    return;
  }
  for (int64_t row = 0; row < rows; ++row, from += stride) {
    for (size_t column = 0; column < columns; ++column) *to++ = from[column];
  }
}

void EvaluateCall::EncodeReply(int64_t /*model_version*/) {
  protocol::EncodeResponse(output_names_, outputs_.data(), rows_,
                           static_cast<int64_t>(output_names_.size()),
                           reply_.mutable_response_bytes());
}

}  // namespace model_server::server
